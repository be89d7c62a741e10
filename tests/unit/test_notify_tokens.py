from datetime import datetime, timedelta, timezone

import pytest

from services.notify.tokens import TokenError, sign_ack, sign_webhook, verify_ack, verify_webhook

NOW = datetime(2026, 11, 23, 3, 0, tzinfo=timezone.utc)


def test_ack_token_round_trip_and_expiry():
    t = sign_ack("k", "F-1", "head@000.00.10.H56", NOW + timedelta(hours=1))
    c = verify_ack("k", t, NOW)
    assert (c.finding_id, c.recipient) == ("F-1", "head@000.00.10.H56")
    with pytest.raises(TokenError) as e:
        verify_ack("k", t, NOW + timedelta(hours=1))
    assert e.value.code == "expired"


@pytest.mark.parametrize("mutate, code", [
    (lambda t: t[:-2] + ("AA" if not t.endswith("AA") else "BB"), "bad_signature"),
    (lambda t: "x" + t, "bad_signature"),
    (lambda t: t.replace(".", ""), "malformed"),
    (lambda t: "a.b.c", "malformed"),
    (lambda t: t.split(".")[0] + ".đ", "bad_signature"),          # non-ASCII: a refusal, not a 500
    (lambda t: "Hồ sơ." + t.split(".")[1], "bad_signature"),
])
def test_tampered_tokens_are_refused(mutate, code):
    t = sign_ack("k", "F-1", "head@X", NOW + timedelta(hours=1))
    with pytest.raises(TokenError) as e:
        verify_ack("k", mutate(t), NOW)
    assert e.value.code == code


def test_other_secret_and_missing_secret():
    t = sign_ack("k", "F-1", "r", NOW + timedelta(hours=1))
    with pytest.raises(TokenError):
        verify_ack("other", t, NOW)
    with pytest.raises(TokenError) as e:
        verify_ack("", t, NOW)
    assert e.value.code == "not_configured"


def test_webhook_signature():
    body = '{"a":"Hồ sơ"}'.encode()
    sig = sign_webhook("s", body)
    assert sig.startswith("sha256=") and len(sig) == 7 + 64
    assert verify_webhook("s", body, sig) and not verify_webhook("s", body + b" ", sig)


def test_webhook_signature_with_non_ascii_header_is_refused_not_raised():
    assert verify_webhook("k", b"{}", "sha256=đ") is False
