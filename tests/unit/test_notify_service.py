"""Notify service on fakes: mongomock store, fake channels, virtual clock, the shipped directory
and the real Vietnamese working calendar (shared.domain.workcal)."""
from __future__ import annotations

from datetime import timedelta, timezone

import pytest

from services.notify.policy import load_policy, parse_policy
from services.notify.outbox import Outbox
from services.notify.parsing import FindingError, parse_finding
from services.notify.sender import BackgroundSender
from services.notify.service import NotifyService
from services.notify.tokens import verify_ack

from helpers.notify import MON_10H, MON_20H, WED_0730, Env, finding


@pytest.fixture
def env():
    return Env()


def test_immediate_alert_reaches_agency_head_and_one_stop_chief(env):
    res = env.svc.handle(finding())
    assert res.stored and res.planned == 3     # head + one-stop chief by e-mail, head by SMS
    assert env.svc.dispatch_due() == 3
    to = sorted(m.address for m in env.email.sent)
    assert to == ["gd@stp.longan.example.org", "motcua@stp.longan.example.org"]
    head = next(m for m in env.email.sent if m.address.startswith("gd@"))
    assert "000.00.10.H56-261120-0001" in head.subject
    assert "Hoàng Văn Em" in head.text and "Sở Tư pháp tỉnh Long An" in head.text
    assert "20/11/2026 17:00" in head.text           # due date in local time
    assert "quá hạn 1 ngày 1 giờ làm việc" in head.text
    assert "Điều 17 Nghị định 61/2018/NĐ-CP" in head.text
    assert "Phiếu xin lỗi và hẹn lại ngày trả kết quả" in head.text and head.html and "Phiếu xin lỗi" in head.html
    sent = env.deliveries(outcome="sent")
    assert sorted(d["channel"] for d in sent) == ["email", "email", "sms"]


def test_sms_goes_to_heads_phone_for_critical(env):
    env.svc.handle(finding())
    env.svc.dispatch_due()
    assert [m.address for m in env.sms.sent] == ["0272 3800 010"]   # Giám đốc Sở Tư pháp's phone
    assert len(env.sms.sent[0].text) <= 480


def test_redelivered_message_does_not_send_twice(env):
    env.svc.handle(finding())
    env.svc.dispatch_due()
    first = len(env.email.sent)
    # the same message again (consumer redelivery), and a newer revision with the same content
    assert env.svc.handle(finding()).stored is False
    assert env.svc.handle(finding(revision=2, overdue_working_hours=10.0)).planned == 0
    env.svc.dispatch_due()
    assert len(env.email.sent) == first
    assert env.db.notifications.count_documents({}) == 3   # 2 e-mails + 1 sms


def test_unique_index_refuses_a_second_claim(env):
    env.svc.handle(finding())
    doc = env.db.notifications.find_one({"channel": "email"}, {"_id": 0})
    assert env.store.create_notification(dict(doc)) is False


def test_no_citizen_data_in_any_alert(env):
    env.svc.handle(finding())
    env.svc.dispatch_due()
    for m in env.email.sent + env.sms.sent:
        for text in (m.subject, m.text, m.html or ""):
            assert "079123456789" not in text and "0909123456" not in text


def test_bad_message_is_rejected_with_field(env):
    with pytest.raises(FindingError) as e:
        env.svc.handle(finding(severity="urgent"))
    assert e.value.field == "severity"
    with pytest.raises(FindingError) as e:
        parse_finding(finding(due_at="2026-11-20T10:00:00"))
    assert e.value.field == "due_at"
    assert env.db.notifications.count_documents({}) == 0


def test_warning_outside_working_hours_waits_for_next_session():
    env = Env(start=MON_20H)
    env.svc.handle(finding(rule="TRANSFER_LATE", severity="warning", responsible_role="one_stop_chief",
                           title="Chuyển hồ sơ chậm", overdue_working_hours=None))
    assert env.svc.dispatch_due() == 0 and env.email.sent == []
    n = env.db.notifications.find_one({})
    assert n["deferred"] is True
    assert n["due_at"].astimezone(timezone.utc) == WED_0730
    env.clock.set(WED_0730 - timedelta(minutes=1))
    assert env.svc.dispatch_due() == 0
    env.clock.set(WED_0730)
    assert env.svc.dispatch_due() == 1
    assert env.email.sent[0].address == "motcua@stp.longan.example.org"


def test_critical_is_sent_at_any_hour_by_default_and_configurable():
    env = Env(start=MON_20H)
    env.svc.handle(finding())
    assert env.svc.dispatch_due() >= 2
    quiet = parse_policy({"critical_any_hour": False})
    env2 = Env(policy=quiet, start=MON_20H)
    env2.svc.handle(finding())
    assert env2.svc.dispatch_due() == 0


def test_ack_link_is_signed_for_the_recipient(env):
    env.svc.handle(finding())
    env.svc.dispatch_due()
    head = next(m for m in env.email.sent if m.address.startswith("gd@"))
    token = head.text.split("http://notify.test/v1/ack/")[1].split()[0]
    claim = verify_ack("s3cret", token, MON_10H)
    assert (claim.finding_id, claim.recipient) == ("F-1", "head@000.00.10.H56")


def test_crash_between_claim_and_mark_resends_once_after_the_lease(env):
    env.svc.handle(finding(rule="TRANSFER_LATE", severity="warning", responsible_role="one_stop_chief",
                           title="Chuyển hồ sơ chậm", overdue_working_hours=None))
    claimed = env.store.claim_due(MON_10H, env.svc.lease)        # an instance claims, then dies
    assert len(claimed) == 1
    assert env.svc.dispatch_due() == 0                           # leased: nobody else sends it
    env.clock.advance(env.svc.lease + timedelta(seconds=1))
    assert env.svc.dispatch_due() == 1
    n = env.store.get_notification({})
    assert n["status"] == "sent" and n["reclaims"] == 1
    assert env.svc.dispatch_due() == 0 and len(env.email.sent) == 1
    assert env.db.notify_queue.count_documents({}) == 0


def test_two_claimers_of_one_entry_only_one_wins(env):
    env.svc.handle(finding(rule="TRANSFER_LATE", severity="warning", responsible_role="one_stop_chief",
                           title="Chuyển hồ sơ chậm", overdue_working_hours=None))
    entry = env.db.notify_queue.find_one({})
    env.db.notification_claims.insert_one({"_id": f"{entry['_id']}:0"})   # the other instance won
    assert env.store.claim_due(MON_10H, env.svc.lease) == []


def _direct_env(start=MON_10H):
    return Env(start=start, leased=True)


def test_direct_send_leases_at_insert_and_sends_without_a_queue_claim():
    env = _direct_env()
    env.svc.handle(finding(rule="TRANSFER_LATE", severity="warning", responsible_role="one_stop_chief",
                           title="Chuyển hồ sơ chậm", overdue_working_hours=None))
    entry = env.db.notify_queue.find_one({})
    assert entry["n"] == 1                                        # claimed once, by this instance
    assert entry["due_at"].astimezone(timezone.utc) == MON_10H + env.svc.lease
    assert env.store.claim_due(MON_10H, env.svc.lease) == []      # another instance's scan: leased
    assert env.db.notification_claims.count_documents({}) == 0
    assert env.svc.dispatch_due() == 1
    assert [m.address for m in env.email.sent] == ["motcua@stp.longan.example.org"]
    n = env.store.get_notification({})
    assert n["status"] == "sent" and n["reclaims"] == 0 and n["attempts"] == 1
    assert env.db.notify_queue.count_documents({}) == 0
    assert env.svc.dispatch_due() == 0 and len(env.email.sent) == 1
    [d] = env.deliveries()
    assert d["outcome"] == "sent" and d["reclaimed"] == 0


def test_direct_send_crash_before_send_is_sent_once_after_the_lease():
    env = _direct_env()
    env.svc.handle(finding(rule="TRANSFER_LATE", severity="warning", responsible_role="one_stop_chief",
                           title="Chuyển hồ sơ chậm", overdue_working_hours=None))
    env.svc.outbox.items.clear()                                      # the instance dies before sending
    other = NotifyService(env.store, load_policy(), env.directory, {"email": env.email}, env.clock,
                          outbox=Outbox())
    assert other.dispatch_due() == 0                             # leased: nobody else sends it yet
    env.clock.advance(env.svc.lease + timedelta(seconds=1))
    assert other.dispatch_due() == 1
    n = env.store.get_notification({})
    assert n["status"] == "sent" and n["reclaims"] == 1          # visible: an earlier sender died
    assert len(env.email.sent) == 1 and other.dispatch_due() == 0
    [d] = env.deliveries()
    assert d["reclaimed"] == 1


def test_direct_send_crash_between_send_and_mark_duplicates_at_most_once_visibly():
    env = _direct_env()
    env.svc.handle(finding(rule="TRANSFER_LATE", severity="warning", responsible_role="one_stop_chief",
                           title="Chuyển hồ sơ chậm", overdue_working_hours=None))
    [doc] = env.svc.outbox.items
    env.svc.outbox.items.clear()
    env.email.send(env.svc.composer.outgoing(doc, MON_10H))              # sent, then the instance dies
    env.clock.advance(env.svc.lease + timedelta(seconds=1))
    assert env.svc.dispatch_due() == 1
    env.clock.advance(env.svc.lease + timedelta(seconds=1))
    assert env.svc.dispatch_due() == 0
    assert len(env.email.sent) == 2                              # one duplicate, no more
    [d] = env.deliveries()
    assert d["reclaimed"] == 1                                   # and the log says so


def test_direct_send_leaves_deferred_alerts_to_the_queue():
    env = _direct_env(start=MON_20H)
    env.svc.handle(finding(rule="TRANSFER_LATE", severity="warning", responsible_role="one_stop_chief",
                           title="Chuyển hồ sơ chậm", overdue_working_hours=None))
    assert env.svc.outbox.items == []
    entry = env.db.notify_queue.find_one({})
    assert entry["n"] == 0 and entry["due_at"].astimezone(timezone.utc) == WED_0730
    env.clock.set(WED_0730)
    assert env.svc.dispatch_due() == 1 and len(env.email.sent) == 1


def test_direct_send_does_not_send_what_was_resolved_in_the_same_batch():
    env = _direct_env()
    env.svc.handle(finding(rule="TRANSFER_LATE", severity="warning", responsible_role="one_stop_chief",
                           title="Chuyển hồ sơ chậm", overdue_working_hours=None))
    env.svc.handle(finding(rule="TRANSFER_LATE", severity="warning", responsible_role="one_stop_chief",
                           title="Chuyển hồ sơ chậm", overdue_working_hours=None, state="resolved",
                           revision=2))
    env.svc.dispatch_due()
    assert env.email.sent == []
    assert env.db.notifications.find_one({"kind": "alert"})["status"] == "cancelled"
    assert env.db.notify_queue.count_documents({}) == 0


WARN = dict(rule="TRANSFER_LATE", severity="warning", responsible_role="one_stop_chief",
            title="Chuyển hồ sơ chậm", overdue_working_hours=None)


def fw(fid, **kw):
    return finding(finding_id=fid, dossier_code=f"{fid}-DOSSIER", **{**WARN, **kw})


def test_handle_many_plans_a_batch_in_order_and_dead_letters_bad_messages():
    env = _direct_env()
    res = env.svc.handle_many([
        fw("F-1"), fw("F-2"), {"finding_id": "bad"},
        fw("F-1"),                                                            # redelivered in the batch
        fw("F-2", state="resolved", revision=2),
        fw("F-3")])
    assert [type(r).__name__ for r in res] == ["Handled", "Handled", "FindingError", "Handled", "Handled", "Handled"]
    assert [r.stored for r in res if not isinstance(r, Exception)] == [True, True, False, True, True]
    assert res[0].planned == 1 and res[3].planned == 0
    assert env.db.notifications.count_documents({}) == 3                     # one per finding
    assert env.svc.dispatch_due() == 3                                       # F-2's cancelled at send
    assert sorted(code for m in env.email.sent for code in ("F-1-DOSSIER", "F-2-DOSSIER", "F-3-DOSSIER")
                  if code in m.subject) == ["F-1-DOSSIER", "F-3-DOSSIER"]
    assert env.store.get_notification({"finding_id": "F-2"})["status"] == "cancelled"
    assert env.db.notify_queue.count_documents({}) == 0


def test_a_sent_notification_says_so_in_its_own_document(env):
    env.svc.handle(finding(**WARN))
    env.svc.dispatch_due()
    raw = env.db.notifications.find_one({})
    assert raw["status"] == "sent" and raw["sent_at"] == MON_10H and raw["error"] is None
    assert raw["attempts"] == 1 and raw["reclaims"] == 0
    assert "notifications_sent" not in env.db.list_collection_names()
    assert [n["status"] for n in env.store.list_notifications({"status": "sent"})] == ["sent"]
    assert env.store.list_notifications({"status": "pending"}) == []
    assert env.store.sent_counts() == {"email": 1}


def test_a_send_accepted_during_a_cancel_or_failure_stays_sent(env):
    env.svc.handle(finding(**WARN))
    env.svc.dispatch_due()
    nid = env.db.notifications.find_one({})["_id"]
    env.store.finish(nid, {"status": "failed", "error": "late"})             # another sender gave up
    env.store.retry_at(nid, MON_10H + timedelta(hours=1), {"error": "late"})
    assert env.store.cancel_pending("F-1", ("alert",), MON_10H, "resolved") == 0
    assert env.db.notifications.find_one({})["status"] == "sent"
    env.db.notifications.update_one({"_id": nid}, {"$set": {"status": "cancelled"}})   # cancelled mid-send
    env.store.mark_sent([{"_id": nid, "channel": "email", "sent_at": MON_10H + timedelta(minutes=5),
                          "attempts": 1, "reclaims": 1}])                   # a reclaimer's duplicate
    raw = env.db.notifications.find_one({})
    assert raw["status"] == "sent" and raw["sent_at"] == MON_10H and raw["reclaims"] == 1   # first time kept


@pytest.mark.parametrize("write", ["finish", "retry_at"])
def test_a_send_recorded_between_the_status_read_and_the_write_wins(env, monkeypatch, write):
    """The interleaving `_not_sent` cannot exclude: it reads `pending`, a second sender (a
    reclaimed lease) records its send, then the failure or the retry is written."""
    env.svc.handle(finding(**WARN))
    nid = env.db.notifications.find_one({})["_id"]
    read = env.store._not_sent

    def read_then_a_send_lands(n):
        pending = read(n)
        env.store.mark_sent([{"_id": n, "channel": "email", "sent_at": MON_10H, "attempts": 1,
                              "reclaims": 1}])
        return pending

    monkeypatch.setattr(env.store, "_not_sent", read_then_a_send_lands)
    if write == "finish":
        env.store.finish(nid, {"status": "failed", "error": "late"})
    else:
        env.store.retry_at(nid, MON_10H + timedelta(hours=1), {"error": "late"})
    raw = env.db.notifications.find_one({"_id": nid})
    assert raw["status"] == "sent" and raw["sent_at"] == MON_10H
    assert env.db.notify_queue.count_documents({"_id": nid}) == 0


def test_a_send_recorded_while_a_cancel_reads_wins(env, monkeypatch):
    """cancel_pending reads the status by `_id`, then writes by `_id`: a send recorded in
    between is not overwritten, and the cancel does not count it."""
    env.svc.handle(finding(**WARN))
    nid = env.db.notifications.find_one({})["_id"]
    notifications = env.store.notifications

    class SendLandsAfterTheRead:
        def __getattr__(self, name):
            return getattr(notifications, name)

        def find_one(self, *a, **kw):
            doc = notifications.find_one(*a, **kw)
            monkeypatch.setattr(env.store, "notifications", notifications)
            env.store.mark_sent([{"_id": nid, "channel": "email", "sent_at": MON_10H,
                                  "attempts": 1, "reclaims": 1}])
            return doc

    monkeypatch.setattr(env.store, "notifications", SendLandsAfterTheRead())
    assert env.store.cancel_pending("F-1", ("alert",), MON_10H, "resolved") == 0
    raw = env.db.notifications.find_one({"_id": nid})
    assert raw["status"] == "sent" and raw["sent_at"] == MON_10H


def test_redelivery_plans_the_alerts_a_crashed_planner_left_out(env):
    doc = parse_finding(finding(**WARN))
    env.store.insert_new_findings([env.svc.planner.new_finding(doc, MON_10H)])     # stored, then the planner died
    assert env.db.notifications.count_documents({}) == 0
    res = env.svc.handle(finding(**WARN))                                    # the same message, redelivered
    assert res.stored is False and res.planned == 1
    assert env.svc.handle(finding(**WARN)).planned == 0                      # and only once
    assert env.svc.dispatch_due() == 1 and len(env.email.sent) == 1


def test_sender_dying_between_mark_and_dequeue_does_not_resend():
    env = _direct_env()
    env.svc.handle(finding(**WARN))
    [doc] = env.svc.outbox.items
    env.svc.outbox.items.clear()
    env.email.send(env.svc.composer.outgoing(doc, MON_10H))
    env.db.notifications.update_one({"_id": doc["_id"]}, {"$set": {"status": "sent", "attempts": 1}})  # then died
    env.clock.advance(env.svc.lease + timedelta(seconds=1))
    assert env.svc.dispatch_due() == 0
    assert len(env.email.sent) == 1 and env.db.notify_queue.count_documents({}) == 0


def test_a_queue_entry_without_its_notification_is_dropped_after_a_lease(env):
    env.db.notify_queue.insert_one({"_id": "orphan", "due_at": MON_10H, "n": 0, "finding_id": "F-9",
                                    "kind": "alert", "level": 0, "at": MON_10H})
    assert env.store.claim_due(MON_10H, env.svc.lease) == []
    assert env.db.notify_queue.count_documents({}) == 1                     # may be being inserted
    assert env.store.claim_due(MON_10H + env.svc.lease, env.svc.lease) == []
    assert env.db.notify_queue.count_documents({}) == 0


def test_background_sender_sends_leased_alerts_as_they_are_planned_and_drains_on_stop():
    import time as _t
    env = _direct_env()
    sender = BackgroundSender(env.svc)
    sender.start()
    try:
        env.svc.handle_many([fw("F-1"), fw("F-2")])
        deadline = _t.monotonic() + 5
        while len(env.email.sent) < 2 and _t.monotonic() < deadline:
            _t.sleep(0.01)
        assert len(env.email.sent) == 2
        assert env.svc.dispatch_queue() == 0                   # the loop's dispatch leaves them to the sender
        env.svc.handle(fw("F-3"))
    finally:
        sender.stop()                                          # sends what it holds before it stops
    assert len(env.email.sent) == 3 and env.db.notify_queue.count_documents({}) == 0
    assert env.store.sent_counts() == {"email": 3}
    assert sender.wait(0, 0.1) is True


def test_an_alert_whose_lease_nearly_ran_out_in_memory_is_left_to_the_queue():
    env = _direct_env()
    env.svc.handle(fw("F-1"))
    env.clock.advance(env.svc.lease * 0.8)                     # the sender fell far behind
    assert env.svc.dispatch_due() == 0 and env.email.sent == []
    env.clock.advance(env.svc.lease * 0.2 + timedelta(seconds=1))
    assert env.svc.dispatch_due() == 1 and len(env.email.sent) == 1
    assert env.store.get_notification({})["reclaims"] == 1     # visible as a reclaimed lease


def test_worker_loop_keeps_polling_while_a_long_scheduler_run_scans():
    """Escalation/repeat scans read the whole findings store on FerretDB (seconds on a large
    one): in the worker they run on their own thread, so consumption never waits for them."""
    import threading
    import time as _t
    from services.notify.loop import NotifyLoop

    class Consumer:
        polls = 0

        def poll(self, timeout_ms, max_records):
            Consumer.polls += 1
            _t.sleep(0.01)
            return {}

        def close(self):
            pass

    env = _direct_env()
    release, started = threading.Event(), threading.Event()

    def slow_scheduled(now=None):
        started.set()
        release.wait(10)
        return {}
    env.svc.run_scheduled = slow_scheduled
    loop = NotifyLoop(Consumer(), env.svc, None, "dlq", poll_timeout=0.01, schedule_interval=3600,
                      background_send=True, background_schedule=True)
    th = threading.Thread(target=loop.run, daemon=True)
    th.start()
    try:
        assert started.wait(5)
        before = Consumer.polls
        _t.sleep(0.3)
        assert Consumer.polls > before + 5             # polling went on during the scan
    finally:
        release.set()
        loop.stop()
        th.join(10)
    assert not th.is_alive()


def test_alert_links_to_the_dossier_page_of_the_dashboard(env):
    env.svc.dashboard_url = "http://dash.test"
    env.svc.handle(finding())
    env.svc.dispatch_due()
    head = next(m for m in env.email.sent if m.address.startswith("gd@"))
    url = "http://dash.test/ho-so/000.00.10.H56-261120-0001"
    assert f"Xem hồ sơ, lý do và việc cần làm trên trang theo dõi: {url}" in head.text
    assert f'href="{url}"' in head.html


def test_no_dossier_link_without_a_dashboard_url(env):
    env.svc.handle(finding())
    env.svc.dispatch_due()
    head = next(m for m in env.email.sent if m.address.startswith("gd@"))
    assert "/ho-so/" not in head.text and "/ho-so/" not in head.html


def test_background_sender_keeps_at_most_max_unrecorded_sends_ahead_of_their_records():
    """A crash repeats the sends accepted but not yet recorded: while the store records nothing,
    the SMTP server must not receive more than `max_unrecorded` alerts."""
    import threading
    import time as _t
    env = _direct_env()
    sender = BackgroundSender(env.svc, max_unrecorded=3)
    release, recording = threading.Event(), env.svc.dispatcher.deliveries.sent

    def slow_store(batch, **kw):
        release.wait(10)
        recording(batch, **kw)

    env.svc.dispatcher.deliveries.sent = slow_store
    sender.start()
    try:
        env.svc.handle_many([fw(f"F-{i}") for i in range(10)])
        deadline = _t.monotonic() + 5
        while len(env.email.sent) < 3 and _t.monotonic() < deadline:
            _t.sleep(0.01)
        _t.sleep(0.3)                                          # room for a fourth send, if allowed
        assert len(env.email.sent) == 3 and env.store.sent_counts() == {}
        release.set()
        deadline = _t.monotonic() + 5
        while env.store.sent_counts().get("email", 0) < 10 and _t.monotonic() < deadline:
            _t.sleep(0.01)
    finally:
        release.set()
        sender.stop()
    assert len(env.email.sent) == 10 and env.store.sent_counts() == {"email": 10}


def test_background_sender_records_its_sends_again_after_a_store_failure():
    """A send that was accepted stays a send: when recording fails (the store paused), the same
    records are written again until they land — each delivery once, no alert sent twice, and
    nothing more sent than `max_unrecorded` while the store fails."""
    import time as _t
    env = _direct_env()
    sender = BackgroundSender(env.svc, max_unrecorded=4)
    sent_at_failure = []
    real_mark, fails = env.store.mark_sent, {"left": 3}

    def flaky_mark(markers):
        if fails["left"] > 0:                       # after the delivery log was written
            fails["left"] -= 1
            sent_at_failure.append(len(env.email.sent))
            raise ConnectionError("store paused")
        real_mark(markers)

    env.store.mark_sent = flaky_mark
    import services.notify.sender as sender_mod
    real_backoff = sender_mod.Backoff
    sender_mod.Backoff = lambda: real_backoff(first=0.01, cap=0.02)
    sender.start()
    try:
        env.svc.handle_many([fw(f"F-{i}") for i in range(10)])
        deadline = _t.monotonic() + 10
        while env.store.sent_counts().get("email", 0) < 10 and _t.monotonic() < deadline:
            _t.sleep(0.01)
    finally:
        sender.stop()
        sender_mod.Backoff = real_backoff
    assert sent_at_failure and all(n <= 4 for n in sent_at_failure)   # sends stopped at the permits
    assert len(env.email.sent) == 10 and env.store.sent_counts() == {"email": 10}
    assert env.db.deliveries.count_documents({"outcome": "sent"}) == 10
    assert env.db.notify_queue.count_documents({}) == 0
