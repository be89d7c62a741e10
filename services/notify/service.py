"""The notify service's work, without Kafka: findings in, notifications planned, sent and logged.

- `handle(message)` / `handle_many(messages)`: validate a `sla.findings` message, store the finding
  revision, plan its notifications (insert = claim). Nothing is sent here.
- `dispatch_due()`: the alerts leased at planning, then the queue: claim, render, send, record;
  retries with backoff, then `failed`.
- `run_scheduled()`: escalations, repeats, daily digests.
- `acknowledge(...)`: stop repeats and the escalation for lack of acknowledgement of a finding.

`NotifyService` is a plain object composing one module per concern: parsing.py, planning.py,
escalation.py, digests.py, acks.py, compose.py (what a mail says), sending.py, delivery.py (the
delivery log), outbox.py (alerts leased at planning), worktime.py (agencies' calendars). It starts
no thread: the worker's loop runs the background sender (sender.py) and the scheduler thread.

Two escalations, two facts (by lateness from sla; for lack of acknowledgement from notify), and
every figure of a mail computed at sending: docs/alerts.md. Protocol (planning, leases and claims,
at most one duplicate per crash, escalation): docs/architecture.md, "notify".
"""
from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any, Callable

from shared.platform.clock import Clock, ensure_utc

from .acks import Acks
from .compose import Composer
from .delivery import DeliveryLog
from .digests import Digests
from .escalation import Escalation
from .outbox import Outbox
from .planning import Handled, Planner
from .policy import Policy
from .sending import CLAIM_BATCH, Dispatcher
from .store import NotifyStore
from .templates import Renderer
from .worktime import WorkTime


class NotifyService:
    """With an `outbox`, alerts due at once are leased when planned and sent from it (the
    worker); without, every notification is sent from the queue."""

    def __init__(self, store: NotifyStore, policy: Policy, directory, channels: dict, clock: Clock, *,
                 base_url: str = "", secret: str = "", dashboard_url: str = "",
                 calendars: Callable[[str], Any] | None = None,
                 procedure_name: Callable[[str], str | None] | None = None,
                 requirement: Callable[[str | None, str], str | None] | None = None,
                 metrics=None, renderer: Renderer | None = None, lease: timedelta = timedelta(minutes=2),
                 send_threads: int = 4, claim_batch: int = CLAIM_BATCH, outbox: Outbox | None = None):
        self.store, self.policy, self.directory, self.channels, self.clock = store, policy, directory, channels, clock
        self.procedure_name = procedure_name or (lambda code: None)
        self.requirement = requirement or (lambda ruleset, rule: None)
        self.metrics = metrics
        self.renderer = renderer or Renderer()
        self.lease = lease
        self.outbox = outbox
        self.worktime = WorkTime(directory, calendars)
        self.deliveries = DeliveryLog(store, metrics)
        self.acks = Acks(store, policy, clock, base_url=base_url, secret=secret)
        self.planner = Planner(store, policy, directory, channels, self.worktime, self.deliveries,
                               outbox=outbox, lease=lease)
        self.escalation = Escalation(store, policy, directory, self.worktime, self.planner)
        self.digests = Digests(store, policy, directory, self.worktime, self.renderer, self.planner)
        self.composer = Composer(store, policy, self.worktime, self.renderer, self.acks, outbox,
                                 procedure_name=self.procedure_name, requirement=self.requirement,
                                 dashboard_url=dashboard_url)
        self.dispatcher = Dispatcher(store, policy, channels, clock, self.composer, self.deliveries, outbox,
                                     lease=lease, send_threads=send_threads, claim_batch=claim_batch)

    @property
    def dashboard_url(self) -> str:
        """Base URL of the dashboard (DASHBOARD_URL): alerts link to the dossier's page there."""
        return self.composer.dashboard_url

    @dashboard_url.setter
    def dashboard_url(self, url: str) -> None:
        self.composer.dashboard_url = (url or "").rstrip("/")

    # --- findings in --------------------------------------------------------------------------
    def handle(self, value: Any, now: datetime | None = None) -> Handled:
        """Store a finding message and plan its notifications; FindingError for a bad message."""
        res = self.handle_many([value], now)[0]
        if isinstance(res, Exception):
            raise res
        return res

    def handle_many(self, values: list, now: datetime | None = None) -> list:
        """`handle` for the messages of one poll, in few round trips: one Handled per message,
        or the FindingError of a bad one (for the dead-letter topic). Store failures raise."""
        return self.planner.handle_many(values, ensure_utc(now or self.clock.now()))

    # --- sending ------------------------------------------------------------------------------
    def dispatch_due(self, now: datetime | None = None, max_items: int = 1000) -> int:
        """Send due notifications (at most `max_items`, plus the alerts leased at planning);
        returns how many were attempted."""
        n = self.dispatcher.send_leased(ensure_utc(now or self.clock.now()))
        return n + self.dispatcher.dispatch_queue(now, max_items - n)

    def dispatch_queue(self, now: datetime | None = None, max_items: int = 1000) -> int:
        """Send due notifications from the queue only (the leased alerts have a sender of their
        own: the worker's background sender)."""
        return self.dispatcher.dispatch_queue(now, max_items)

    # --- scheduled work -----------------------------------------------------------------------
    def run_scheduled(self, now: datetime | None = None) -> dict:
        """Escalations, repeats and digests that are due; returns counts."""
        now = ensure_utc(now or self.clock.now())
        return {"escalated": self.escalation.escalate(now), "repeated": self.escalation.repeat(now),
                "digests": self.run_digests(now)}

    def run_digests(self, now: datetime | None = None) -> int:
        """Create today's digests that are due (digests.py)."""
        return self.digests.run(ensure_utc(now or self.clock.now()))

    def digest_content(self, agency_code: str, now: datetime) -> dict:
        """The lists of a digest: open findings of the agency's subtree, from the notify store."""
        return self.digests.content(agency_code, now)

    # --- acknowledgement ----------------------------------------------------------------------
    def ack_url(self, finding_id: str, person: str, now: datetime) -> str | None:
        return self.acks.ack_url(finding_id, person, now)

    def acknowledge(self, finding_id: str, person: str, by: str, via: str,
                    now: datetime | None = None, note: str | None = None) -> dict | None:
        """Record an acknowledgement; stops escalation and repeats. None if the finding is unknown."""
        return self.acks.acknowledge(finding_id, person, by, via, now, note)
