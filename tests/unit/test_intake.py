"""Intake app on fakes: InMemoryBus (broker), mongomock (store), VirtualClock, a small directory."""
import json
import uuid
from datetime import datetime, timezone

import pytest

from services.intake.app import create_app
from services.intake.store import IntakeStore
from services.intake.openapi import EXAMPLES
from shared.domain.catalog import default_catalog
from shared.platform.clock import VirtualClock
from shared.platform.messaging import InMemoryBus

from helpers.intake import COMMUNE, DEPT, NOW, OTHER, PROVINCE, TOPIC, Env, directory, ev


@pytest.fixture
def env():
    return Env()


def test_publish_202_message_is_event_plus_recorded_at(env):
    e = ev()
    r = env.post(e, env.key())
    assert r.status_code == 202, r.get_json()
    body = r.get_json()
    assert body["event_id"] == e["event_id"] and body["topic"] == TOPIC
    assert (body["partition"], body["offset"]) == (0, 0)
    [msg] = env.published()
    assert msg.key == e["dossier_code"]
    assert msg.value["recorded_at"] == NOW.isoformat()
    assert msg.value["occurred_at"] == "2024-11-05T01:15:00+00:00"   # normalised to UTC
    assert msg.value["data"]["applicant"]["name"] == "Nguyễn Văn An"
    assert msg.headers["event_id"] == e["event_id"]
    doc = IntakeStore(env.db).get(e["event_id"])
    assert doc["status"] == "published" and doc["offset"] == 0


@pytest.mark.parametrize("etype", list(EXAMPLES))
def test_every_example_is_accepted(env, etype):
    r = env.post(ev(etype), env.key())
    assert r.status_code == 202, r.get_json()


def test_idempotent_replay_and_conflict(env):
    h = env.key()
    e = ev()
    first = env.post(e, h).get_json()
    env.clock.set(datetime(2024, 11, 6, tzinfo=timezone.utc))
    again = env.post(e, h)
    assert again.status_code == 200
    assert again.get_json() == dict(first, duplicate=True)
    # same instant written with another offset is the same body
    same = dict(e, occurred_at="2024-11-05T01:15:00Z")
    assert env.post(same, h).status_code == 200
    assert len(env.published()) == 1
    changed = dict(e, dossier_code="OTHER-1")
    r = env.post(changed, h)
    assert r.status_code == 409
    assert r.get_json()["errors"][0]["code"] == "event_id_conflict"
    assert len(env.published()) == 1


def test_broker_failure_503_then_retry_republishes(env):
    h = env.key()
    e = ev()
    env.bus.fail_with = TimeoutError("no ack")
    r = env.post(e, h)
    assert r.status_code == 503 and r.headers["Retry-After"]
    assert r.get_json()["errors"][0]["code"] == "broker_unavailable"
    assert env.published() == []
    assert IntakeStore(env.db).get(e["event_id"])["status"] == "pending"
    env.bus.fail_with = None
    r = env.post(e, h)
    assert r.status_code == 200 and r.get_json()["duplicate"] is True
    assert len(env.published()) == 1
    assert IntakeStore(env.db).get(e["event_id"])["status"] == "published"


def test_validation_reports_every_field(env):
    e = ev(occurred_at="2024-11-05T08:15:00", agency_code="999.99.99.H99", extra=1)
    e["data"]["procedure_code"] = "9.999999"
    e["data"]["channel"] = "fax"
    r = env.post(e, env.key())
    assert r.status_code == 422
    errs = {(x["field"], x["code"]) for x in r.get_json()["errors"]}
    assert {("occurred_at", "naive_datetime"), ("extra", "unknown_field"),
            ("data.channel", "not_allowed"), ("agency_code", "unknown_agency"),
            ("data.procedure_code", "unknown_procedure")} <= errs
    assert env.published() == []


def test_a_type_that_is_not_a_string_is_422_not_500(env):
    for bad in ([], {"a": 1}):
        r = env.post(ev(type=bad), env.key())
        assert r.status_code == 422, r.get_json()
        assert [x["field"] for x in r.get_json()["errors"]] == ["type"]
    assert env.published() == []


def test_an_instant_with_no_utc_form_is_422_not_500(env):
    e = ev(occurred_at="0001-01-01T00:00:00+07:00")
    r = env.post(e, env.key())
    assert r.status_code == 422, r.get_json()
    assert [(x["field"], x["code"]) for x in r.get_json()["errors"]] == [("occurred_at", "out_of_range")]
    e = ev()
    e["data"]["appointment_at"] = "0001-01-01T03:00:00+05:00"
    r = env.post({"events": [e, ev()]}, env.key(), "/v1/events:batch").get_json()
    assert [x["status"] for x in r["results"]] == [422, 202]
    assert r["results"][0]["errors"][0]["field"] == "data.appointment_at"


def test_unknown_references_alone(env):
    e = ev()
    e["data"]["procedure_code"] = "9.999999"
    e["data"]["handling_agency_code"] = "000.99.99.H56"
    e["data"]["components"] = ["khong-co-trong-danh-muc"]   # NOT rejected: sla flags it
    r = env.post(e, env.key())
    assert r.status_code == 422
    assert {(x["field"], x["code"]) for x in r.get_json()["errors"]} == {
        ("data.procedure_code", "unknown_procedure"), ("data.handling_agency_code", "unknown_agency")}
    t = ev("dossier.transferred", data={"to_agency_code": "000.99.99.H56"})
    assert env.post(t, env.key()).get_json()["errors"][0]["field"] == "data.to_agency_code"


def test_components_outside_procedure_are_accepted(env):
    e = ev()
    e["data"]["components"] = ["giay-to-la"]
    assert env.post(e, env.key()).status_code == 202


@pytest.mark.parametrize("key_agency,role,event_agency,status", [
    (DEPT, "counter", DEPT, 202), (DEPT, "counter", COMMUNE, 202), (DEPT, "counter", OTHER, 403),
    (DEPT, "counter", PROVINCE, 403), (COMMUNE, "agency", DEPT, 403), (PROVINCE, "admin", COMMUNE, 202),
    (PROVINCE, "supervisor", COMMUNE, 403), (DEPT, "agency", COMMUNE, 202),
])
def test_tenancy_matrix(env, key_agency, role, event_agency, status):
    r = env.post(ev(agency_code=event_agency), env.key(key_agency, role))
    assert r.status_code == status, r.get_json()
    assert len(env.published()) == (1 if status == 202 else 0)


def test_auth_errors(env):
    e = ev()
    assert env.post(e, {}).status_code == 401
    r = env.post(e, {"Authorization": "Bearer mck_nope"})
    assert r.status_code == 401 and r.get_json()["errors"][0]["code"] == "invalid_key"
    key_id, secret = env.keys.create(DEPT, "counter")
    env.keys.revoke(key_id)
    assert env.post(e, {"Authorization": f"Bearer {secret}"}).status_code == 401
    assert env.published() == []


def test_rate_limit_429():
    env = Env(INTAKE_RATE_LIMIT="2")
    h = env.key()
    assert env.post(ev(), h).status_code == 202
    assert env.post(ev(), h).status_code == 202
    r = env.post(ev(), h)
    assert r.status_code == 429 and int(r.headers["Retry-After"]) > 0
    assert len(env.published()) == 2


def test_transport_errors(env):
    h = env.key()
    r = env.client.post("/v1/events", data="{", headers={**h, "Content-Type": "application/json"})
    assert r.status_code == 400 and r.get_json()["errors"][0]["code"] == "malformed_json"
    r = env.client.post("/v1/events", data="{}", headers={**h, "Content-Type": "text/plain"})
    assert r.status_code == 415
    r = env.client.post("/v1/events", data='{"a": NaN}', headers={**h, "Content-Type": "application/json"})
    assert r.status_code == 400
    r = env.client.post("/v1/events", data=b'"\xff"', headers={**h, "Content-Type": "application/json"})
    assert r.status_code == 400
    r = env.post([1, 2], h)
    assert r.status_code == 422 and r.get_json()["errors"][0]["code"] == "invalid_type"
    assert env.published() == []


def test_body_too_large_413():
    env = Env(INTAKE_MAX_BODY_BYTES="2000")
    e = ev()
    e["data"]["applicant"]["name"] = "Nguyễn " * 400
    r = env.post(e, env.key())
    assert r.status_code == 413 and r.get_json()["errors"][0]["code"] == "payload_too_large"


def test_batch_results_in_order_and_per_dossier_order(env):
    h = env.key()
    good1 = ev("dossier.received", dossier_code="HS-1")
    bad = ev("dossier.assigned", data={})
    good2 = ev("dossier.assigned", dossier_code="HS-1", data={"officer": {"id": "cc-1"}})
    other = ev("dossier.received", dossier_code="HS-2", agency_code=OTHER)
    dup = dict(good1)
    r = env.post({"events": [good1, bad, good2, other, dup]}, h, "/v1/events:batch")
    assert r.status_code == 200
    body = r.get_json()
    assert [x["status"] for x in body["results"]] == [202, 422, 202, 403, 200]
    assert body["accepted"] == 3 and body["rejected"] == 2
    assert body["results"][1]["errors"][0]["field"] == "data.officer"
    msgs = env.published()
    assert [m.value["event_id"] for m in msgs] == [good1["event_id"], good2["event_id"]]


def test_batch_limits(env):
    h = env.key()
    small = Env(INTAKE_MAX_BATCH="2")
    r = small.post({"events": [ev(), ev(), ev()]}, small.key(), "/v1/events:batch")
    assert r.status_code == 413 and small.published() == []
    assert env.post({"events": []}, h, "/v1/events:batch").status_code == 422
    assert env.post({"evts": [ev()]}, h, "/v1/events:batch").status_code == 422


def test_batch_failure_sends_nothing_after_a_failed_send(env):
    h = env.key()
    calls = []
    real = env.bus.send

    def flaky(topic, key, value, headers=None):
        calls.append(headers["event_id"])
        if len(calls) == 2:
            raise TimeoutError("buffer full")
        return real(topic, key, value, headers)
    env.bus.send = flaky
    a = ev(dossier_code="HS-1")
    b = ev("dossier.returned", dossier_code="HS-1")
    c = ev(dossier_code="HS-2")
    res = env.post({"events": [a, b, c]}, h, "/v1/events:batch").get_json()["results"]
    assert [x["status"] for x in res] == [202, 503, 503]
    assert calls == [a["event_id"], b["event_id"]]                  # c not attempted
    assert [m.value["event_id"] for m in env.published()] == [a["event_id"]]


def test_get_event_status_and_tenancy(env):
    e = ev(agency_code=COMMUNE)
    env.post(e, env.key(COMMUNE))
    r = env.client.get(f"/v1/events/{e['event_id']}", headers=env.key(DEPT, "supervisor"))
    assert r.status_code == 200
    assert r.get_json()["status"] == "published" and r.get_json()["offset"] == 0
    assert env.client.get(f"/v1/events/{e['event_id']}", headers=env.key(OTHER)).status_code == 404
    assert env.client.get(f"/v1/events/{uuid.uuid4()}", headers=env.key()).status_code == 404
    assert env.client.get("/v1/events/not-a-uuid", headers=env.key()).status_code == 422
    assert env.client.get(f"/v1/events/{e['event_id']}").status_code == 401


def test_errors_are_json_and_request_id_echoed(env):
    r = env.client.get("/nope", headers={"X-Request-Id": "abc-123"})
    assert r.status_code == 404 and r.get_json()["errors"][0]["code"] == "not_found"
    assert r.headers["X-Request-Id"] == "abc-123"
    r = env.client.get("/healthz", headers={"X-Request-Id": "bad id with spaces"})
    assert r.headers["X-Request-Id"] != "bad id with spaces"
    assert env.client.put("/v1/events").status_code == 405


def test_pii_never_logged(env, caplog):
    caplog.set_level("DEBUG")
    e = ev()
    e["data"]["applicant"].update(id_number="079123456789", phone="0909123456", email="an@example.vn")
    assert env.post(e, env.key()).status_code == 202
    bad = dict(e, event_id=str(uuid.uuid4()), extra="x")
    env.post(bad, env.key())
    text = caplog.text + json.dumps([getattr(r, "fields", None) for r in caplog.records], default=str)
    for secret in ("079123456789", "0909123456", "an@example.vn"):
        assert secret not in text


def test_metrics_and_openapi(env):
    env.post(ev(), env.key())
    env.post(ev(extra=1), env.key())
    m = env.client.get("/metrics").get_data(as_text=True)
    assert 'intake_events_rejected_total{reason="unknown_field"} 1.0' in m
    assert 'http_requests_total{method="POST",route="/v1/events",service="intake",status="202"} 1.0' in m
    assert "intake_publish_seconds_count" in m
    spec = env.client.get("/openapi.json").get_json()
    assert spec["openapi"].startswith("3.")
    assert len(spec["paths"]["/v1/events"]["post"]["requestBody"]["content"]["application/json"]["examples"]) == 16
    received = spec["components"]["schemas"]["ReceivedEvent"]
    assert received["additionalProperties"] is False
    docs = env.client.get("/docs").get_data(as_text=True)
    assert "Tiếp nhận hồ sơ" in docs and "<script" not in docs


def test_store_down_503():
    from pymongo import MongoClient
    bus = InMemoryBus()
    db = MongoClient("mongodb://127.0.0.1:1/", serverSelectionTimeoutMS=50)["x"]
    app = create_app({"TESTING": True, "CATALOG": default_catalog(), "DIRECTORY": directory()},
                     publisher=bus, clock=VirtualClock(NOW), db=db)
    r = app.test_client().post("/v1/events", json=ev(), headers={"Authorization": "Bearer mck_x"})
    assert r.status_code == 503 and r.headers["Retry-After"]
    assert r.get_json()["errors"][0]["code"] == "store_unavailable"
    r = app.test_client().get("/readyz")
    assert r.status_code == 503 and r.get_json()["checks"]["mongodb"].startswith("unreachable")


def test_no_connection_at_import_or_creation():
    app = create_app({"TESTING": True, "MONGO_URI": "mongodb://127.0.0.1:1/",
                      "KAFKA_BOOTSTRAP_SERVERS": "127.0.0.1:1"})
    res = app.extensions["intake"]["resources"]
    assert res._client is None and res._publisher is None
    assert app.test_client().get("/healthz").status_code == 200


def test_failed_producer_is_discarded_and_rebuilt():
    """A producer that failed is not reused (kafka-python can stay stuck after a broker restart):
    the Intake reports it, Resources drops and closes it, the next request builds a new one."""
    import time as _time

    from services.intake.bootstrap import Resources
    from shared.platform.config import Settings
    from services.intake.service import Intake

    class FakeProducer(InMemoryBus):
        built = []

        def __init__(self):
            super().__init__()
            self.closed = False
            FakeProducer.built.append(self)

        def close(self, timeout=10.0):
            self.closed = True

    res = Resources(Settings.from_env())
    res._publisher = first = FakeProducer()          # as if built lazily by the app
    reported = []
    env = Env()
    intake = Intake(store=lambda: IntakeStore(env.db), publisher=lambda: res._publisher or FakeProducer(),
                    clock=env.clock, topic=TOPIC, catalog=default_catalog, directory=directory,
                    on_publish_failure=lambda p: (reported.append(p), res.discard_publisher(p)))
    principal = env.keys.verify(env.key()["Authorization"].split()[1])
    assert intake.submit(principal, [ev()])[0].status == 202
    assert reported == [] and res._publisher is first
    first.fail_with = TimeoutError("no ack")
    assert intake.submit(principal, [ev()])[0].status == 503
    assert reported == [first] and res._publisher is None
    deadline = _time.monotonic() + 5
    while not first.closed and _time.monotonic() < deadline:
        _time.sleep(0.01)
    assert first.closed
    res.discard_publisher(first)                      # a second report of the same one: no-op
    assert intake.submit(principal, [ev()])[0].status == 202
    assert len(FakeProducer.built) == 2


def test_injected_publisher_is_never_discarded(env):
    h = env.key()
    env.bus.fail_with = TimeoutError("no ack")
    assert env.post(ev(), h).status_code == 503
    env.bus.fail_with = None
    assert env.post(ev(), h).status_code == 202
    assert env.app.extensions["intake"]["resources"]._publisher is env.bus
