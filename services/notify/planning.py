"""Planning: a finding in, its notifications stored (who, when, which channel); nothing is sent.

A notification is unique per (finding, episode, recipient, level, kind, seq): inserting it is the
claim, a duplicate key means planned already. docs/architecture.md, "Planning (exactly once in
effect)".
"""
from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from shared.platform.clock import ensure_utc
from shared.contracts.findings import SEVERITIES

from .delivery import DeliveryLog
from .escalation import first_schedule, recipient_of
from .outbox import Outbox
from .parsing import FindingError, parse_finding
from .policy import Policy, Route
from .routing import Recipient, recipients_for
from .store import SCHEDULE_DEFAULTS, NotifyStore
from .worktime import WorkTime


@dataclass
class Handled:
    stored: bool
    planned: int = 0
    reason: str = ""


class Planner:
    """Stores findings and plans their notifications. With an `outbox`, a notification due at
    once is inserted leased and handed over for sending (outbox.py); without, the queue has it."""

    def __init__(self, store: NotifyStore, policy: Policy, directory, channels: dict, worktime: WorkTime,
                 deliveries: DeliveryLog, *, outbox: Outbox | None = None, lease: timedelta):
        self.store, self.policy, self.directory, self.channels = store, policy, directory, channels
        self.worktime, self.deliveries, self.outbox, self.lease = worktime, deliveries, outbox, lease

    def handle_many(self, values: list, now: datetime) -> list:
        """One Handled per message, or the FindingError of a bad one (for the dead-letter
        topic), in few round trips. Store failures raise.

        The first message of each finding is inserted in one unordered write; those inserted
        are new findings (their schedule is part of the insert) and their notifications are
        planned in one more unordered write (a duplicate key = planned already). The others
        (revisions of stored findings, later messages of a finding in the same batch) then go
        one by one, in their order, through the revision path (`handle_stored`)."""
        now = ensure_utc(now)
        results: list = [None] * len(values)
        docs: list[tuple[int, dict]] = []
        for i, value in enumerate(values):
            try:
                doc = parse_finding(value)
            except FindingError as exc:
                results[i] = exc
                continue
            doc["received_at"] = now
            docs.append((i, doc))
        first: dict[str, tuple[int, dict]] = {}
        for i, doc in docs:
            first.setdefault(doc["_id"], (i, doc))
        news = {fid: self.new_finding(doc, now) for fid, (i, doc) in first.items()}
        inserted = self.store.insert_new_findings(list(news.values()))
        if self.outbox is not None:
            self.outbox.hold()
        try:
            batch: list = []
            for fid in inserted:
                i, _ = first[fid]
                results[i] = self.plan_new(news[fid], now, batch, i)
            self._flush(batch, now, results)
            for i, doc in docs:
                if results[i] is None:
                    results[i] = self.handle_stored(doc, now)
        finally:
            if self.outbox is not None:
                self.outbox.release()
        return results

    def new_finding(self, doc: dict, now: datetime) -> dict:
        """The stored form of a finding seen for the first time, with its schedule."""
        f = {**SCHEDULE_DEFAULTS, **doc, "first_revision": doc["revision"]}
        route = self.policy.route(f["rule"], f["severity"])
        if f["state"] == "resolved" or route.mode == "digest":
            return f
        f.update(first_schedule(f, route, now, self.worktime, self.directory))
        if f["state"] == "escalated":
            f["level"] = 1   # sla escalated it already: the parent head too, level 1
        return f

    def plan_new(self, f: dict, now: datetime, batch: list | None = None, index: int | None = None) -> Handled:
        """Plan the alerts of a new finding (`new_finding`); idempotent (unique index)."""
        route = self.policy.route(f["rule"], f["severity"])
        if f["state"] == "resolved":
            return Handled(True, 0)
        if route.mode == "digest":
            return Handled(True, 0, "digest only")
        planned = self.plan(f, route, 0, now, batch=batch, index=index)
        if f["state"] == "escalated" and f.get("level", 0) >= 1:
            planned += self.plan(f, route, 1, now, batch=batch, index=index, reason="lateness")
        return Handled(True, planned)

    def _flush(self, batch: list, now: datetime, results: list) -> None:
        """Insert the notifications planned in a batch; count those new in their Handled."""
        if not batch:
            return
        oks = self.store.create_notifications([(doc, leased) for doc, leased, _, _ in batch])
        for (doc, leased, f, index), ok in zip(batch, oks):
            if isinstance(results[index], Handled):
                results[index].planned -= 0 if ok else 1
            if ok:
                self._after_insert(doc, f, leased is not None, now)

    def handle_stored(self, doc: dict, now: datetime) -> Handled:
        """A message whose finding is stored already (a revision, or a redelivery)."""
        stored, prev = self.store.upsert_finding(doc)
        if not stored:
            if prev is not None and prev.get("first_revision") == doc["revision"] == prev.get("revision") \
                    and prev.get("episode", 0) == 0:
                # the message that created the finding, again: plan its alerts again (duplicates
                # are refused), in case the planner stopped between the finding and its alerts
                replanned = self.plan_new({**prev, **doc, "level": prev.get("level", 0)}, now)
                return Handled(False, replanned.planned, "repeated revision")
            return Handled(False, reason="stale or repeated revision")
        f = {**SCHEDULE_DEFAULTS, **doc} if prev is None else {**prev, **doc}
        self._refresh(f)
        route = self.policy.route(f["rule"], f["severity"])
        prev_state = prev["state"] if prev else None
        planned = 0
        if f["state"] == "resolved":
            if prev is not None and prev_state != "resolved":
                planned += self.on_resolved(f, route, now)
            return Handled(True, planned)
        if prev_state == "resolved":   # re-opened: a new episode
            episode = f.get("episode", 0) + 1
            self.store.set_finding(f["_id"], {"episode": episode, "level": 0, "repeats": 0, "acked_at": None,
                                              "acked_by": None, "acked_recipient": None})
            f = self.store.get_finding(f["_id"])
            prev = None
            self._refresh(f)
        if route.mode == "digest":
            return Handled(True, 0, "digest only")
        if prev is None:
            planned += self.plan(f, route, 0, now)
            sched = first_schedule(f, route, now, self.worktime, self.directory)
            if sched:
                self.store.set_finding(f["_id"], sched)
        elif SEVERITIES.index(f["severity"]) > SEVERITIES.index(prev["severity"]):
            planned += self.plan(f, route, 0, now)   # new recipients of the higher severity only
        if f["state"] == "escalated" and f.get("level", 0) < 1 and prev_state != "escalated":
            # sla escalated it (e.g. OVERDUE past its escalation time): the parent head, level 1
            if self.store.set_finding(f["_id"], {"level": 1}, expect={"level": f.get("level", 0)}):
                planned += self.plan(f, route, 1, now, reason="lateness")
        return Handled(True, planned)

    def _refresh(self, f: dict) -> None:
        if self.outbox is not None:
            self.outbox.refresh(f)

    def due_for(self, r: Recipient, now: datetime, any_hour: bool) -> datetime:
        """When a notification to `r` may go: now, or the next working instant of its agency."""
        return now if (any_hour or r.channel == "webhook") else self.worktime.next_working(r.agency_code, now)

    def plan(self, f: dict, route: Route, level: int, now: datetime, *, kind: str = "alert",
             seq: int = 0, recipients: list[Recipient] | None = None, batch: list | None = None,
             index: int | None = None, reason: str | None = None, first_sent_at: datetime | None = None) -> int:
        """Plan the notifications of a finding at an escalation level; returns how many are new."""
        if recipients is None:
            ff = f
            if level == 0 and f.get("responsible_role") == "parent_head":
                ff = dict(f, responsible_role="agency_head")   # the parent head is level 1
            recipients = recipients_for(ff, route, self.policy, self.directory, level,
                                        sms_enabled="sms" in self.channels)
        n = 0
        for r in recipients:
            due = self.due_for(r, now, route.any_hour)
            extra = {"reason": reason, "first_sent_at": first_sent_at} if reason else {}
            n += self.insert(f, r, level, kind, seq, due, now, batch=batch, index=index, **extra)
        return n

    def insert(self, f: dict, r: Recipient, level: int, kind: str, seq: int, due: datetime,
               now: datetime, *, batch: list | None = None, index: int | None = None, **extra) -> int:
        """Plan one notification: inserted now, or collected into `batch` (`index` = the
        message's position in `handle_many`) and inserted by `_flush`."""
        doc = {
            "finding_id": f["_id"], "episode": f.get("episode", 0), "recipient": r.id, "person": r.person,
            "level": level, "kind": kind, "seq": seq, "channel": r.channel, "address": r.address,
            "target": r.target, "agency_code": r.agency_code, "role": r.role, "recipient_name": r.name,
            "recipient_title": r.title, "rule": f.get("rule"), "severity": f.get("severity"),
            "dossier_code": f.get("dossier_code"), "finding_agency": f.get("agency_code"),
            "status": "pending", "due_at": due, "deferred": due > now, "created_at": now,
            "attempts": 0, "error": None, **extra,
        }
        if r.address is None:
            doc.update(status="failed", error=f"no {r.channel} address in the directory for {r.person}")
        leased = self.outbox is not None and doc["status"] == "pending" and due <= now
        leased_until = now + self.lease if leased else None
        if batch is not None and index is not None:
            batch.append((doc, leased_until, f, index))
            return 1
        if not self.store.create_notification(doc, leased_until=leased_until):
            return 0
        self._after_insert(doc, f, leased, now)
        return 1

    def _after_insert(self, doc: dict, f: dict, leased: bool, now: datetime) -> None:
        if leased:
            snapshot = doc["kind"] == "alert" and doc["level"] == 0 and "_id" in f \
                and not str(f["_id"]).startswith("digest:")
            self.outbox.add(dict(doc, reclaims=0, snapshot=snapshot, lease_end=now + self.lease),
                            f if snapshot else None)
        if doc.get("address") is None:
            self.deliveries.unaddressed(doc, now)

    def on_resolved(self, f: dict, route: Route, now: datetime) -> int:
        """A finding resolved: its pending alerts and repeats cancelled, its schedule cleared, a
        closing notice to those alerted when the route says so."""
        self.store.cancel_pending(f["_id"], ("alert", "repeat"), now, "finding resolved before delivery")
        self.store.set_finding(f["_id"], {"next_escalation_at": None, "next_repeat_at": None})
        if not route.resolved_notice:
            return 0
        n, seen = 0, set()
        for d in self.store.alerted_for(f["_id"], f.get("episode", 0)):
            if d["recipient"] in seen:
                continue
            seen.add(d["recipient"])
            r = recipient_of(d)
            n += self.insert(f, r, 0, "resolved", 0, self.due_for(r, now, False), now)
        return n
