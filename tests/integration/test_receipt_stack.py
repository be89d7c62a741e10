"""The receipt's due date through the real stack: intake (real Kafka, real MongoDB-wire store)
answers a dossier.received with its due date; the sla worker (real consumer, real engine) stores
the same due date in `dossiers`. Receipts on both sides of 1/7/2025 and of a weekend."""
from __future__ import annotations

import threading
import time
import uuid
from datetime import timezone

import pytest

from services.intake.openapi import example_event
from services.sla.repository import MongoRepository
from services.sla.worker import build_worker
from shared.domain.catalog import default_catalog
from shared.platform.config import Settings
from shared.domain.directory import directory_from_records
from shared.domain.engine import EngineContext, default_rulesets
from shared.domain.workcal import calendar_for

from helpers.intake import COMMUNE, DEPT, directory_records
from helpers.intake_live import Live

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
