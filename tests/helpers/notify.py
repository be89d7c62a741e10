"""Builders of the notify tests: a findings message, and the notify service on fakes (mongomock
store, fake channels, virtual clock) with the shipped directory and the real working calendar."""
from __future__ import annotations

from datetime import datetime, timezone

import mongomock

from shared.platform.clock import VirtualClock
from shared.domain.directory import default_directory
from services.notify.channels import FakeChannel
from services.notify.outbox import Outbox
from services.notify.policy import load_policy
from services.notify.service import NotifyService
from services.notify.store import NotifyStore

SO_TU_PHAP = "000.00.10.H56"          # parent: UBND tỉnh 000.00.00.H56
MON_10H = datetime(2026, 11, 23, 3, 0, tzinfo=timezone.utc)     # Monday 10:00 in Ho Chi Minh City
MON_20H = datetime(2026, 11, 23, 13, 0, tzinfo=timezone.utc)    # Monday 20:00
# Tuesday 24/11/2026 is a holiday (Ngày Văn hóa Việt Nam): the next session is Wednesday 07:30
WED_0730 = datetime(2026, 11, 25, 0, 30, tzinfo=timezone.utc)


def finding(**kw):
    base = dict(finding_id="F-1", rule="OVERDUE", state="open", severity="critical",
                dossier_code="000.00.10.H56-261120-0001", procedure_code="1.001193",
                agency_code=SO_TU_PHAP, responsible_role="agency_head",
                legal_basis="Điều 17 Nghị định 61/2018/NĐ-CP", title="Hồ sơ quá hạn",
                detected_at="2026-11-23T03:00:00+00:00", due_at="2026-11-20T10:00:00+00:00",
                overdue_working_hours=9.0,
                details={"applicant": {"id_number": "079123456789", "phone": "0909123456"}},
                ruleset="nd61-107", revision=1)
    base.update(kw)
    return base


class Env:
    def __init__(self, policy=None, start=MON_10H, leased=False):
        """`leased`: alerts due at once are leased at planning (an outbox, as in the worker)."""
        self.db = mongomock.MongoClient(tz_aware=True).db
        self.store = NotifyStore(self.db)
        self.store.ensure_indexes()
        self.clock = VirtualClock(start)
        self.email, self.sms, self.webhook = FakeChannel("email"), FakeChannel("sms"), FakeChannel("webhook")
        self.directory = default_directory()
        self.svc = NotifyService(self.store, policy or load_policy(), self.directory,
                                 {"email": self.email, "sms": self.sms, "webhook": self.webhook},
                                 self.clock, base_url="http://notify.test", secret="s3cret",
                                 outbox=Outbox() if leased else None)

    def deliveries(self, **q):
        return list(self.db.deliveries.find(q))
