"""Signed acknowledgement links: an HMAC-SHA256 token binding finding id, recipient and expiry."""
from __future__ import annotations

import base64
import hashlib
import hmac
import json
from dataclasses import dataclass
from datetime import datetime, timezone


class TokenError(ValueError):
    """A token that is malformed, forged or expired; `code` is machine-readable."""

    def __init__(self, code: str, message: str):
        self.code = code
        super().__init__(message)


@dataclass(frozen=True)
class AckClaim:
    finding_id: str
    recipient: str
    expires_at: datetime


def _b64(b: bytes) -> str:
    return base64.urlsafe_b64encode(b).rstrip(b"=").decode("ascii")


def _unb64(s: str) -> bytes:
    return base64.urlsafe_b64decode(s + "=" * (-len(s) % 4))


def _mac(secret: str, payload: str) -> str:
    return _b64(hmac.new(secret.encode("utf-8"), payload.encode("ascii"), hashlib.sha256).digest())


def sign_ack(secret: str, finding_id: str, recipient: str, expires_at: datetime) -> str:
    """A URL-safe token `<payload>.<mac>`."""
    if not secret:
        raise ValueError("NOTIFY_SECRET is empty: cannot sign acknowledgement links")
    payload = _b64(json.dumps({"f": finding_id, "r": recipient, "e": int(expires_at.timestamp())},
                              ensure_ascii=False, separators=(",", ":")).encode("utf-8"))
    return f"{payload}.{_mac(secret, payload)}"


def verify_ack(secret: str, token: str, now: datetime) -> AckClaim:
    """The claim of a valid, unexpired token; `TokenError` otherwise."""
    if not secret:
        raise TokenError("not_configured", "acknowledgement links are not configured (NOTIFY_SECRET)")
    if not isinstance(token, str) or len(token) > 2048 or token.count(".") != 1:
        raise TokenError("malformed", "malformed acknowledgement token")
    payload, mac = token.split(".")
    # a signed token is ASCII (base64url); a forged link may carry anything
    if not (payload.isascii() and mac.isascii()) or not hmac.compare_digest(mac, _mac(secret, payload)):
        raise TokenError("bad_signature", "acknowledgement token signature does not match")
    try:
        data = json.loads(_unb64(payload).decode("utf-8"))
        claim = AckClaim(str(data["f"]), str(data["r"]),
                         datetime.fromtimestamp(int(data["e"]), timezone.utc))
    except (ValueError, KeyError, TypeError):
        raise TokenError("malformed", "malformed acknowledgement token") from None
    if now >= claim.expires_at:
        raise TokenError("expired", "acknowledgement link has expired")
    return claim


def sign_webhook(secret: str, body: bytes) -> str:
    """Value of the X-Motcua-Signature header: `sha256=<hex HMAC-SHA256 of the raw body>`."""
    return "sha256=" + hmac.new(secret.encode("utf-8"), body, hashlib.sha256).hexdigest()


def verify_webhook(secret: str, body: bytes, header: str) -> bool:
    """For receivers (and tests): does the header match the body?"""
    header = header or ""
    return header.isascii() and hmac.compare_digest(sign_webhook(secret, body), header)
