"""Intake on the real Kafka broker and the real MongoDB-wire server (FerretDB or MongoDB).

Every status code of the API, idempotency on the real unique index, per-dossier order in a batch,
tenancy, the rate limit shared through MongoDB, and the fault cases with real clients pointed at
closed ports (a real refused connection; stopping the shared broker mid-run is not allowed).
"""
import json
import time
import uuid
from collections import defaultdict

import pytest

from services.intake.app import create_app
from services.intake.store import IntakeStore
from shared.platform.auth import KeyStore
from shared.domain.catalog import default_catalog
from shared.platform.clock import VirtualClock
from shared.domain.directory import directory_from_records

from helpers.intake import COMMUNE, DEPT, NOW, OTHER, PROVINCE, directory_records, ev  # noqa: F401
from helpers.intake_live import Live
from helpers.net import closed_port


@pytest.fixture
def live(kafka_bootstrap, mongo_uri, mongo_db, topics):
    t = topics("events", partitions=3)["events"]
    env = Live(kafka_bootstrap, mongo_uri, mongo_db, t)
    yield env
    env.close()


def test_202_after_ack_and_message_on_kafka(live):
    e = ev()
    r = live.post(e, live.key())
    assert r.status_code == 202, r.get_json()
    body = r.get_json()
    [rec] = live.consume(1)
    assert (rec.topic, rec.partition, rec.offset) == (body["topic"], body["partition"], body["offset"])
    assert rec.key == e["dossier_code"]
    value = json.loads(rec.value)
    assert value["event_id"] == e["event_id"] and value["recorded_at"] == NOW.isoformat()
    assert dict(rec.headers)["event_id"] == e["event_id"].encode()
    doc = IntakeStore(live.db).get(e["event_id"])
    assert doc["status"] == "published" and doc["offset"] == body["offset"]
    g = live.client.get(f"/v1/events/{e['event_id']}", headers=live.key(PROVINCE, "supervisor"))
    assert g.status_code == 200 and g.get_json()["offset"] == body["offset"]


def test_idempotency_on_real_unique_index(live):
    h = live.key()
    e = ev()
    first = live.post(e, h)
    assert first.status_code == 202
    again = live.post(e, h)
    assert again.status_code == 200 and again.get_json()["offset"] == first.get_json()["offset"]
    conflict = live.post(dict(e, dossier_code="HS-KHAC"), h)
    assert conflict.status_code == 409
    batch = live.post({"events": [e, dict(e, agency_code=COMMUNE)]}, h, "/v1/events:batch").get_json()
    assert [x["status"] for x in batch["results"]] == [200, 409]
    assert len(live.consume(1, timeout=8)) == 1 and len(live.consume(2, timeout=4)) == 1


@pytest.mark.parametrize("chunk", [100, 7])     # one chunk; 9 chunks stored/sent overlapped
def test_batch_keeps_per_dossier_order(live, chunk, monkeypatch):
    from services.intake import service
    monkeypatch.setattr(service, "CHUNK", chunk)
    h = live.key(PROVINCE, "admin")
    events = []
    for i in range(60):
        d = f"HS-{i % 7}"
        events.append(ev("dossier.resolved" if i % 2 else "dossier.assigned", dossier_code=d,
                         data={"outcome": "approved"} if i % 2 else {"officer": {"id": f"cc-{i}"}}))
    r = live.post({"events": events}, h, "/v1/events:batch")
    assert r.status_code == 200
    assert r.get_json()["accepted"] == 60
    got = defaultdict(list)
    for rec in live.consume(60):
        v = json.loads(rec.value)
        got[v["dossier_code"]].append(v["event_id"])
    want = defaultdict(list)
    for e in events:
        want[e["dossier_code"]].append(e["event_id"])
    assert got == want
    store = IntakeStore(live.db)
    assert all(store.get(e["event_id"])["status"] == "published" for e in events)


@pytest.mark.parametrize("key_agency,role,event_agency,status", [
    (DEPT, "counter", COMMUNE, 202), (DEPT, "counter", OTHER, 403), (COMMUNE, "agency", DEPT, 403),
    (PROVINCE, "admin", OTHER, 202), (PROVINCE, "supervisor", DEPT, 403),
])
def test_tenancy_matrix(live, key_agency, role, event_agency, status):
    r = live.post(ev(agency_code=event_agency), live.key(key_agency, role))
    assert r.status_code == status, r.get_json()


def test_client_errors(live):
    h = live.key()
    assert live.post(ev(), {}).status_code == 401
    r = live.client.post("/v1/events", data="{oops", headers={**h, "Content-Type": "application/json"})
    assert r.status_code == 400
    assert live.client.post("/v1/events", data="x", headers={**h, "Content-Type": "text/csv"}).status_code == 415
    bad = ev(occurred_at="2024-11-05T08:15:00")
    bad["data"]["procedure_code"] = "0.000000"
    r = live.post(bad, h)
    assert r.status_code == 422
    assert {(x["field"], x["code"]) for x in r.get_json()["errors"]} == {
        ("occurred_at", "naive_datetime"), ("data.procedure_code", "unknown_procedure")}
    big = ev()
    big["data"]["applicant"]["name"] = "x" * 5_000_000
    assert live.post(big, h).status_code == 413
    assert live.client.get(f"/v1/events/{uuid.uuid4()}", headers=h).status_code == 404
    assert live.consume(1, timeout=3) == []


def test_rate_limit_shared_through_mongo(kafka_bootstrap, mongo_uri, mongo_db, topics):
    t = topics("events", partitions=1)["events"]
    a = Live(kafka_bootstrap, mongo_uri, mongo_db, t, INTAKE_RATE_LIMIT="3")
    b = Live(kafka_bootstrap, mongo_uri, mongo_db, t, INTAKE_RATE_LIMIT="3")   # "another instance"
    try:
        h = a.key()
        codes = [a.post(ev(), h).status_code, b.post(ev(), h).status_code,
                 a.post(ev(), h).status_code, b.post(ev(), h).status_code]
        assert codes == [202, 202, 202, 429]
    finally:
        a.close()
        b.close()


def test_broker_unreachable_503_bounded_then_retry_publishes(kafka_bootstrap, mongo_uri, mongo_db, topics):
    t = topics("events", partitions=1)["events"]
    down = Live(f"127.0.0.1:{closed_port()}", mongo_uri, mongo_db, t, INTAKE_PUBLISH_TIMEOUT_S="2")
    e = ev()
    h = down.key()
    t0 = time.monotonic()
    r = down.post(e, h)
    elapsed = time.monotonic() - t0
    assert r.status_code == 503 and r.headers["Retry-After"]
    assert r.get_json()["errors"][0]["code"] == "broker_unavailable"
    assert elapsed < 8, elapsed
    assert IntakeStore(mongo_db).get(e["event_id"])["status"] == "pending"
    assert down.client.get("/readyz").status_code == 503
    down.close()
    up = Live(kafka_bootstrap, mongo_uri, mongo_db, t)
    try:
        r = up.post(e, h)
        assert r.status_code == 200 and r.get_json()["duplicate"] is True
        assert len(up.consume(1)) == 1
        assert IntakeStore(mongo_db).get(e["event_id"])["status"] == "published"
        assert up.client.get("/readyz").status_code == 200
    finally:
        up.close()


def test_mongo_down_503(kafka_bootstrap, topics):
    t = topics("events", partitions=1)["events"]
    app = create_app({"TESTING": True, "KAFKA_BOOTSTRAP_SERVERS": kafka_bootstrap,
                      "MONGO_URI": f"mongodb://127.0.0.1:{closed_port()}/", "MONGO_TIMEOUT_MS": "500",
                      "TOPIC_EVENTS": t, "CATALOG": default_catalog(),
                      "DIRECTORY": directory_from_records(directory_records())},
                     clock=VirtualClock(NOW))
    c = app.test_client()
    r = c.post("/v1/events", json=ev(), headers={"Authorization": "Bearer mck_whatever"})
    assert r.status_code == 503 and r.get_json()["errors"][0]["code"] == "store_unavailable"
    ready = c.get("/readyz")
    assert ready.status_code == 503 and ready.get_json()["checks"]["kafka"] == "ok"
    app.extensions["intake"]["resources"].close()


def test_keys_cli_on_real_mongo(mongo_uri, mongo_db, monkeypatch, capsys, tmp_path):
    import yaml
    from shared.cli import main
    f = tmp_path / "dir.yaml"
    f.write_text(yaml.safe_dump(directory_records(), allow_unicode=True), encoding="utf-8")
    monkeypatch.setenv("MONGO_URI", mongo_uri)
    monkeypatch.setenv("MONGO_DB", mongo_db.name)
    monkeypatch.setenv("DIRECTORY_FILE", str(f))
    assert main(["keys", "create", "--agency", DEPT, "--role", "agency"]) == 0
    secret = capsys.readouterr().out.splitlines()[-1]
    p = KeyStore(mongo_db).verify(secret)
    assert p.agency_code == DEPT and p.role == "agency"
    assert main(["keys", "revoke", p.key_id]) == 0
    assert KeyStore(mongo_db).verify(secret) is None
