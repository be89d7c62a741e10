"""Notify against the real things: Kafka broker, FerretDB/MongoDB, an SMTP server (aiosmtpd) and
HTTP receivers (http.server) started by the tests. Time is a virtual clock."""
from __future__ import annotations

import json
import socket
import threading
import time
from datetime import datetime, timedelta, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from shared.platform.clock import VirtualClock
from shared.platform.config import Settings
from shared.domain.directory import default_directory
from shared.platform.messaging import KafkaPublisher
from services.notify.channels import SmsChannel, SmtpChannel, WebhookChannel
from services.notify.outbox import Outbox
from services.notify.policy import load_policy, parse_policy
from services.notify.sender import BackgroundSender
from services.notify.service import NotifyService
from services.notify.store import NotifyStore
from services.notify.tokens import verify_webhook

SO_TU_PHAP = "000.00.10.H56"      # Sở Tư pháp; parent UBND tỉnh Long An (000.00.00.H56)
HEAD = "gd@stp.longan.example.org"
CHIEF = "motcua@stp.longan.example.org"
PARENT_HEAD = "chu-tich@ubnd.longan.example.org"
MON_10H = datetime(2026, 11, 23, 3, 0, tzinfo=timezone.utc)     # Monday 10:00 local
MON_20H = datetime(2026, 11, 23, 13, 0, tzinfo=timezone.utc)    # Monday 20:00 local
WED_0730 = datetime(2026, 11, 25, 0, 30, tzinfo=timezone.utc)   # Tue 24/11/2026 is a holiday
SECRET = "ack-secret"


def finding(fid="F-1", **kw):
    base = dict(finding_id=fid, rule="OVERDUE", state="open", severity="critical",
                dossier_code=f"000.00.10.H56-261120-{fid}", procedure_code="1.001193",
                agency_code=SO_TU_PHAP, responsible_role="agency_head",
                legal_basis="Điều 17 Nghị định 61/2018/NĐ-CP", title="Hồ sơ quá hạn",
                detected_at="2026-11-23T03:00:00+00:00", due_at="2026-11-20T10:00:00+00:00",
                overdue_working_hours=9.0,
                details={"applicant": {"id_number": "079123456789", "phone": "0909123456",
                                       "address": "12 Nguyễn Huệ"}},
                ruleset="nd61-107", revision=1)
    base.update(kw)
    return base


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Receiver:
    """A real HTTP server recording POSTs; `status` is what it answers."""

    def __init__(self):
        self.requests: list[tuple[str, dict, bytes]] = []
        self.status = 200
        outer = self

        class H(BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                outer.requests.append((self.path, dict(self.headers), body))
                self.send_response(outer.status)
                self.end_headers()
                self.wfile.write(b"ok")

            def log_message(self, *a):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), H)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receiver():
    r = Receiver()
    yield r
    r.close()


def make_service(mongo_db, smtp_server, clock, policy=None, outbox=None, **channels):
    store = NotifyStore(mongo_db)
    store.ensure_indexes()
    chans = {"email": SmtpChannel(smtp_server.host, smtp_server.port, "motcua@test.local")}
    chans.update(channels)
    return NotifyService(store, policy or load_policy(), default_directory(), chans, clock,
                         base_url="http://notify.test", secret=SECRET, outbox=outbox)


def recipients(mails):
    return sorted(r for m in mails for r in m.rcpt_tos)


# ------------------------------------------------------------------------------- via Kafka
def test_finding_on_kafka_becomes_email_to_agency_head_once(kafka_bootstrap, mongo_db, topics, smtp_server):
    from services.notify.worker import build_worker

    t = topics("findings", partitions=3)["findings"]
    clock = VirtualClock(MON_10H)
    settings = Settings.from_env(kafka_bootstrap_servers=kafka_bootstrap, topic_findings=t)
    env = {"SMTP_HOST": smtp_server.host, "SMTP_PORT": str(smtp_server.port), "NOTIFY_SECRET": SECRET,
           "NOTIFY_URL": "http://notify.test"}
    group = f"notify-{t}"
    worker = build_worker(settings, clock, db=mongo_db, group_id=group, environ=env,
                          directory=default_directory(), schedule_interval=3600,
                          consumer_config={"session_timeout_ms": 6000, "heartbeat_interval_ms": 1000})
    th = threading.Thread(target=worker.run, daemon=True)
    th.start()
    pub = KafkaPublisher(kafka_bootstrap)
    try:
        msg = finding()
        pub.publish(t, msg["dossier_code"], msg)
        mails = smtp_server.wait_for(2, timeout=60)
        assert recipients(mails) == sorted([CHIEF, HEAD])
        head = next(m for m in mails if HEAD in m.rcpt_tos)
        body = head.text()
        assert "Hồ sơ quá hạn" in head.subject and msg["dossier_code"] in head.subject
        assert "Hoàng Văn Em" in body and "20/11/2026 17:00" in body and "Phiếu xin lỗi và hẹn lại ngày trả kết quả" in body
        assert "http://notify.test/v1/ack/" in body
        for m in mails:
            raw = m.raw.decode("utf-8", "replace") + m.text()
            assert "079123456789" not in raw and "0909123456" not in raw and "Nguyễn Huệ" not in raw
        assert head.message.get_content_type() == "multipart/alternative"
        # redelivery: the same message published again, and an update: no new e-mail
        pub.publish(t, msg["dossier_code"], msg)
        pub.publish(t, msg["dossier_code"], finding(revision=2, overdue_working_hours=10))
        deadline = time.monotonic() + 30
        while mongo_db.notify_findings.find_one({"_id": "F-1"})["revision"] != 2:
            assert time.monotonic() < deadline, "update not consumed"
            time.sleep(0.2)
        time.sleep(1.0)
        assert len(smtp_server.messages) == 2
        assert mongo_db.deliveries.count_documents({"outcome": "sent", "channel": "email"}) == 2
        # offsets were committed (after the records were stored)
        from kafka import KafkaConsumer, TopicPartition
        c = KafkaConsumer(bootstrap_servers=kafka_bootstrap.split(","), group_id=group, enable_auto_commit=False)
        try:
            tps = [TopicPartition(t, p) for p in range(3)]
            ends = c.end_offsets(tps)
            deadline = time.monotonic() + 20
            while sum((c.committed(tp) or 0) for tp in tps) != sum(ends.values()):
                assert time.monotonic() < deadline, "offsets not committed"
                time.sleep(0.3)
        finally:
            c.close()
        # a poison message goes to the DLQ and the loop goes on
        pub.publish(t, "x", {"finding_id": "bad"})
        pub.publish(t, "k2", finding("F-2", agency_code="000.00.11.H56", dossier_code="000.00.11.H56-261120-2"))
        mails = smtp_server.wait_for(4, timeout=60)
        assert "gd@sxd.longan.example.org" in recipients(mails)
    finally:
        worker.stop()
        th.join(timeout=20)
        pub.close()


# ------------------------------------------------------------------------------- on FerretDB + SMTP
def test_deferral_outside_working_hours(mongo_db, smtp_server):
    clock = VirtualClock(MON_20H)
    svc = make_service(mongo_db, smtp_server, clock)
    svc.handle(finding(rule="TRANSFER_LATE", severity="warning", responsible_role="one_stop_chief",
                       title="Chuyển hồ sơ chậm", overdue_working_hours=None))
    assert svc.dispatch_due() == 0
    clock.set(WED_0730 - timedelta(seconds=1))          # Tuesday is a holiday
    assert svc.dispatch_due() == 0
    assert smtp_server.messages == []
    clock.set(WED_0730)
    assert svc.dispatch_due() == 1
    mails = smtp_server.wait_for(1, timeout=10)
    assert recipients(mails) == [CHIEF]
    assert "Chuyển hồ sơ chậm" in mails[0].subject


def test_escalation_after_working_hours_and_stop_on_ack(mongo_db, smtp_server):
    from services.notify.api import create_app

    clock = VirtualClock(MON_10H)
    policy = parse_policy({"defaults": {"critical": {"roles": ["responsible"], "channels": ["email"],
                                                     "escalate_after": "2wd", "repeat_every": None}}})
    svc = make_service(mongo_db, smtp_server, clock, policy)
    svc.handle(finding("F-ESC"))
    svc.handle(finding("F-ACK", dossier_code="000.00.10.H56-261120-ACK"))
    svc.dispatch_due()
    mails = smtp_server.wait_for(2, timeout=10)
    assert recipients(mails) == [HEAD, HEAD]
    ack_mail = next(m for m in mails if "ACK" in m.subject)
    token = ack_mail.text().split("http://notify.test/v1/ack/")[1].split()[0]
    app = create_app({"POLICY": policy, "DIRECTORY": default_directory(), "ENV": {"NOTIFY_SECRET": SECRET}},
                     db=mongo_db, clock=clock)
    client = app.test_client()
    page = client.get(f"/v1/ack/{token}")
    assert page.status_code == 200 and "Xác nhận đã nhận cảnh báo" in page.get_data(as_text=True)
    assert mongo_db.notify_findings.find_one({"_id": "F-ACK"})["acked_at"] is None   # GET does not ack
    r = client.post(f"/v1/ack/{token}", headers={"Accept": "application/json"})
    assert r.status_code == 200, r.get_json()
    assert r.get_json()["acknowledged_by"] == "head@000.00.10.H56"
    # 2 working days = 16 working hours after Monday 10:00, skipping the Tuesday holiday: Thursday 10:00
    clock.set(datetime(2026, 11, 26, 2, 59, tzinfo=timezone.utc))
    assert svc.run_scheduled()["escalated"] == 0
    clock.set(datetime(2026, 11, 26, 3, 0, tzinfo=timezone.utc))
    assert svc.run_scheduled()["escalated"] == 1        # only F-ESC: F-ACK was acknowledged
    svc.dispatch_due()
    mails = smtp_server.wait_for(3, timeout=10)
    esc = mails[2]
    assert esc.rcpt_tos == [PARENT_HEAD]
    assert esc.subject.startswith("[Chuyển cấp]") and "F-ESC" in esc.subject
    assert "Nguyễn Văn An" in esc.text()
    # acknowledged with an API key: the (single-level) escalation chain ends, nothing more is sent
    clock.advance(timedelta(days=7))
    assert svc.run_scheduled()["escalated"] == 0
    svc.dispatch_due()
    assert len(smtp_server.messages) == 3
    assert mongo_db.acks.count_documents({"finding_id": "F-ACK", "via": "link"}) == 1


def test_repeat_until_ack(mongo_db, smtp_server):
    clock = VirtualClock(MON_10H)
    policy = parse_policy({"defaults": {"critical": {"roles": ["head"], "channels": ["email"],
                                                     "repeat_every": "4wh", "max_repeats": 5}}})
    svc = make_service(mongo_db, smtp_server, clock, policy)
    svc.handle(finding())
    svc.dispatch_due()
    # 4 working hours after Monday 10:00 = 15:30 (10:00–11:30, then 13:00–15:30)
    clock.set(datetime(2026, 11, 23, 8, 29, tzinfo=timezone.utc))
    assert svc.run_scheduled()["repeated"] == 0
    clock.set(datetime(2026, 11, 23, 8, 30, tzinfo=timezone.utc))
    assert svc.run_scheduled()["repeated"] == 1
    svc.dispatch_due()
    mails = smtp_server.wait_for(2, timeout=10)
    assert mails[1].subject.startswith("[Nhắc lại]")
    svc.acknowledge("F-1", "head@000.00.10.H56", by="head@000.00.10.H56", via="link")
    clock.advance(timedelta(days=10))
    assert svc.run_scheduled()["repeated"] == 0


def test_retries_with_backoff_then_failed_and_visible(mongo_db):
    clock = VirtualClock(MON_10H)
    store = NotifyStore(mongo_db)
    store.ensure_indexes()
    policy = parse_policy({"defaults": {"critical": {"roles": ["head"], "channels": ["email"]}},
                           "retry": {"attempts": 3, "base_seconds": 10}})
    dead = SmtpChannel("127.0.0.1", free_port(), "motcua@test.local", timeout=2)   # nothing listens
    svc = NotifyService(store, policy, default_directory(), {"email": dead}, clock)
    svc.handle(finding())
    assert svc.dispatch_due() == 1
    n = mongo_db.notifications.find_one({})
    assert n["status"] == "pending" and n["attempts"] == 1
    assert n["due_at"] == MON_10H + timedelta(seconds=10)
    clock.advance(timedelta(seconds=9))
    assert svc.dispatch_due() == 0                       # backoff not over
    clock.advance(timedelta(seconds=1))
    assert svc.dispatch_due() == 1                       # 2nd attempt, next in 20 s
    clock.advance(timedelta(seconds=20))
    assert svc.dispatch_due() == 1                       # 3rd and last
    n = mongo_db.notifications.find_one({})
    assert n["status"] == "failed" and "SMTP" in n["error"]
    outcomes = [d["outcome"] for d in mongo_db.deliveries.find({}).sort("at", 1)]
    assert outcomes == ["error", "error", "failed"]
    clock.advance(timedelta(hours=1))
    assert svc.dispatch_due() == 0                       # failed is final, not retried silently
    # surfaced by the API (with tenancy) and in /metrics
    from shared.platform.auth import KeyStore
    from services.notify.api import create_app
    keys = KeyStore(mongo_db, clock)
    _, sup = keys.create("000.00.00.H56", "supervisor")
    _, other = keys.create("000.00.11.H56", "agency")
    app = create_app({"DIRECTORY": default_directory(), "POLICY": policy, "KEY_STORE": keys},
                     db=mongo_db, clock=clock)
    c = app.test_client()
    r = c.get("/v1/notifications?status=failed", headers={"Authorization": f"Bearer {sup}"})
    assert r.status_code == 200 and len(r.get_json()["items"]) == 1
    r = c.get("/v1/deliveries?outcome=failed", headers={"Authorization": f"Bearer {sup}"})
    assert [d["outcome"] for d in r.get_json()["items"]] == ["failed"]
    r = c.get("/v1/deliveries", headers={"Authorization": f"Bearer {other}"})   # Sở Xây dựng: not its subtree
    assert r.status_code == 200 and r.get_json()["items"] == []
    r = c.get("/v1/deliveries?agency_code=000.00.10.H56", headers={"Authorization": f"Bearer {other}"})
    assert r.status_code == 403
    assert c.get("/v1/deliveries").status_code == 401
    metrics = c.get("/metrics").get_data(as_text=True)
    assert 'notify_store_failed_total{channel="email"} 1.0' in metrics


def test_signed_webhook_and_sms_gateway(mongo_db, smtp_server, receiver, monkeypatch):
    clock = VirtualClock(MON_10H)
    policy = parse_policy({
        "defaults": {"critical": {"roles": ["head"], "channels": ["email", "sms"]}},
        "webhooks": [{"name": "ubnd-tinh", "url": receiver.url + "/hook", "secret_env": "HOOK_SECRET",
                      "agency": "000.00.00.H56", "min_severity": "warning"}],
        "sms": {"url_template": receiver.url + "/sms?to={phone}", "method": "POST"}})
    svc = make_service(mongo_db, smtp_server, clock, policy,
                       webhook=WebhookChannel({"ubnd-tinh": "hook-secret"}),
                       sms=SmsChannel(policy.sms_url_template, "POST"))
    svc.handle(finding())
    assert svc.dispatch_due() == 3
    hooks = [r for r in receiver.requests if r[0] == "/hook"]
    sms = [r for r in receiver.requests if r[0].startswith("/sms")]
    assert len(hooks) == 1 and len(sms) == 1
    path, headers, body = hooks[0]
    assert verify_webhook("hook-secret", body, headers["X-Motcua-Signature"])
    assert not verify_webhook("other", body, headers["X-Motcua-Signature"])
    payload = json.loads(body)
    assert payload["finding"]["finding_id"] == "F-1" and payload["finding"]["rule"] == "OVERDUE"
    assert "079123456789" not in body.decode() and "0909123456" not in body.decode()
    sms_body = json.loads(sms[0][2])
    assert sms_body["to"] == "0272 3800 010" and "000.00.10.H56-261120-F-1" in sms_body["text"]
    assert "to=0272%203800%20010" in sms[0][0]
    # a receiver answering 500 → retried; 400 → failed at once (permanent)
    receiver.status = 400
    svc.handle(finding("F-2"))
    svc.dispatch_due()
    failed = mongo_db.notifications.find_one({"finding_id": "F-2", "channel": "webhook"})
    assert failed["status"] == "failed" and "HTTP 400" in failed["error"]


def test_resolved_notice_goes_to_those_alerted(mongo_db, smtp_server):
    clock = VirtualClock(MON_10H)
    policy = parse_policy({"defaults": {"critical": {"roles": ["responsible", "one_stop_chief"], "channels": ["email"]}}})
    svc = make_service(mongo_db, smtp_server, clock, policy)
    svc.handle(finding())
    svc.dispatch_due()
    smtp_server.wait_for(2, timeout=10)
    clock.advance(timedelta(hours=2))                # 12:00: lunch break, the notice waits for 13:00
    svc.handle(finding(state="resolved", revision=2))
    assert svc.dispatch_due() == 0
    clock.advance(timedelta(hours=1))
    assert svc.dispatch_due() == 2
    mails = smtp_server.wait_for(4, timeout=10)
    closing = [m for m in mails if m.subject.startswith("[Đã khắc phục]")]
    assert recipients(closing) == sorted([CHIEF, HEAD])
    assert "/v1/ack/" not in closing[0].text()


def test_digest_lists_subtree_findings(mongo_db, smtp_server):
    clock = VirtualClock(MON_10H)
    policy = parse_policy({"digest": {"time": "07:30", "roles": ["head"]},
                           "defaults": {"info": {"mode": "digest"}, "warning": {"mode": "digest"},
                                        "critical": {"mode": "digest"}}})
    svc = make_service(mongo_db, smtp_server, clock, policy)
    svc.handle(finding("O1", dossier_code="000.00.10.H56-O1"))
    svc.handle(finding("S1", rule="DUE_SOON", severity="warning", title="Hồ sơ sắp đến hạn",
                       dossier_code="000.00.10.H56-S1", overdue_working_hours=None))
    svc.handle(finding("V1", rule="SUPPLEMENT_REPEATED", agency_code="000.00.11.H56",
                       dossier_code="000.00.11.H56-V1", title="Yêu cầu bổ sung hồ sơ quá một lần"))
    svc.handle(finding("R1", dossier_code="000.00.10.H56-R1", state="resolved"))
    assert svc.dispatch_due() == 0                     # digest mode: nothing immediate
    # Wednesday 07:29 local: not yet; 07:30: digests for both departments and the province
    clock.set(datetime(2026, 11, 25, 0, 29, tzinfo=timezone.utc))
    assert svc.run_digests() == 0
    clock.set(WED_0730)
    assert svc.run_digests() == 3
    assert svc.run_digests() == 0                      # once a day
    svc.dispatch_due()
    mails = smtp_server.wait_for(3, timeout=10)
    by = {m.rcpt_tos[0]: m for m in mails}
    stp = by[HEAD]
    assert "1 quá hạn, 1 sắp đến hạn, 0 vi phạm khác" in stp.subject
    assert "000.00.10.H56-O1" in stp.text() and "000.00.10.H56-S1" in stp.text()
    assert "000.00.11.H56-V1" not in stp.text() and "R1" not in stp.text()
    province = by[PARENT_HEAD]
    assert "1 quá hạn, 1 sắp đến hạn, 1 vi phạm khác" in province.subject
    assert "25/11/2026" in province.subject
    # Tuesday (holiday): no digest
    svc2 = make_service(mongo_db, smtp_server, VirtualClock(datetime(2026, 11, 24, 1, 0, tzinfo=timezone.utc)), policy)
    assert svc2.run_digests() == 0


def test_concurrent_instances_send_each_alert_once(mongo_db, smtp_server):
    clock = VirtualClock(MON_10H)
    policy = parse_policy({"defaults": {"critical": {"roles": ["head", "one_stop_chief"], "channels": ["email"]}}})
    a = make_service(mongo_db, smtp_server, clock, policy, outbox=Outbox())
    b = make_service(mongo_db, smtp_server, clock, policy, outbox=Outbox())
    msgs = [finding(f"C{i}", dossier_code=f"000.00.10.H56-C{i}") for i in range(10)]
    ths = [threading.Thread(target=lambda s=s: [s.handle(m) for m in msgs] and s.dispatch_due()) for s in (a, b)]
    for t in ths:
        t.start()
    for t in ths:
        t.join(30)
    a.dispatch_due()
    b.dispatch_due()
    mails = smtp_server.wait_for(20, timeout=20)
    time.sleep(0.5)
    assert len(smtp_server.messages) == 20
    assert len(NotifyStore(mongo_db).list_notifications({"status": "sent"})) == 20


def test_smtp_channel_reuses_its_connection_and_recovers_from_a_dropped_one(smtp_server):
    from services.notify.channels import Outgoing
    ch = SmtpChannel(smtp_server.host, smtp_server.port, "motcua@test.local", max_per_connection=3)
    mail = lambda i: Outgoing("email", "gd@stp.longan.example.org", f"Thư {i}", f"nội dung {i}")
    ch.send(mail(1))
    first = ch._local.held[0]
    ch.send(mail(2))
    assert ch._local.held[0] is first                   # same connection for the second message
    first.sock.shutdown(socket.SHUT_RDWR)               # the server side or network drops it
    ch.send(mail(3))                                    # NOOP fails: a new connection, one send
    second = ch._local.held[0]
    assert second is not first
    ch.send(mail(4))
    ch.send(mail(5))
    ch.send(mail(6))                                    # 4th on `second`: over max_per_connection
    assert ch._local.held[0] is not second
    got = smtp_server.wait_for(6, timeout=10)
    assert sorted(str(m.subject) for m in got) == [f"Thư {i}" for i in range(1, 7)]
    ch.close()
    time.sleep(0.3)
    assert len(smtp_server.messages) == 6               # no message sent twice


def test_batches_on_two_instances_with_background_senders_send_each_alert_once(mongo_db, smtp_server):
    """One poll's messages planned in a few unordered inserts on FerretDB, sent by the
    background senders of two instances that both got the batch (a partition handed over while
    its old owner still runs): each alert once, readers see `sent`, every send logged."""
    clock = VirtualClock(MON_10H)
    policy = parse_policy({"defaults": {"critical": {"roles": ["head"], "channels": ["email"]}}})
    a = make_service(mongo_db, smtp_server, clock, policy, outbox=Outbox())
    b = make_service(mongo_db, smtp_server, clock, policy, outbox=Outbox())
    batch = [finding(f"B{i}", dossier_code=f"000.00.10.H56-B{i}") for i in range(15)]
    batch += [finding("B3", dossier_code="000.00.10.H56-B3"), {"finding_id": "bad"}]
    senders = [BackgroundSender(s) for s in (a, b)]
    for sender in senders:
        sender.start()
    try:
        results = []
        ths = [threading.Thread(target=lambda s=s: results.append(s.handle_many(batch))) for s in (a, b)]
        for t in ths:
            t.start()
        for t in ths:
            t.join(30)
        assert len(results) == 2 and all(type(r[16]).__name__ == "FindingError" for r in results)
    finally:
        for sender in senders:
            sender.stop()
    smtp_server.wait_for(15, timeout=30)
    time.sleep(0.5)
    codes = sorted(m.subject.split("hồ sơ ")[1].split()[0] for m in smtp_server.messages)
    assert codes == sorted(f"000.00.10.H56-B{i}" for i in range(15))
    assert mongo_db.notifications.count_documents({}) == 15
    assert len(NotifyStore(mongo_db).list_notifications({"status": "sent"})) == 15
    assert mongo_db.deliveries.count_documents({"outcome": "sent"}) == 15
    assert mongo_db.notify_queue.count_documents({}) == 0


def test_background_sender_does_not_send_what_the_same_batch_resolves(mongo_db, smtp_server):
    clock = VirtualClock(MON_10H)
    policy = parse_policy({"defaults": {"critical": {"roles": ["head"], "channels": ["email"]}}})
    svc = make_service(mongo_db, smtp_server, clock, policy, outbox=Outbox())
    sender = BackgroundSender(svc)
    sender.start()
    try:
        svc.handle_many([finding(f"R{i}", dossier_code=f"000.00.10.H56-R{i}") for i in range(5)]
                        + [finding("R2", dossier_code="000.00.10.H56-R2", state="resolved", revision=2)])
    finally:
        sender.stop()
    smtp_server.wait_for(4, timeout=30)
    time.sleep(0.5)
    codes = sorted(m.subject.split("hồ sơ ")[1].split()[0] for m in smtp_server.messages)
    assert codes == [f"000.00.10.H56-R{i}" for i in (0, 1, 3, 4)]
    store = NotifyStore(mongo_db)
    assert [n["finding_id"] for n in store.list_notifications({"status": "cancelled"})] == ["R2"]
    assert mongo_db.notify_queue.count_documents({}) == 0


@pytest.mark.parametrize("goodbye", [b"", b"421 4.4.2 idle too long, closing\r\n"])
def test_smtp_channel_sends_once_on_a_fresh_connection_when_the_held_one_was_closed(smtp_server, goodbye):
    """No NOOP before a reused connection: MAIL FROM finds out. The server closed it (EOF, or a
    421 it sent before closing): nothing of the message went, so it goes once on a new one."""
    from services.notify.channels import Outgoing
    ch = SmtpChannel(smtp_server.host, smtp_server.port, "motcua@test.local")
    mail = lambda i: Outgoing("email", "gd@stp.longan.example.org", f"Thư {i}", f"nội dung {i}")
    ch.send(mail(1))
    held = ch._local.held[0]
    ours, theirs = socket.socketpair()
    theirs.sendall(goodbye)
    theirs.close()                                       # the server's side is gone
    held.sock.close()
    held.sock, held.file = ours, None
    ch.send(mail(2))
    assert ch._local.held[0] is not held
    got = smtp_server.wait_for(2, timeout=10)
    time.sleep(0.3)
    assert sorted(str(m.subject) for m in got) == ["Thư 1", "Thư 2"] and len(smtp_server.messages) == 2
    ch.close()
