"""Notify API on mongomock: acknowledgement by link and by API key, tenancy, errors, metrics."""
from __future__ import annotations

from datetime import timedelta

import pytest

from shared.platform.auth import KeyStore
from services.notify.api import create_app
from services.notify.policy import parse_policy
from services.notify.tokens import sign_ack

from helpers.notify import MON_10H, Env, finding

POLICY = parse_policy({"defaults": {"critical": {"roles": ["head"], "channels": ["email"],
                                                 "escalate_after": "2wd", "repeat_every": "4wh"}}})


@pytest.fixture
def env():
    e = Env(policy=POLICY)
    e.svc.handle(finding())
    e.svc.dispatch_due()
    keys = KeyStore(e.db, e.clock)
    e.keys = {name: keys.create(code, role)[1] for name, code, role in (
        ("province", "000.00.00.H56", "supervisor"), ("stp", "000.00.10.H56", "agency"),
        ("sxd", "000.00.11.H56", "agency"), ("counter", "000.00.10.H56", "counter"))}
    e.app = create_app({"DIRECTORY": e.directory, "POLICY": POLICY, "KEY_STORE": keys,
                        "ENV": {"NOTIFY_SECRET": "s3cret"}}, db=e.db, clock=e.clock)
    e.client = e.app.test_client()
    return e


def auth(env, name):
    return {"Authorization": f"Bearer {env.keys[name]}"}


def test_ack_link_get_shows_form_post_acknowledges_and_stops_escalation(env):
    token = sign_ack("s3cret", "F-1", "head@000.00.10.H56", MON_10H + timedelta(days=7))
    page = env.client.get(f"/v1/ack/{token}")
    assert page.status_code == 200 and 'method="post"' in page.get_data(as_text=True)
    assert env.db.notify_findings.find_one({"_id": "F-1"})["acked_at"] is None
    r = env.client.post(f"/v1/ack/{token}")
    assert r.status_code == 200 and "Đã ghi nhận xác nhận" in r.get_data(as_text=True)
    f = env.db.notify_findings.find_one({"_id": "F-1"})
    assert f["acked_by"] == "head@000.00.10.H56" and f["next_escalation_at"] is None
    assert env.db.acks.find_one({"finding_id": "F-1"})["via"] == "link"
    j = env.client.get(f"/v1/ack/{token}", headers={"Accept": "application/json"}).get_json()
    assert j["acknowledged_by"] == "head@000.00.10.H56"
    env.clock.advance(timedelta(days=10))
    assert env.svc.run_scheduled() == {"escalated": 0, "repeated": 0, "digests": 0}
    assert env.client.get(f"/v1/ack/{token}").status_code == 410       # the link expired


def test_without_ack_the_escalation_happens(env):
    env.clock.advance(timedelta(days=10))
    assert env.svc.run_scheduled()["escalated"] == 1


@pytest.mark.parametrize("make, status, code", [
    (lambda: "garbage", 400, "malformed"),
    (lambda: sign_ack("other", "F-1", "head@X", MON_10H + timedelta(days=1)), 400, "bad_signature"),
    (lambda: sign_ack("s3cret", "F-1", "head@X", MON_10H - timedelta(seconds=1)), 410, "expired"),
    (lambda: sign_ack("s3cret", "NOPE", "head@X", MON_10H + timedelta(days=1)), 404, "not_found"),
])
def test_bad_ack_links(env, make, status, code):
    r = env.client.post(f"/v1/ack/{make()}")
    assert r.status_code == status
    assert r.get_json()["errors"][0]["code"] == code
    assert env.db.acks.count_documents({}) == 0


def test_ack_with_api_key_and_tenancy(env):
    assert env.client.post("/v1/findings/F-1/ack").status_code == 401
    assert env.client.post("/v1/findings/F-1/ack", headers=auth(env, "counter")).status_code == 403
    assert env.client.post("/v1/findings/F-1/ack", headers=auth(env, "sxd")).status_code == 404
    r = env.client.post("/v1/findings/F-1/ack", json={"nope": 1}, headers=auth(env, "province"))
    assert r.status_code == 400 and env.db.acks.count_documents({}) == 0
    r = env.client.post("/v1/findings/F-1/ack", json={"note": "Đã chỉ đạo xử lý"}, headers=auth(env, "province"))
    assert r.status_code == 200 and r.get_json()["first"] is True
    ack = env.db.acks.find_one({})
    assert ack["via"] == "api" and ack["note"] == "Đã chỉ đạo xử lý" and ack["by"].endswith("@000.00.00.H56")


def test_delivery_log_tenancy_and_filters(env):
    r = env.client.get("/v1/deliveries", headers=auth(env, "stp"))
    items = r.get_json()["items"]
    assert r.status_code == 200 and len(items) == 1 and items[0]["outcome"] == "sent"
    assert items[0]["recipient"] == "email:head@000.00.10.H56" and items[0]["at"].endswith("+00:00")
    assert env.client.get("/v1/deliveries", headers=auth(env, "sxd")).get_json()["items"] == []
    assert env.client.get("/v1/deliveries?outcome=maybe", headers=auth(env, "stp")).status_code == 400
    assert env.client.get("/v1/deliveries?colour=red", headers=auth(env, "stp")).status_code == 400
    assert env.client.get("/v1/deliveries?limit=0", headers=auth(env, "stp")).status_code == 400
    r = env.client.get("/v1/notifications?status=sent", headers=auth(env, "province"))
    assert [n["status"] for n in r.get_json()["items"]] == ["sent"]


def test_health_and_metrics(env):
    assert env.client.get("/healthz").status_code == 200
    m = env.client.get("/metrics").get_data(as_text=True)
    assert 'notify_store_sent_total{channel="email"} 1.0' in m
    assert 'notify_pending{kind="deferred"} 0.0' in m
    assert "notify_store_delivery_latency_seconds_bucket" in m


# --- issue 12 ---------------------------------------------------------------------------------
def test_an_old_link_to_a_resolved_finding_says_it_was_resolved(env):
    env.svc.handle(finding(state="resolved", revision=2, change="resolved"))
    token = sign_ack("s3cret", "F-1", "head@000.00.10.H56", MON_10H + timedelta(days=7))
    form = env.client.get(f"/v1/ack/{token}").get_data(as_text=True)
    assert "đã được khắc phục" in form and 'method="post"' not in form
    r = env.client.post(f"/v1/ack/{token}")
    page = r.get_data(as_text=True)
    assert r.status_code == 200 and "đã được khắc phục" in page
    assert "đã dừng" not in page and "Đã ghi nhận xác nhận" not in page
    j = env.client.post(f"/v1/ack/{token}", headers={"Accept": "application/json"}).get_json()
    assert j["already_resolved"] is True and j["state"] == "resolved"
    assert env.db.acks.count_documents({}) == 0


def test_a_second_ack_by_link_says_when_the_first_was(env):
    token = sign_ack("s3cret", "F-1", "head@000.00.10.H56", MON_10H + timedelta(days=7))
    env.client.post(f"/v1/ack/{token}")
    page = env.client.post(f"/v1/ack/{token}").get_data(as_text=True)
    assert "đã được xác nhận lúc 23/11/2026 10:00" in page


def test_finding_view_shows_the_acknowledgement_within_the_subtree(env):
    assert env.client.get("/v1/findings/F-1", headers=auth(env, "sxd")).status_code == 404
    r = env.client.get("/v1/findings/F-1", headers=auth(env, "stp"))
    assert r.status_code == 200 and r.get_json()["alerting"]["acknowledged"] is False
    env.client.post("/v1/findings/F-1/ack", headers=auth(env, "province"))
    a = env.client.get("/v1/findings/F-1", headers=auth(env, "stp")).get_json()["alerting"]
    assert a["acknowledged"] and a["acknowledged_by"].endswith("@000.00.00.H56")
    assert a["next_escalation_at"] is None and a["escalation_level"] == 0


@pytest.mark.parametrize("path", ["/v1/deliveries?agency_code=ZZZ", "/v1/notifications?agency_code=ZZZ"])
def test_unknown_agency_code_is_a_422_even_for_the_root_key(env, path):
    for who in ("province", "stp"):
        r = env.client.get(path, headers=auth(env, who))
        assert r.status_code == 422, (who, r.status_code)
        e = r.get_json()["errors"][0]
        assert (e["code"], e["field"]) == ("unknown_agency", "agency_code") and "'ZZZ'" in e["message"]
