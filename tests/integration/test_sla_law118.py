"""Decree 118/2025 through the sla worker (real legal engine, real Kafka + FerretDB) and its read
API over real HTTP: the 8-working-hour check of an online dossier the counter never acts on
(Đ17 k2c), and which rule set judged each dossier of a period spanning 1/7/2025."""
from __future__ import annotations

import uuid
from datetime import datetime, timezone

import pytest
import requests

from shared.domain.directory import directory_from_records
from shared.platform.auth import KeyStore
from shared.platform.clock import VirtualClock
from shared.platform.messaging import KafkaPublisher
from services.sla.api import create_app
from services.sla.repository import MongoRepository

from helpers.net import WsgiServer
from helpers.sla_stack import Running, consume, wait_for

pytestmark = pytest.mark.integration
AGENCY, PARENT = "000.00.17.H56", "000.00.00.H56"
NAME = "Trần Thị Bình"


def vn(text: str) -> datetime:
    return datetime.fromisoformat(text).astimezone(timezone.utc)


def ev(code, etype, when, **data):
    return {"event_id": str(uuid.uuid4()), "type": etype, "dossier_code": code, "occurred_at": when,
            "recorded_at": when, "agency_code": AGENCY, "data": data}


def received(code, when, channel="direct"):
    return ev(code, "dossier.received", when, procedure_code="1.001193", channel=channel,
              components=["to-khai-khai-sinh", "giay-chung-sinh"],
              applicant={"kind": "citizen", "name": NAME, "id_number": "079123456789"})


def real_worker(settings, clock) -> Running:
    """The real sla worker (engine and reference data) in a thread."""
    return Running(settings, clock, "g-" + uuid.uuid4().hex[:6], fake=False)


def test_online_dossier_never_received_is_found_at_submitted_plus_8_working_hours(settings, db):
    # submitted Mon 7/7/2025 09:00 -> due Tue 8/7 09:00 (2.5 + 4 + 1.5 working hours)
    code = "000.00.17.H56-250707-0001"
    clock = VirtualClock(vn("2025-07-07T09:01:00+07:00"))
    worker = real_worker(settings, clock)
    pub = KafkaPublisher(settings.kafka_bootstrap_servers)
    try:
        pub.publish(settings.topic_events, code, ev(code, "dossier.submitted", "2025-07-07T09:00:00+07:00",
                                                    procedure_code="1.001193", channel="online"))
        repo = MongoRepository(db)
        wait_for(lambda: (repo.get_dossier(code) or {}).get("next_check_at") is not None,
                 timeout=30, what="the submitted dossier stored with its next check")
        # due just after the deadline (the store keeps milliseconds)
        due = repo.get_dossier(code)["next_check_at"] - vn("2025-07-08T09:00:00+07:00")
        assert due.total_seconds() * 1000 < 1 and due.total_seconds() >= 0
        clock.set(vn("2025-07-08T09:00:00+07:00"))          # not yet: no event arrives, no finding
        clock.set(vn("2025-07-08T09:30:00+07:00"))
        recs = consume(settings, settings.topic_findings,
                       lambda rs: any(v["rule"] == "ONLINE_RECEIPT_LATE" for _, v in rs), timeout=15)
        [f] = [v for _, v in recs if v["rule"] == "ONLINE_RECEIPT_LATE"]
        assert (f["dossier_code"], f["state"], f["ruleset"], f["responsible_role"]) == (
            code, "open", "nd118-2025", "one_stop_chief")
        assert f["due_at"] == vn("2025-07-08T09:00:00+07:00").isoformat()
        assert f["details"]["acted_at"] is None and f["overdue_working_hours"] == 0.5
        assert [v["rule"] for _, v in recs] == ["ONLINE_RECEIPT_LATE"]     # nothing else was judged
    finally:
        worker.stop()
        pub.close()


def test_api_says_which_rule_set_judged_each_dossier_across_1_july_2025(settings, db):
    old, new = "000.00.17.H56-250630-0001", "000.00.17.H56-250701-0001"
    clock = VirtualClock(vn("2025-07-01T10:05:00+07:00"))
    worker = real_worker(settings, clock)
    pub = KafkaPublisher(settings.kafka_bootstrap_servers)
    try:
        pub.publish(settings.topic_events, old, received(old, "2025-06-30T23:59:59+07:00"))
        pub.publish(settings.topic_events, new, received(new, "2025-07-01T00:00:00+07:00"))
        # the 118 dossier is stopped without the notice: STOP_NOTICE_MISSING carries the name
        pub.publish(settings.topic_events, new, ev(new, "dossier.stopped", "2025-07-01T10:00:00+07:00",
                                                   reason="Không còn nhu cầu"))
        consume(settings, settings.topic_findings,
                lambda rs: any(v["rule"] == "STOP_NOTICE_MISSING" for _, v in rs), timeout=30)
        repo = MongoRepository(db)
        wait_for(lambda: (repo.get_dossier(old) or {}).get("ruleset") == "nd61-107", timeout=30,
                 what="the 30/6 dossier stored")
    finally:
        worker.stop()
        pub.close()
    stored = repo.findings.find_one({"rule": "STOP_NOTICE_MISSING"})
    assert stored["form_data"]["applicant_name"] == NAME           # for the attached Mẫu 05

    directory = directory_from_records([
        {"code": PARENT, "name": "UBND tỉnh Long An", "parent": None},
        {"code": AGENCY, "name": "UBND xã Mỹ Yên", "parent": PARENT}])
    store = KeyStore(db, clock)
    key = {"Authorization": "Bearer " + store.create(PARENT, "supervisor")[1]}
    app = create_app({"DIRECTORY": directory, "KEY_STORE": store, "SETTINGS": settings,
                      "ENGINE_CTX": worker.worker.handler.ctx}, db=db, clock=clock)
    http = WsgiServer(app)     # the sla read API on a real socket
    try:
        def get(path):
            r = requests.get(http.url + path, headers=key, timeout=10)
            assert r.status_code == 200, (path, r.status_code, r.text)
            return r
        for code, rs in ((old, "nd61-107"), (new, "nd118-2025")):
            reason = get(f"/v1/dossiers/{code}/deadline").json()["deadline"]["ruleset_reason"]
            assert (reason["ruleset"], reason["binding_now"]) == (rs, rs)
            assert rs in reason["text"]
            clock_model = {"nd61-107": "pause", "nd118-2025": "restart"}[rs]
            assert reason["clock_model"] == clock_model
        r = get("/v1/reports/on-time?from=2025-06-01&to=2025-07-31&group_by=procedure")
        report = r.json()
        assert report["rulesets"] == {"nd118-2025": 1, "nd61-107": 1}
        [row] = report["rows"]
        assert (row["received_total"], row["stopped"]) == (2, 1)
        # a June period has only the 61/107 dossier; July carries it over, still under 61/107
        assert get("/v1/reports/on-time?from=2025-06-01&to=2025-06-30").json()["rulesets"] == {"nd61-107": 1}
        july = get("/v1/reports/on-time?from=2025-07-01&to=2025-07-31").json()
        assert july["rulesets"] == {"nd118-2025": 1, "nd61-107": 1} and july["total"]["carried_over"] == 1
        # the applicant's name stays out of the read API
        for path in (f"/v1/dossiers/{new}", f"/v1/dossiers/{new}/findings", "/v1/findings"):
            text = get(path).text
            assert NAME not in text and NAME.encode("unicode_escape").decode() not in text, path
    finally:
        http.close()
