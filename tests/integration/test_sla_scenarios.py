"""Scenario streams through the sla worker with the real legal engine, on real Kafka + FerretDB,
then the read API on the same database (tenancy, findings, deadline explanation)."""
from __future__ import annotations

import json
import threading
import time
import uuid
from datetime import datetime, timezone

import pytest

from shared.platform.auth import KeyStore
from shared.platform.clock import VirtualClock
from shared.domain.directory import directory_from_records
from shared.platform.messaging import KafkaPublisher
from services.sla.api import create_app
from services.sla.worker import build_worker

from helpers.sla_stack import FAST, consume

pytestmark = pytest.mark.integration
AGENCY, PARENT, OTHER = "000.00.17.H56", "000.00.00.H56", "000.00.99.H99"
A, B = "000.00.17.H56-241105-0001", "000.00.17.H56-241105-0002"
WATCHED = {"DUE_SOON", "OVERDUE", "RECEIVED_INCOMPLETE"}


def vn(text: str) -> datetime:
    return datetime.fromisoformat(text).astimezone(timezone.utc)


def ev(code, etype, when, **data):
    return {"event_id": str(uuid.uuid4()), "type": etype, "dossier_code": code, "occurred_at": when,
            "recorded_at": when, "agency_code": AGENCY, "data": data}


def received(code, when, components, channel="direct"):
    return ev(code, "dossier.received", when, procedure_code="1.001193", channel=channel,
              components=components, digitized=components[:1],
              applicant={"kind": "citizen", "name": "Nguyễn Văn A", "phone": "0901234567",
                         "id_number": "079123456789"})


def test_scenarios_open_update_resolve_and_read_api(settings, db):
    clock = VirtualClock(vn("2024-11-05T08:16:00+07:00"))
    worker = build_worker(settings, clock, group_id="g-" + uuid.uuid4().hex[:6], consumer_config=FAST)
    thread = threading.Thread(target=worker.run, daemon=True)
    thread.start()
    pub = KafkaPublisher(settings.kafka_bootstrap_servers)

    def has(expected, timeout=15):
        recs = consume(settings, settings.topic_findings,
                       lambda rs: expected <= {(v["dossier_code"], v["rule"], v["state"], v["revision"])
                                               for _, v in rs}, timeout)
        return {(v["dossier_code"], v["rule"], v["state"], v["revision"]) for _, v in recs
                if v["rule"] in WATCHED}, recs
    try:
        pub.publish(settings.topic_events, A, received(A, "2024-11-05T08:15:00+07:00",
                                                       ["to-khai-khai-sinh", "giay-chung-sinh"]))
        pub.publish(settings.topic_events, B, received(B, "2024-11-05T08:15:00+07:00",
                                                       ["to-khai-khai-sinh"], channel="online"))
        got, _ = has({(B, "RECEIVED_INCOMPLETE", "open", 1)}, timeout=30)
        assert got == {(B, "RECEIVED_INCOMPLETE", "open", 1)}       # nothing for A yet
        clock.set(vn("2024-11-05T15:30:00+07:00"))           # inside the 2-working-hour window
        has({(A, "DUE_SOON", "open", 1)}, timeout=5)
        clock.set(vn("2024-11-06T10:00:00+07:00"))           # past 17:00 of the receipt day
        has({(A, "DUE_SOON", "resolved", 2), (A, "OVERDUE", "open", 1)}, timeout=5)
        pub.publish(settings.topic_events, A, ev(A, "dossier.resolved", "2024-11-06T10:05:00+07:00",
                                                 outcome="approved"))
        got, recs = has({(A, "OVERDUE", "resolved", 2)})
        assert {g for g in got if g[0] == A} == {
            (A, "DUE_SOON", "open", 1), (A, "DUE_SOON", "resolved", 2),
            (A, "OVERDUE", "open", 1), (A, "OVERDUE", "resolved", 2)}
        last = [v for _, v in recs if v["rule"] == "OVERDUE" and v["state"] == "resolved"][0]
        assert last["overdue_working_hours"] and last["overdue_working_hours"] > 0
        assert last["legal_basis"] and last["severity"] == "critical"
        text = json.dumps([v for _, v in recs], ensure_ascii=False)
        assert "0901234567" not in text and "079123456789" not in text
    finally:
        worker.stop()
        thread.join(20)
        pub.close()

    # the read API on the same store
    directory = directory_from_records([
        {"code": PARENT, "name": "UBND tỉnh Long An", "parent": None},
        {"code": AGENCY, "name": "UBND xã Mỹ Yên", "parent": PARENT},
        {"code": OTHER, "name": "Tỉnh khác", "parent": None}])
    store = KeyStore(db, clock)
    keys = {who: store.create(code, "supervisor")[1] for who, code in
            [("parent", PARENT), ("agency", AGENCY), ("other", OTHER)]}
    app = create_app({"DIRECTORY": directory, "KEY_STORE": store, "SETTINGS": settings,
                      "ENGINE_CTX": worker.handler.ctx}, db=db, clock=clock)
    c = app.test_client()

    def get(path, who, **kw):
        return c.get(path, headers={"Authorization": f"Bearer {keys[who]}", **kw.pop("headers", {})})
    r = get(f"/v1/dossiers/{A}", "parent")
    assert r.status_code == 200, r.json
    assert r.json["state"]["status"] and "0901234567" not in r.text and "079123456789" not in r.text
    assert len(r.json["timeline"]) == 2
    assert get(f"/v1/dossiers/{A}", "other").status_code == 404
    r = get(f"/v1/dossiers/{A}/findings", "agency")
    states = {(f["rule"], f["state"]) for f in r.json["findings"]}
    assert {("DUE_SOON", "resolved"), ("OVERDUE", "resolved")} <= states
    r = get(f"/v1/dossiers/{A}/deadline", "agency")
    assert r.status_code == 200 and r.json["deadline"]["engine"]["due_at"].startswith("2024-11-05T10:00:00")
    r = get("/v1/findings?rule=RECEIVED_INCOMPLETE", "parent")
    assert [f["dossier_code"] for f in r.json["findings"]] == [B]
    assert get("/v1/findings", "other").json["total"] == 0
    r = get("/v1/reports/on-time?from=2024-11-01&to=2024-11-30&group_by=procedure", "parent")
    assert r.status_code == 200
    [row] = r.json["rows"]
    assert (row["group"], row["received_online"], row["received_direct_postal"], row["resolved_late"],
            row["in_progress_overdue"]) == ("1.001193", 1, 1, 1, 1)
