"""Issue 12 on fakes: what a head reads is true at the moment it is sent (mongomock store, fake
channels, virtual clock, the real Vietnamese calendar). The same stories across the real sla
worker, Kafka, FerretDB and SMTP are in tests/integration/test_alerts_truth.py."""
from __future__ import annotations

from datetime import datetime, timedelta, timezone

from services.notify.policy import parse_policy

from helpers.notify import MON_10H, Env, finding

PARENT_HEAD = "chu-tich@ubnd.longan.example.org"
HEAD = "gd@stp.longan.example.org"
# Tuesday 24/11/2026 is a holiday: one working day after Monday 10:00 is Wednesday 10:00
WED_10H = datetime(2026, 11, 25, 3, 0, tzinfo=timezone.utc)
THU_10H = datetime(2026, 11, 26, 3, 0, tzinfo=timezone.utc)
FRI_10H = datetime(2026, 11, 27, 3, 0, tzinfo=timezone.utc)
# due Monday 08:00 local: two working hours late at Monday 10:00
DUE = "2026-11-23T01:00:00+00:00"
EMAIL_ONLY = parse_policy({"defaults": {"critical": {
    "roles": ["responsible"], "channels": ["email"], "escalate_after": "2wd", "max_level": 1,
    "repeat_every": "1wd", "max_repeats": 3}}})


def mails_to(env, address, since=0):
    return [m for m in env.email.sent[since:] if m.address == address]


def step(env, t):
    env.clock.set(t)
    res = env.svc.run_scheduled()
    env.svc.dispatch_due()
    return res


def test_the_escalated_head_gets_one_mail_and_repeats_count_from_the_escalation():
    env = Env(policy=EMAIL_ONLY)
    env.svc.handle(finding(due_at=DUE, overdue_working_hours=2.0))
    env.svc.dispatch_due()
    step(env, WED_10H)                                       # repeat 1 to the agency head
    assert [m.subject[:11] for m in mails_to(env, HEAD)] == ["Hồ sơ quá h", "[Nhắc lại] "]
    # Thursday 10:00: sla escalates by lateness (2 working days late) at the moment of repeat 2
    env.clock.set(THU_10H)
    env.svc.handle(finding(due_at=DUE, state="escalated", responsible_role="parent_head",
                           overdue_working_hours=16.0, revision=2, change="escalated"))
    env.svc.dispatch_due()
    n = len(env.email.sent)
    step(env, THU_10H)
    at_escalation = mails_to(env, PARENT_HEAD)
    assert len(at_escalation) == 1, [m.subject for m in at_escalation]
    assert at_escalation[0].subject.startswith("[Chuyển cấp] Hồ sơ quá hạn")
    assert [m.subject[:10] for m in mails_to(env, HEAD, n)] == ["[Nhắc lại]"]
    # one working day after the escalation, repeat 3 reaches both levels
    step(env, FRI_10H)
    assert mails_to(env, PARENT_HEAD)[-1].subject.startswith("[Chuyển cấp] [Nhắc lại]")
    assert len(mails_to(env, PARENT_HEAD)) == 2


def test_repeats_and_digests_say_how_late_it_is_when_they_are_sent():
    env = Env(policy=parse_policy({"digest": {"time": "07:30", "roles": ["head"]}, "defaults": {
        "critical": {"roles": ["responsible"], "channels": ["email"], "repeat_every": "1wd",
                     "max_repeats": 3}}}))
    env.svc.handle(finding(due_at=DUE, overdue_working_hours=2.0))   # sla's figure at Monday 10:00
    env.svc.dispatch_due()
    assert "(quá hạn 2 giờ làm việc)" in env.email.sent[0].subject
    step(env, WED_10H)
    # Monday 08:00-17:00 (7.5 h) + Wednesday 07:30-10:00 (2.5 h) = 10 working hours
    repeat = env.email.sent[-1]
    assert repeat.subject.startswith("[Nhắc lại]") and "(quá hạn 1 ngày 2 giờ làm việc)" in repeat.subject
    assert "Mức độ chậm: quá hạn 1 ngày 2 giờ làm việc" in repeat.text
    n = len(env.email.sent)
    step(env, datetime(2026, 12, 14, 0, 30, tzinfo=timezone.utc))    # a digest three weeks on
    digest = [m for m in env.email.sent[n:] if m.subject.startswith("Tổng hợp")][0]
    assert "quá hạn 2 giờ làm việc" not in digest.text
    # Monday 23/11 7.5 h + 13 working days (25/11 .. 11/12) at Monday 14/12 07:30
    assert "quá hạn 13 ngày 7 giờ làm việc" in digest.text


def test_a_finding_first_seen_escalated_tells_the_parent_it_is_late_not_unacknowledged():
    env = Env(policy=EMAIL_ONLY)
    env.svc.handle(finding(due_at="2026-11-18T01:00:00+00:00", state="escalated",
                           responsible_role="parent_head", overdue_working_hours=34.0))
    env.svc.dispatch_due()
    [parent] = mails_to(env, PARENT_HEAD)
    [head] = mails_to(env, HEAD)
    assert parent.subject.startswith("[Chuyển cấp]")
    assert "chưa được cơ quan chịu trách nhiệm xác nhận" not in parent.text
    assert "đã quá hạn giải quyết (quá hạn 4 ngày 2 giờ làm việc), đến mức phải báo cáo cấp trên" in parent.text
    assert "chưa được" not in head.text


def test_escalation_for_lack_of_ack_waits_until_the_alert_had_its_time():
    env = Env(policy=EMAIL_ONLY)
    env.email.fail_next(1)                                   # the first attempt fails: retried later
    env.svc.handle(finding(due_at=DUE, overdue_working_hours=2.0))
    env.svc.dispatch_due()
    assert mails_to(env, HEAD) == []
    env.clock.set(WED_10H)                                   # delivered one working day late
    env.svc.dispatch_due()
    assert len(mails_to(env, HEAD)) == 1
    assert step(env, THU_10H)["escalated"] == 0              # 16 wh after planning, 8 after delivery
    assert mails_to(env, PARENT_HEAD) == []
    assert step(env, FRI_10H - timedelta(minutes=1))["escalated"] == 0
    assert step(env, FRI_10H)["escalated"] == 1              # 16 wh after delivery
    [parent] = mails_to(env, PARENT_HEAD)
    assert "gửi lúc 25/11/2026 10:00, chưa được cơ quan chịu trách nhiệm xác nhận sau 16 giờ làm việc" in parent.text


def test_an_acknowledgement_stops_repeats_but_not_the_escalation_by_lateness():
    env = Env(policy=EMAIL_ONLY)
    env.svc.handle(finding(due_at=DUE, overdue_working_hours=2.0))
    env.svc.dispatch_due()
    env.svc.acknowledge("F-1", "head@000.00.10.H56", by="head@000.00.10.H56", via="link")
    assert step(env, WED_10H) == {"escalated": 0, "repeated": 0, "digests": 0}
    env.clock.set(THU_10H)
    env.svc.handle(finding(due_at=DUE, state="escalated", responsible_role="parent_head",
                           overdue_working_hours=16.0, revision=2, change="escalated"))
    env.svc.dispatch_due()
    [parent] = mails_to(env, PARENT_HEAD)
    assert "đã xác nhận đã nhận cảnh báo lúc 23/11/2026 10:00" in parent.text
    assert env.db.notify_findings.find_one({"_id": "F-1"})["level"] == 1


def test_acknowledging_a_resolved_finding_says_it_was_resolved():
    env = Env(policy=EMAIL_ONLY)
    env.svc.handle(finding(due_at=DUE, overdue_working_hours=2.0))
    env.svc.handle(finding(due_at=DUE, state="resolved", revision=2, change="resolved"))
    res = env.svc.acknowledge("F-1", "head@000.00.10.H56", by="head@000.00.10.H56", via="link")
    assert res["already_resolved"] and res["acknowledged_at"] is None
    assert env.db.acks.count_documents({}) == 0
