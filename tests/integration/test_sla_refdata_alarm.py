"""The reference-data alarm on the real sla worker (Kafka + FerretDB, real engine): a directory
version imported while the offices file still had its office; the office is gone since. Every
event of that agency is dead-lettered AND raises the alarm: metric, ERROR log, `ops_alerts`."""
from __future__ import annotations

import logging
import threading
import uuid
from datetime import datetime, timezone

import pytest

from helpers.sla_stack import FAST, consume, wait_for

from shared.platform.clock import VirtualClock
from shared.platform.refdata import DirectoryStore
from shared.domain.directory import directory_from_records
from shared.platform.messaging import KafkaPublisher
from services.sla.alarms import COLLECTION, OpsAlerts
from services.sla.worker import build_worker

pytestmark = pytest.mark.integration
T0 = datetime(2024, 11, 5, 1, 0, tzinfo=timezone.utc)
GOOD, BAD = "000.00.17.H56", "000.00.18.H56"


def received(agency, code):
    return {"event_id": str(uuid.uuid4()), "type": "dossier.received", "dossier_code": code,
            "occurred_at": T0.isoformat(), "recorded_at": T0.isoformat(), "agency_code": agency,
            "data": {"procedure_code": "1.001193", "channel": "direct",
                     "components": ["to-khai-khai-sinh", "giay-chung-sinh"],
                     "applicant": {"kind": "citizen", "name": "Nguyễn Văn A", "phone": "0901234567",
                                   "id_number": "079123456789"}}}


def test_events_stopped_by_the_reference_data_raise_the_ops_alarm(settings, db, tmp_path, caplog):
    offices = tmp_path / "offices-then.yaml"     # the offices file when the directory was imported
    offices.write_text("offices:\n  default: {name: Mặc định}\n  defualt: {name: Gõ nhầm}\n",
                       encoding="utf-8")
    directory = directory_from_records([
        {"code": GOOD, "name": "UBND phường 1", "office": "default"},
        {"code": BAD, "name": "UBND phường 2", "office": "defualt"},
    ], "then.yaml", offices_file=offices)
    DirectoryStore(db).import_directory(directory, T0, source="then.yaml")

    clock = VirtualClock(T0)
    with caplog.at_level(logging.INFO, logger="motcua.sla"):
        worker = build_worker(settings, clock, group_id="g-" + uuid.uuid4().hex[:6],
                              consumer_config=FAST, db=db)
        assert worker.handler.ctx.directory.version == directory.version    # the stored version loads
        thread = threading.Thread(target=worker.run, daemon=True)
        thread.start()
        pub = KafkaPublisher(settings.kafka_bootstrap_servers)
        try:
            codes = [f"{BAD}-241105-000{i}" for i in (1, 2)]
            for code in codes:
                pub.publish(settings.topic_events, code, received(BAD, code))
            pub.publish(settings.topic_events, f"{GOOD}-241105-0001", received(GOOD, f"{GOOD}-241105-0001"))
            dlq = consume(settings, settings.topic_events_dlq, lambda rs: len(rs) >= 2)
            assert sorted((r.key.decode(), v["reason"]) for r, v in dlq) == [
                (c, "not_applicable") for c in codes]
            assert all("unknown office 'defualt'" in v["error"] for _, v in dlq)
            wait_for(lambda: db[COLLECTION].count_documents({}) == 1
                     and db[COLLECTION].find_one()["events"] == 2, what="the ops alert")
            wait_for(lambda: db["dossiers"].count_documents({}) == 1, what="the good dossier")
        finally:
            worker.stop()
            thread.join(20)
            pub.close()

    [alert] = OpsAlerts(db).open()
    assert alert["_id"] == "sla.reference_data:unknown_office:defualt"
    assert (alert["reason"], alert["subject"], alert["events"]) == ("unknown_office", "defualt", 2)
    assert alert["agency_codes"] == [BAD]
    assert alert["first_seen_at"] == T0 and alert["last_seen_at"] == T0
    assert alert["last_dossier_code"] in codes and "unknown office 'defualt'" in alert["error"]
    assert worker.metrics.registry.get_sample_value(
        "sla_reference_data_errors_total", {"reason": "unknown_office"}) == 2.0
    errors = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert errors and all(r.getMessage() == "reference data error: events dead-lettered" for r in errors)
    assert sum(r.fields["events"] for r in errors) == 2
    text = caplog.text + repr([r.fields for r in errors]) + repr(alert)
    for personal in ("0901234567", "079123456789", "Nguyễn Văn A"):
        assert personal not in text
