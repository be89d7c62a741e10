"""The notify worker reads time only through its clock, and local dates in Vietnam's time zone."""
from __future__ import annotations

import dataclasses
from datetime import date, datetime, timezone
from email.utils import parsedate_to_datetime

from shared.platform.clock import VirtualClock
from shared.platform.config import Settings
from shared.domain.engine import ruledata
from services.notify.channels import Outgoing, SmtpChannel
from services.notify.worker import build_channels, load_notify_policy, lookups


def _two_rule_sets() -> ruledata.RuleSets:
    """The shipped rule set, and a successor in force from 1 January 2031 whose OVERDUE rule
    requires something else."""
    old = ruledata.load_rulesets().get("nd61-107")
    overdue = dataclasses.replace(old["OVERDUE"], requirement="yêu cầu của bộ quy tắc mới")
    new = dataclasses.replace(old, id="new-2031", rules={**old.rules, "OVERDUE": overdue})
    return ruledata.RuleSets({old.id: old, new.id: new},
                             [(date(2018, 6, 21), old.id), (date(2031, 1, 1), new.id)], old.id)


def test_a_finding_without_rule_set_takes_the_one_in_force_on_the_clock_s_local_date(monkeypatch):
    monkeypatch.setattr(ruledata, "default_rulesets", _two_rule_sets)
    # the rule sets of the settings (RULESETS_FILE), where lookups reads them from that
    from shared.platform import refdata
    monkeypatch.setattr(refdata, "rulesets_from_settings", lambda settings: _two_rule_sets())
    settings = Settings.from_env({})
    # 31 Dec 2030 17:30 UTC is already 1 January 2031 (00:30) in Vietnam
    _, requirement = lookups(settings, clock=VirtualClock(datetime(2030, 12, 31, 17, 30, tzinfo=timezone.utc)))
    assert requirement(None, "OVERDUE") == "yêu cầu của bộ quy tắc mới"
    assert requirement("nd61-107", "OVERDUE") != "yêu cầu của bộ quy tắc mới"   # named: kept
    # 23:59 on 31 December in Vietnam: the old set
    _, requirement = lookups(settings, clock=VirtualClock(datetime(2030, 12, 31, 16, 59, tzinfo=timezone.utc)))
    assert requirement(None, "OVERDUE") != "yêu cầu của bộ quy tắc mới"


def test_e_mail_date_is_the_clock_s_instant_in_vietnam_s_offset():
    clock = VirtualClock(datetime(2024, 11, 5, 2, 0, tzinfo=timezone.utc))
    ch = build_channels(load_notify_policy({}), {}, clock=clock)["email"]
    em = ch.build(Outgoing("email", "gd@stp.longan.example.org", "Hồ sơ quá hạn", "nội dung"))
    assert em["Date"] == "Tue, 05 Nov 2024 09:00:00 +0700"
    assert parsedate_to_datetime(em["Date"]) == clock.now()
    clock.set(datetime(2025, 1, 1, 0, 0, tzinfo=timezone.utc))
    direct = SmtpChannel("127.0.0.1", 25, "motcua@localhost", clock=clock)
    assert direct.build(Outgoing("email", "a@b.example", "s", "t"))["Date"] == "Wed, 01 Jan 2025 07:00:00 +0700"
