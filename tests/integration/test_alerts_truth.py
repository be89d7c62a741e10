"""Issue 12 across the services: the real sla worker (legal engine) and the real notify worker on
real Kafka, FerretDB/MongoDB and an SMTP server, one virtual clock moved day by day; the sla and
notify read APIs on the same database. What a head reads must be true when it is sent."""
from __future__ import annotations

import threading
import time
import uuid
from datetime import datetime, timezone

import pytest

from helpers.sla_stack import FAST

from shared.platform.auth import KeyStore
from shared.platform.clock import VirtualClock
from shared.platform.config import Settings
from shared.domain.directory import default_directory
from shared.platform.messaging import KafkaPublisher

pytestmark = pytest.mark.integration
AGENCY = "000.00.17.H56"                          # UBND phường Tân An; parent UBND tỉnh Long An
HEAD, PARENT_HEAD = "chutich@phuongtanan.longan.local", "chu-tich@ubnd.longan.example.org"
PROCEDURE = "1.004873"                            # 3 working days


def vn(text: str) -> datetime:
    return datetime.fromisoformat(text + "+07:00").astimezone(timezone.utc)


RECEIVED = vn("2026-11-02T09:00:00")              # Monday; due Thursday 05/11 09:00


def received(code: str, when: datetime) -> dict:
    return {"event_id": str(uuid.uuid4()), "type": "dossier.received", "dossier_code": code,
            "occurred_at": when.isoformat(), "recorded_at": when.isoformat(), "agency_code": AGENCY,
            "data": {"procedure_code": PROCEDURE, "channel": "direct", "components": ["to-khai-xac-nhan-tthn"],
                     "digitized": [], "applicant": {"kind": "citizen", "name": "Trần Thị Mai"}}}


class Stack:
    def __init__(self, settings, db, smtp_server):
        from services.notify.worker import build_worker as notify_worker
        from services.sla.worker import build_worker as sla_worker

        self.clock = VirtualClock(RECEIVED)
        self.smtp = smtp_server
        tag = uuid.uuid4().hex[:6]
        self.sla = sla_worker(settings, self.clock, db=db, group_id=f"sla-{tag}", consumer_config=FAST)
        env = {**smtp_server.env, "NOTIFY_SECRET": "s3cret", "NOTIFY_URL": "http://notify.test"}
        self.notify = notify_worker(settings, self.clock, db=db, group_id=f"notify-{tag}", environ=env,
                                    directory=default_directory(), schedule_interval=0.2,
                                    consumer_config=FAST)
        self.threads = [threading.Thread(target=w.run, daemon=True) for w in (self.sla, self.notify)]
        for t in self.threads:
            t.start()
        self.pub = KafkaPublisher(settings.kafka_bootstrap_servers)
        self.settings = settings
        self.db = db

    def post(self, event):
        self.pub.publish(self.settings.topic_events, event["dossier_code"], event)

    def mails(self, code, to=None):
        """The OVERDUE mails of a dossier (APOLOGY_MISSING has its own alerts and escalation)."""
        return [m for m in list(self.smtp.messages) if code in m.subject and "Hồ sơ quá hạn" in m.subject
                and (to is None or to in m.rcpt_tos)]

    def wait(self, pred, what, timeout=40):
        deadline = time.monotonic() + timeout
        while not pred():
            assert time.monotonic() < deadline, (
                f"timed out waiting for {what}: dossiers {self.db.dossiers.count_documents({})}, findings "
                f"{[(f['_id'], f['state']) for f in self.db.findings.find()]}, notify "
                f"{[(f['_id'], f['state'], f.get('level')) for f in self.db.notify_findings.find()]}, mails "
                f"{[(m.rcpt_tos, m.subject) for m in self.smtp.messages]}, notifications "
                f"{[(n['recipient'], n['kind'], n['status'], n.get('error')) for n in self.db.notifications.find()]}")
            time.sleep(0.2)

    def settle(self, seconds=2.0):
        """Let both workers run a few scheduler turns at this instant (they poll in real time)."""
        time.sleep(seconds)

    def stop(self):
        for w in (self.sla, self.notify):
            w.stop()
        for t in self.threads:
            t.join(20)
        self.pub.close()


@pytest.fixture
def stack(settings, db, smtp_server):
    s = Stack(settings, db, smtp_server)
    yield s
    s.stop()


def test_a_month_of_one_late_dossier_tells_the_truth_at_each_mail(stack, db):
    a = f"{AGENCY}-261102-{uuid.uuid4().int % 10000:04d}"
    stack.post(received(a, RECEIVED))
    stack.settle(3)
    stack.clock.set(vn("2026-11-05T09:30:00"))        # half an hour late: OVERDUE, notify alerts
    stack.wait(lambda: len(stack.mails(a, HEAD)) == 1, "the first alert")
    assert "(quá hạn 30 phút làm việc)" in stack.mails(a, HEAD)[0].subject

    # one working day later the repeat says how late it is now, not at detection
    stack.clock.set(vn("2026-11-06T09:30:00"))
    stack.wait(lambda: len(stack.mails(a, HEAD)) == 2, "repeat 1")
    repeat = stack.mails(a, HEAD)[1]
    assert repeat.subject.startswith("[Nhắc lại]")
    assert "(quá hạn 1 ngày làm việc)" in repeat.subject, repeat.subject

    # Monday 09:10: 2 working days late, sla escalates by lateness: the parent head is told so
    stack.clock.set(vn("2026-11-09T09:10:00"))
    stack.wait(lambda: len(stack.mails(a, PARENT_HEAD)) == 1, "the escalation")
    [esc] = stack.mails(a, PARENT_HEAD)
    assert esc.subject.startswith("[Chuyển cấp] Hồ sơ quá hạn")
    assert "đã quá hạn giải quyết (quá hạn 2 ngày làm việc), đến mức phải báo cáo cấp trên" in esc.text()
    assert "chưa được cơ quan chịu trách nhiệm xác nhận" not in esc.text()

    # 09:30, repeat 2 of the agency's alert: the parent head, escalated 20 minutes ago, gets no
    # second mail (a repeat counts from the recipient's own alert)
    stack.clock.set(vn("2026-11-09T09:30:00"))
    stack.wait(lambda: len(stack.mails(a, HEAD)) == 3, "repeat 2")
    stack.settle(2)
    assert len(stack.mails(a, PARENT_HEAD)) == 1, [m.subject for m in stack.mails(a, PARENT_HEAD)]

    # one working day after the escalation: repeat 3 reaches the parent head too
    stack.clock.set(vn("2026-11-10T09:30:00"))
    stack.wait(lambda: len(stack.mails(a, PARENT_HEAD)) == 2, "repeat 3 to the parent head")
    last = stack.mails(a, PARENT_HEAD)[1]
    assert last.subject.startswith("[Chuyển cấp] [Nhắc lại]") and "(quá hạn 3 ngày làm việc)" in last.subject


def test_a_dossier_first_seen_long_overdue_is_escalated_for_lateness(stack):
    b = f"{AGENCY}-261102-{uuid.uuid4().int % 10000:04d}"
    stack.clock.set(vn("2026-11-16T10:00:00"))        # the receipt reaches sla 2 weeks late
    stack.post(received(b, RECEIVED))
    stack.wait(lambda: stack.mails(b, PARENT_HEAD) and stack.mails(b, HEAD), "both alerts")
    [esc] = stack.mails(b, PARENT_HEAD)
    text = esc.text()
    assert "chưa được cơ quan chịu trách nhiệm xác nhận" not in text      # nobody could have yet
    assert "đã quá hạn giải quyết (quá hạn 7 ngày 1 giờ làm việc), đến mức phải báo cáo cấp trên" in text


def test_sla_and_notify_tell_the_same_acknowledged_escalated_finding(stack, db, settings):
    from services.notify.api import create_app as notify_api
    from services.sla.api import create_app as sla_api

    c = f"{AGENCY}-261102-{uuid.uuid4().int % 10000:04d}"
    stack.post(received(c, RECEIVED))
    stack.settle(3)
    stack.clock.set(vn("2026-11-05T09:30:00"))
    stack.wait(lambda: stack.mails(c, HEAD), "the first alert")
    keys = KeyStore(db, stack.clock)
    key = keys.create(AGENCY, "agency")[1]
    auth = {"Authorization": f"Bearer {key}"}
    notify = notify_api({"DIRECTORY": default_directory(), "KEY_STORE": keys,
                         "ENV": {"NOTIFY_SECRET": "s3cret"}}, db=db, clock=stack.clock).test_client()
    sla = sla_api({"SETTINGS": Settings.from_env({}), "DIRECTORY": default_directory(), "KEY_STORE": keys},
                  db=db, clock=stack.clock).test_client()
    fid = next(f["finding_id"] for f in sla.get(f"/v1/dossiers/{c}/findings", headers=auth).json["findings"]
               if f["rule"] == "OVERDUE")
    r = notify.post(f"/v1/findings/{fid}/ack", json={"note": "Đang xử lý"}, headers=auth)
    assert r.status_code == 200 and r.json["first"]

    stack.clock.set(vn("2026-11-09T09:10:00"))        # sla escalates by lateness after the ack
    stack.wait(lambda: stack.mails(c, PARENT_HEAD), "the escalation by lateness")
    assert "đã xác nhận đã nhận cảnh báo lúc 05/11/2026 09:30" in stack.mails(c, PARENT_HEAD)[0].text()

    def views():
        s = next(f for f in sla.get(f"/v1/dossiers/{c}/findings", headers=auth).json["findings"]
                 if f["finding_id"] == fid)
        n = notify.get(f"/v1/findings/{fid}", headers=auth).json
        return s, n
    stack.wait(lambda: views()[1]["revision"] == views()[0]["revision"], "notify caught up")
    s, n = views()
    assert s["state"] == n["state"] == "escalated"
    assert s["alerting"] == n["alerting"]
    assert s["alerting"]["acknowledged"] and s["alerting"]["acknowledged_by"].startswith("key:")
    assert s["alerting"]["escalation_level"] == 1 and s["alerting"]["next_repeat_at"] is None


def test_the_scripted_rehearsal_month_fills_the_mailbox(stack, db):
    """`motcua demo --month`'s script (shared/dev/demo_month.py) played on the real workers, with the
    waits shortened: every kind of mail the issue lists arrives, and the digests' figures grow."""
    from services.notify.api import create_app as notify_api
    from shared.domain.catalog import default_catalog
    from shared.dev.demo_month import month_script, play

    keys = KeyStore(db, stack.clock)
    auth = {"Authorization": f"Bearer {keys.create('000.00.00.H56', 'admin')[1]}"}
    notify = notify_api({"DIRECTORY": default_directory(), "KEY_STORE": keys,
                         "ENV": {"NOTIFY_SECRET": "s3cret"}}, db=db, clock=stack.clock).test_client()

    def post(e):
        stack.post(dict(e, recorded_at=e["occurred_at"]))

    def acknowledge(code):
        stack.wait(lambda: db.notify_findings.find_one({"dossier_code": code, "rule": "OVERDUE"}), "the finding")
        fid = db.notify_findings.find_one({"dossier_code": code, "rule": "OVERDUE"})["_id"]
        assert notify.post(f"/v1/findings/{fid}/ack", headers=auth).status_code == 200

    start = vn("2026-11-02T07:00:00")
    stack.clock.set(start)
    steps = month_script(default_catalog(), default_directory(), start, days=18, digest_wait=1.5, step_wait=0.6)
    done = play(steps, stack.clock, post=post, acknowledge=acknowledge, say=lambda line: None)
    assert done["acks"] == 1 and done["events"] >= 20
    stack.settle(3)
    subjects = [m.subject for m in stack.smtp.messages]
    kinds = {"overdue": "Hồ sơ quá hạn", "repeat": "[Nhắc lại]", "escalation": "[Chuyển cấp]",
             "closing": "[Đã khắc phục]", "digest": "Tổng hợp hồ sơ", "apology": "xin lỗi",
             "incomplete": "thiếu thành phần"}
    missing = [k for k, word in kinds.items() if not any(word.lower() in s.lower() for s in subjects)]
    assert not missing, (missing, subjects)
    acked = [m for m in stack.smtp.messages if m.subject.startswith("[Chuyển cấp]")
             and "đã xác nhận đã nhận cảnh báo" in m.text()]
    assert acked, "the acknowledged dossier's escalation by lateness says it was acknowledged"
    digests = [m.text() for m in stack.smtp.messages if m.subject.startswith("Tổng hợp hồ sơ")
               and PARENT_HEAD in m.rcpt_tos]
    lates = {line.rsplit(" - ", 1)[-1] for d in digests for line in d.splitlines() if "quá hạn" in line
             and line.strip()[:2].rstrip(".").isdigit()}
    assert len(lates) >= 3, lates            # the figures move from one morning to the next
