"""The receipt's due date through the real stack: intake (real Kafka, real MongoDB-wire store)
answers a dossier.received with its due date; the sla worker (real consumer, real engine) stores
the same due date in `dossiers`. Receipts on both sides of 1/7/2025 and of a weekend. The slip
looked up by dossier code over real HTTP, with the key's tenancy."""
from __future__ import annotations

import threading
import time
import uuid
from datetime import datetime, timezone

import pytest
import requests

from services.intake.openapi import example_event
from services.intake.store import IntakeStore
from services.sla.repository import MongoRepository
from services.sla.worker import build_worker
from shared.domain.catalog import default_catalog
from shared.platform.config import Settings
from shared.domain.directory import directory_from_records
from shared.domain.engine import EngineContext, default_rulesets
from shared.domain.workcal import calendar_for

from helpers.intake import COMMUNE, DEPT, OTHER, PROVINCE, directory_records
from helpers.intake_live import Live
from helpers.net import WsgiServer

pytestmark = pytest.mark.integration
FAST = {"session_timeout_ms": 6000, "heartbeat_interval_ms": 1000, "max_poll_interval_ms": 30000}
RECEIPTS = ["2018-06-21T16:59:00+07:00", "2021-12-31T23:00:00+07:00", "2024-11-05T08:15:00+07:00",
            "2025-06-30T23:59:59+07:00", "2025-07-01T00:00:00+07:00", "2025-07-05T10:00:00+07:00",
            "2026-01-26T14:59:00+07:00", "2026-09-01T09:00:00+07:00"]


def test_202_due_date_is_what_the_sla_worker_stores(kafka_bootstrap, mongo_uri, mongo_db, topics):
    names = topics("events", "findings", partitions=3)
    live = Live(kafka_bootstrap, mongo_uri, mongo_db, names["events"])
    key = live.key(DEPT)
    answers = {}
    for i, at in enumerate(RECEIPTS):
        e = example_event("dossier.received")
        e.update(event_id=str(uuid.uuid4()), dossier_code=f"RCPT-{i}", occurred_at=at)
        e["data"]["procedure_code"] = ["1.001193", "1.004873", "2.000635"][i % 3]
        e["data"]["handling_agency_code"] = COMMUNE
        e["data"].pop("appointment_at")
        r = live.post(e, key)
        assert r.status_code == 202, r.get_json()
        answers[e["dossier_code"]] = r.get_json()["receipt"]
    live.close()

    settings = Settings.from_env(kafka_bootstrap_servers=kafka_bootstrap, mongo_uri=mongo_uri,
                                 topic_events=names["events"], topic_findings=names["findings"],
                                 mongo_db=mongo_db.name)
    ctx = EngineContext(catalog=default_catalog(), calendars=calendar_for, rulesets=default_rulesets(),
                        directory=directory_from_records(directory_records()))
    worker = build_worker(settings, ctx=ctx, group_id=f"rcpt-{uuid.uuid4().hex[:8]}",
                          consumer_config=FAST)
    thread = threading.Thread(target=worker.run, daemon=True)
    thread.start()
    try:
        repo = MongoRepository.live(mongo_db)
        deadline = time.monotonic() + 90
        stored = {}
        while len(stored) < len(RECEIPTS) and time.monotonic() < deadline:
            for code in answers:
                doc = repo.get_dossier(code)
                if doc is not None:
                    stored[code] = doc
            time.sleep(0.5)
        assert len(stored) == len(RECEIPTS), f"sla stored {sorted(stored)}"
    finally:
        worker.stop()
        thread.join(20)
    for code, rec in answers.items():
        doc = stored[code]
        due = doc.get("due_at")
        # the store keeps milliseconds; the engine's due instants are whole minutes here
        assert rec["due_at"] == (due.astimezone(timezone.utc).isoformat() if due else None), code
        assert rec["ruleset"] == doc["ruleset"] and rec["catalog_version"] == doc["catalog_version"], code
    assert {rec["ruleset"] for rec in answers.values()} == {"nd61-107", "nd118-2025"}
    assert answers["RCPT-3"]["ruleset"] == "nd61-107" and answers["RCPT-4"]["ruleset"] == "nd118-2025"


@pytest.fixture
def served(kafka_bootstrap, mongo_uri, mongo_db, topics):
    """Intake on the real broker and store, behind a real HTTP server on 127.0.0.1."""
    live = Live(kafka_bootstrap, mongo_uri, mongo_db, topics("events", partitions=3)["events"])
    server = WsgiServer(live.app)
    yield live, server.url
    server.close()
    live.close()


def test_receipt_by_dossier_code_over_http(served, mongo_db):
    live, url = served
    key = live.key(DEPT)
    code = f"000.00.17.H56-250708-{uuid.uuid4().hex[:4]}/1"      # '/' is allowed in a code
    first = example_event("dossier.received")
    first.update(event_id=str(uuid.uuid4()), dossier_code=code, occurred_at="2025-07-08T15:30:00+07:00")
    first["data"].pop("appointment_at")
    answer = live.post(first, key)
    assert answer.status_code == 202, answer.get_json()
    # a second receipt of the same dossier (the sla service ignores it): not the slip
    second = dict(first, event_id=str(uuid.uuid4()), occurred_at="2025-07-09T08:00:00+07:00")
    assert live.post(second, key).status_code == 202
    # a receipt stored but never published, recorded earlier: not the slip either
    store = IntakeStore(mongo_db)
    pending = dict(store.get(first["event_id"]), _id=str(uuid.uuid4()), status="pending",
                   recorded_at=datetime(2025, 7, 8, tzinfo=timezone.utc))
    for k in ("topic", "partition", "offset", "published_at"):
        pending.pop(k)
    mongo_db["intake_events"].insert_one(pending)

    s = requests.Session()
    r = s.get(f"{url}/v1/dossiers/{code}/receipt", headers=key, timeout=30)
    assert r.status_code == 200, r.text
    j = r.json()
    assert j["event_id"] == first["event_id"] and j["status"] == "published"
    assert j["dossier_code"] == code and j["due_at"] == answer.get_json()["receipt"]["due_at"]
    assert j["due_at_local"] == "17:00 ngày 09/07/2025" and j["ruleset"] == "nd118-2025"
    assert j == {**s.get(f"{url}/v1/receipts/{first['event_id']}", headers=key, timeout=30).json()}
    page = s.get(f"{url}/v1/dossiers/{code}/receipt/print", headers=key, timeout=30)
    assert page.status_code == 200 and page.headers["Content-Type"].startswith("text/html")
    assert f"Mã hồ sơ: {code}" in page.text and "17 giờ 00 phút, ngày 09 tháng 07 năm 2025" in page.text

    # tenancy: an ancestor's key sees it, a sibling's does not (404, as for an unknown dossier)
    assert s.get(f"{url}/v1/dossiers/{code}/receipt", headers=live.key(PROVINCE, "supervisor"),
                 timeout=30).status_code == 200
    for path in (f"/v1/dossiers/{code}/receipt", f"/v1/dossiers/{code}/receipt/print",
                 "/v1/dossiers/KHONG-CO-HO-SO/receipt"):
        r = s.get(url + path, headers=live.key(OTHER) if "KHONG" not in path else key, timeout=30)
        assert r.status_code == 404, (path, r.text)
        [err] = r.json()["errors"]
        assert err["code"] == "not_found" and err["field"] == "dossier_code"
        assert "Giấy tiếp nhận" in err["message"]
    # a dossier with events but no receipt; a malformed code; no key
    other = example_event("dossier.transferred")
    other.update(event_id=str(uuid.uuid4()), dossier_code=f"{code}-T")
    assert live.post(other, key).status_code == 202
    assert s.get(f"{url}/v1/dossiers/{code}-T/receipt", headers=key, timeout=30).status_code == 404
    r = s.get(f"{url}/v1/dossiers/ma%20sai/receipt", headers=key, timeout=30)
    assert r.status_code == 422 and r.json()["errors"][0]["field"] == "dossier_code"
    assert s.get(f"{url}/v1/dossiers/{code}/receipt", timeout=30).status_code == 401
    assert "dossier_type" in store.coll.index_information()
