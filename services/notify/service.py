"""The notify service's work, without Kafka: findings in, notifications planned, sent and logged.

- `handle(message)` / `handle_many(messages)`: validate a `sla.findings` message, store the finding
  revision, plan its notifications (insert = claim). Nothing is sent here.
- `dispatch_due()`: claim, render, send, record, mark sent; retries with backoff, then `failed`.
- `run_scheduled()`: escalations, repeats, daily digests.
- `acknowledge(...)`: stop repeats and the escalation for lack of acknowledgement of a finding.

Two escalations, two facts (by lateness from sla; for lack of acknowledgement from notify), and
every figure of a mail computed at sending: docs/alerts.md.

Protocol (planning, leases and claims, at most one duplicate per crash, escalation):
docs/architecture.md, "notify".
"""
from __future__ import annotations

import logging
import threading
import time as _time
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Callable

from shared.contracts import findings
from shared.platform.clock import Clock, ensure_utc
from shared.contracts.events import redact
from shared.contracts.findings import SEVERITIES
from shared.domain.instants import stored_utc
from shared.platform.runtime import Backoff, backoff_delay

from .channels import ChannelError, Outgoing
from .policy import Policy, Route
from .routing import Recipient, escalation_levels, people_for, recipients_for
from .store import SCHEDULE_DEFAULTS, NotifyStore
from .templates import TZ, Renderer, TemplateMissing, local_text, late_text, greeting
from .tokens import sign_ack

log = logging.getLogger("motcua.notify")


# a findings message outside the contract: dead-lettered with reason invalid_finding
FindingError = findings.FindingError


def parse_finding(value: Any) -> dict:
    """The stored form of a `sla.findings` message (the contract of shared/contracts/findings.py), or
    FindingError naming the field."""
    msg = findings.parse(value)
    return {
        "_id": msg["finding_id"], "rule": msg["rule"], "state": msg["state"],
        "severity": msg["severity"], "dossier_code": msg["dossier_code"],
        "agency_code": msg["agency_code"], "responsible_role": msg["responsible_role"],
        "detected_at": msg["detected_at"], "due_at": msg["due_at"],
        "overdue_working_hours": msg["overdue_working_hours"], "details": redact(msg["details"]),
        "revision": msg["revision"], "procedure_code": msg["procedure_code"],
        "legal_basis": msg["legal_basis"], "title": msg["title"], "ruleset": msg["ruleset"],
    }


@dataclass
class Handled:
    stored: bool
    planned: int = 0
    reason: str = ""


class NotifyService:
    def __init__(self, store: NotifyStore, policy: Policy, directory, channels: dict, clock: Clock, *,
                 base_url: str = "", secret: str = "", calendars: Callable[[str], Any] | None = None,
                 procedure_name: Callable[[str], str | None] | None = None,
                 requirement: Callable[[str | None, str], str | None] | None = None,
                 metrics=None, renderer: Renderer | None = None, lease: timedelta = timedelta(minutes=2),
                 send_threads: int = 4, claim_batch: int = 50, direct_send: bool = False):
        self.store, self.policy, self.directory, self.channels, self.clock = store, policy, directory, channels, clock
        self.base_url = base_url.rstrip("/")
        self.secret = secret
        self._calendars = calendars or self._default_calendars
        self.procedure_name = procedure_name or (lambda code: None)
        self.requirement = requirement or (lambda ruleset, rule: None)
        self.metrics = metrics
        self.renderer = renderer or Renderer()
        self.lease = lease
        self._digest_done: set[tuple[str, str]] = set()   # cache only; the unique index decides
        self.send_threads, self.claim_batch = send_threads, claim_batch
        self._pool = None
        # direct sending: notifications due when planned are leased at insert and sent by
        # `dispatch_due` from memory, without a queue scan and claim (the worker turns it on)
        self.direct_send = direct_send
        self._direct: list[dict] = []
        self._direct_lock = threading.Lock()
        self._direct_cv = threading.Condition(self._direct_lock)
        self._inflight = 0                                 # taken from _direct, being sent
        self._sender: list[threading.Thread] | None = None  # background sender (start_sender)
        self._sink: list = []                              # accepted sends waiting for their marks
        self._sender_stop = threading.Event()
        # the latest handled revision of findings with a direct level-0 alert not yet sent: the
        # send checks it instead of re-reading the finding (this instance handles the finding's
        # partition, so it has seen any later revision, e.g. a resolution in the same batch)
        self._snapshots: dict[str, dict] = {}
        self._batch: list | None = None   # notifications planned by handle_many, not yet inserted
        self._holding: list | None = None  # alerts leased during handle_many, not yet given to the sender

    # --- helpers ------------------------------------------------------------------------------
    def _default_calendars(self, agency_code: str):
        from shared.domain.workcal import calendar_for
        agency = self.directory.get(agency_code) if self.directory is not None else None
        return calendar_for(getattr(agency, "office", None) or "default")

    def _next_working(self, agency_code: str, now: datetime) -> datetime:
        try:
            return self._calendars(agency_code).next_working_instant(now)
        except Exception:   # a calendar out of range must not swallow the alert
            log.exception("calendar failed; sending now", extra={"fields": {"agency": agency_code}})
            return now

    def _add_working(self, agency_code: str, now: datetime, hours: float) -> datetime | None:
        try:
            return self._calendars(agency_code).add_working(now, timedelta(hours=hours))
        except Exception:
            log.exception("calendar failed; schedule skipped", extra={"fields": {"agency": agency_code}})
            return None

    def _late_hours(self, f: dict, now: datetime) -> float | None:
        """How late the finding is at `now`, in working hours: sla republishes its figure only
        on material changes, so the stored one is as old as the last revision. Same arithmetic
        as the rules (working time from the finding's due instant to now, the agency's
        calendar); a resolved finding keeps its final figure."""
        stored = f.get("overdue_working_hours")
        due = stored_utc(f.get("due_at"))
        if stored is None or due is None or f.get("state") == "resolved" or now <= due:
            return stored
        try:
            h = self._calendars(f["agency_code"]).working_between(due, now).total_seconds() / 3600
        except Exception:   # a calendar out of range: the last figure sla sent
            log.exception("calendar failed; stored lateness shown", extra={"fields": {"agency": f["agency_code"]}})
            return stored
        return max(float(stored), round(h, 4))

    def _as_of(self, f: dict, now: datetime) -> dict:
        """The finding with its figures computed for `now` (what a mail sent now must say)."""
        late = self._late_hours(f, now)
        return f if late == f.get("overdue_working_hours") else dict(f, overdue_working_hours=late)

    def _agency_name(self, code: str) -> str:
        a = self.directory.get(code) if self.directory is not None else None
        return a.name if a is not None else code

    def _count(self, what: str, *labels) -> None:
        if self.metrics is not None:
            getattr(self.metrics, what).labels(*labels).inc()

    # --- findings in --------------------------------------------------------------------------
    def handle(self, value: Any, now: datetime | None = None) -> Handled:
        """Store a finding message and plan its notifications; FindingError for a bad message."""
        res = self.handle_many([value], now)[0]
        if isinstance(res, Exception):
            raise res
        return res

    def handle_many(self, values: list, now: datetime | None = None) -> list:
        """`handle` for the messages of one poll, in few round trips: one Handled per message,
        or the FindingError of a bad one (for the dead-letter topic). Store failures raise.

        The first message of each finding is inserted in one unordered write; those inserted
        are new findings (their schedule is part of the insert) and their notifications are
        planned in one more unordered write (a duplicate key = planned already). The others
        (revisions of stored findings, later messages of a finding in the same batch) then go
        one by one, in their order, through the revision path (`_handle_stored`)."""
        now = ensure_utc(now or self.clock.now())
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
        news = {fid: self._new_finding(doc, now) for fid, (i, doc) in first.items()}
        inserted = self.store.insert_new_findings(list(news.values()))
        self._batch, self._holding = [], []
        try:
            try:
                for fid in inserted:
                    i, _ = first[fid]
                    results[i] = self._plan_new(news[fid], now, i)
            finally:
                batch, self._batch = self._batch, None
            self._flush(batch, now, results)
            for i, doc in docs:
                if results[i] is None:
                    results[i] = self._handle_stored(doc, now)
        finally:
            # the batch's alerts go to the sender only now: a finding resolved later in the same
            # batch has its snapshot updated, so its alert is not sent
            with self._direct_cv:
                self._direct.extend(self._holding)
                self._holding = None
                self._direct_cv.notify_all()
        return results

    def _new_finding(self, doc: dict, now: datetime) -> dict:
        """The stored form of a finding seen for the first time, with its schedule."""
        f = {**SCHEDULE_DEFAULTS, **doc, "first_revision": doc["revision"]}
        route = self.policy.route(f["rule"], f["severity"])
        if f["state"] == "resolved" or route.mode == "digest":
            return f
        if route.escalate_after_wh and route.max_level >= 1 and escalation_levels(f, self.directory) >= 1:
            f["next_escalation_at"] = self._add_working(f["agency_code"], now, route.escalate_after_wh)
        if route.repeat_every_wh and route.max_repeats > 0:
            f["next_repeat_at"] = self._add_working(f["agency_code"], now, route.repeat_every_wh)
        if f["state"] == "escalated":
            f["level"] = 1   # sla escalated it already: the parent head too, level 1
        return f

    def _plan_new(self, f: dict, now: datetime, index: int | None = None) -> Handled:
        """Plan the alerts of a new finding (`_new_finding`); idempotent (unique index)."""
        route = self.policy.route(f["rule"], f["severity"])
        if f["state"] == "resolved":
            return Handled(True, 0)
        if route.mode == "digest":
            return Handled(True, 0, "digest only")
        planned = self._plan(f, route, 0, now, index=index)
        if f["state"] == "escalated" and f.get("level", 0) >= 1:
            planned += self._plan(f, route, 1, now, index=index, reason="lateness")
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

    def _handle_stored(self, doc: dict, now: datetime) -> Handled:
        """A message whose finding is stored already (a revision, or a redelivery)."""
        stored, prev = self.store.upsert_finding(doc)
        if not stored:
            if prev is not None and prev.get("first_revision") == doc["revision"] == prev.get("revision") \
                    and prev.get("episode", 0) == 0:
                # the message that created the finding, again: plan its alerts again (duplicates
                # are refused), in case the planner stopped between the finding and its alerts
                replanned = self._plan_new({**prev, **doc, "level": prev.get("level", 0)}, now)
                return Handled(False, replanned.planned, "repeated revision")
            return Handled(False, reason="stale or repeated revision")
        f = {**SCHEDULE_DEFAULTS, **doc} if prev is None else {**prev, **doc}
        if f["_id"] in self._snapshots:
            self._snapshots[f["_id"]] = f
        route = self.policy.route(f["rule"], f["severity"])
        prev_state = prev["state"] if prev else None
        planned = 0
        if f["state"] == "resolved":
            if prev is not None and prev_state != "resolved":
                planned += self._on_resolved(f, route, now)
            return Handled(True, planned)
        if prev_state == "resolved":   # re-opened: a new episode
            episode = f.get("episode", 0) + 1
            self.store.set_finding(f["_id"], {"episode": episode, "level": 0, "repeats": 0, "acked_at": None,
                                              "acked_by": None, "acked_recipient": None})
            f = self.store.get_finding(f["_id"])
            prev = None
            if f["_id"] in self._snapshots:
                self._snapshots[f["_id"]] = f
        if route.mode == "digest":
            return Handled(True, 0, "digest only")
        if prev is None:
            planned += self._plan(f, route, 0, now)
            sched = {}
            if route.escalate_after_wh and route.max_level >= 1 and escalation_levels(f, self.directory) >= 1:
                sched["next_escalation_at"] = self._add_working(f["agency_code"], now, route.escalate_after_wh)
            if route.repeat_every_wh and route.max_repeats > 0:
                sched["next_repeat_at"] = self._add_working(f["agency_code"], now, route.repeat_every_wh)
            if sched:
                self.store.set_finding(f["_id"], sched)
        elif SEVERITIES.index(f["severity"]) > SEVERITIES.index(prev["severity"]):
            planned += self._plan(f, route, 0, now)   # new recipients of the higher severity only
        if f["state"] == "escalated" and f.get("level", 0) < 1 and prev_state != "escalated":
            # sla escalated it (e.g. OVERDUE past its escalation time): the parent head, level 1
            if self.store.set_finding(f["_id"], {"level": 1}, expect={"level": f.get("level", 0)}):
                planned += self._plan(f, route, 1, now, reason="lateness")
        return Handled(True, planned)

    def _plan(self, f: dict, route: Route, level: int, now: datetime, *, kind: str = "alert",
              seq: int = 0, recipients: list[Recipient] | None = None, index: int | None = None,
              reason: str | None = None, first_sent_at: datetime | None = None) -> int:
        if recipients is None:
            ff = f
            if level == 0 and f.get("responsible_role") == "parent_head":
                ff = dict(f, responsible_role="agency_head")   # the parent head is level 1
            recipients = recipients_for(ff, route, self.policy, self.directory, level,
                                        sms_enabled="sms" in self.channels)
        n = 0
        for r in recipients:
            immediate = route.any_hour or r.channel == "webhook"
            due = now if immediate else self._next_working(r.agency_code, now)
            extra = {"reason": reason, "first_sent_at": first_sent_at} if reason else {}
            n += self._insert(f, r, level, kind, seq, due, now, _index=index, **extra)
        return n

    def _insert(self, f: dict, r: Recipient, level: int, kind: str, seq: int, due: datetime,
                now: datetime, _index: int | None = None, **extra) -> int:
        """Plan one notification: inserted now, or collected when a batch is being planned
        (`handle_many`, `_index` = the message's position) and inserted by `_flush`."""
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
        direct = self.direct_send and doc["status"] == "pending" and due <= now
        leased_until = now + self.lease if direct else None
        if self._batch is not None and _index is not None:
            self._batch.append((doc, leased_until, f, _index))
            return 1
        if not self.store.create_notification(doc, leased_until=leased_until):
            return 0
        self._after_insert(doc, f, direct, now)
        return 1

    def _after_insert(self, doc: dict, f: dict, direct: bool, now: datetime) -> None:
        kind, level = doc["kind"], doc["level"]
        if direct:
            snapshot = kind == "alert" and level == 0 and "_id" in f and not str(f["_id"]).startswith("digest:")
            with self._direct_cv:
                item = dict(doc, reclaims=0, snapshot=snapshot, lease_end=now + self.lease)
                (self._holding if self._holding is not None else self._direct).append(item)
                if snapshot:
                    self._snapshots[f["_id"]] = f
                self._direct_cv.notify_all()
        if doc.get("address") is None:
            self._record(doc, now, "failed", doc["error"], 0.0)
            self._count("failed", doc["channel"])
            log.error("notification failed: no address", extra={"fields": self._log_fields(doc)})

    def _on_resolved(self, f: dict, route: Route, now: datetime) -> int:
        self.store.cancel_pending(f["_id"], ("alert", "repeat"), now, "finding resolved before delivery")
        self.store.set_finding(f["_id"], {"next_escalation_at": None, "next_repeat_at": None})
        if not route.resolved_notice:
            return 0
        n, seen = 0, set()
        for d in self.store.alerted_for(f["_id"], f.get("episode", 0)):
            if d["recipient"] in seen:
                continue
            seen.add(d["recipient"])
            r = _recipient(d)
            due = now if r.channel == "webhook" else self._next_working(r.agency_code, now)
            n += self._insert(f, r, 0, "resolved", 0, due, now)
        return n

    # --- acknowledgement ------------------------------------------------------------------------
    def ack_url(self, finding_id: str, person: str, now: datetime) -> str | None:
        if not self.secret or not self.base_url:
            return None
        token = sign_ack(self.secret, finding_id, person, now + timedelta(hours=self.policy.ack_ttl_hours))
        return f"{self.base_url}/v1/ack/{token}"

    def acknowledge(self, finding_id: str, person: str, by: str, via: str,
                    now: datetime | None = None, note: str | None = None) -> dict | None:
        """Record an acknowledgement; stops escalation and repeats. None if the finding is unknown."""
        now = ensure_utc(now or self.clock.now())
        f = self.store.get_finding(finding_id)
        if f is None:
            return None
        if f["state"] == "resolved":
            # an old link: nothing is pending, nothing to stop; say so rather than record an ack
            return {"finding_id": finding_id, "rule": f["rule"], "state": "resolved", "already_resolved": True,
                    "acknowledged_at": stored_utc(f.get("acked_at")), "acknowledged_by": f.get("acked_by"),
                    "first": False, "cancelled": 0}
        first = self.store.record_ack(finding_id, person, by, via, now, note)
        cancelled = self.store.cancel_pending(finding_id, ("repeat",), now, "acknowledged")
        # an escalation by lateness is the rule set's, not a reminder: an acknowledgement does
        # not stop it (sla shows the finding `escalated`; the parent head must be told)
        cancelled += self.store.cancel_pending(finding_id, ("alert",), now, "acknowledged", min_level=1,
                                               keep={"reason": "lateness"})
        log.info("finding acknowledged", extra={"fields": {"finding_id": finding_id, "recipient": person,
                                                            "via": via, "first": first}})
        f = self.store.get_finding(finding_id)
        return {"finding_id": finding_id, "rule": f["rule"], "state": f["state"], "already_resolved": False,
                "acknowledged_at": stored_utc(f.get("acked_at")),
                "acknowledged_by": f.get("acked_by"), "first": first, "cancelled": cancelled}

    # --- sending ----------------------------------------------------------------------------------
    def dispatch_due(self, now: datetime | None = None, max_items: int = 1000) -> int:
        """Send due notifications (at most `max_items`); returns how many were attempted.
        A claimed batch is sent by `send_threads` threads (sends wait on the network). The
        alerts leased at planning (direct sending) are sent first, unless the background sender
        (`start_sender`) sends them."""
        n = 0
        if self._sender is None:
            n += self._send_direct(ensure_utc(now or self.clock.now()))
        while n < max_items:
            t = ensure_utc(now or self.clock.now())
            docs = self.store.claim_due(t, self.lease, min(self.claim_batch, max_items - n))
            if not docs:
                break
            self._send_all(docs, t)
            n += len(docs)
        return n

    def _send_direct(self, now: datetime) -> int:
        """Send the alerts leased at planning. One whose lease nearly ran out while it waited
        here is left to the queue (`claim_due` takes it when the lease ends): its lease must not
        end while it is being sent, or another sender could take it too."""
        with self._direct_cv:
            direct, self._direct = self._direct, []
            self._inflight += len(direct)
        if not direct:
            return 0
        keep = [d for d in direct if d.get("lease_end") is None or d["lease_end"] - now > self.lease / 4]
        try:
            if keep:
                self._send_all(keep, now)
        finally:
            with self._direct_cv:
                for d in direct:
                    self._snapshots.pop(d["finding_id"], None)
                self._inflight -= len(direct)
                self._direct_cv.notify_all()
        return len(keep)

    # --- background sender (the worker): sends while the loop polls and plans the next batch ---
    def start_sender(self) -> None:
        """Send the alerts leased at planning as they come, each on its own from the pool of
        `send_threads` (no batch waits for its slowest send); a marker thread writes the marks
        of the accepted ones together (`_mark_sent`) every few milliseconds."""
        if self._sender is not None:
            return
        self._sender_stop = threading.Event()
        self._sink = []
        self._sender = [threading.Thread(target=self._sender_run, name="notify-direct", daemon=True),
                        threading.Thread(target=self._marker_run, name="notify-marks", daemon=True)]
        for t in self._sender:
            t.start()

    def stop_sender(self, timeout: float = 30.0) -> None:
        """Stop the background sender once it has sent and marked what it holds (their offsets
        are committed; anything left is sent from the queue when its lease ends)."""
        threads = self._sender
        if threads is None:
            return
        self._sender_stop.set()
        with self._direct_cv:
            self._direct_cv.notify_all()
        deadline = _time.monotonic() + timeout
        for t in threads:
            t.join(max(0.0, deadline - _time.monotonic()))
        self._sender = None

    def _send_pool(self):
        if self._pool is None:
            from concurrent.futures import ThreadPoolExecutor
            self._pool = ThreadPoolExecutor(max(1, self.send_threads), thread_name_prefix="notify-send")
        return self._pool

    def _sender_run(self) -> None:
        while True:
            with self._direct_cv:
                while not self._direct and not self._sender_stop.is_set():
                    self._direct_cv.wait(1.0)
                if not self._direct:
                    return
                direct, self._direct = self._direct, []
                self._inflight += len(direct)
            pool = self._send_pool()
            for d in direct:
                pool.submit(self._send_one, d)

    def _send_one(self, doc: dict) -> None:
        """One leased alert (a pool thread). One whose lease nearly ran out while it waited is
        left to the queue, like in `_send_direct`. Accepted: into the marker thread's sink."""
        queued = False
        try:
            now = ensure_utc(self.clock.now())
            if doc.get("lease_end") is None or doc["lease_end"] - now > self.lease / 4:
                out: list = []
                self._deliver(doc, now, out)
                if out:
                    with self._direct_cv:
                        self._sink.extend(out)
                        self._direct_cv.notify_all()
                    queued = True
        except Exception:
            log.exception("sending a leased alert failed; the queue sends it when its lease ends",
                          extra={"fields": self._log_fields(doc)})
        finally:
            with self._direct_cv:
                self._snapshots.pop(doc["finding_id"], None)
                if not queued:
                    self._inflight -= 1
                    self._direct_cv.notify_all()

    def _marker_run(self) -> None:
        backoff = Backoff()
        while True:
            with self._direct_cv:
                while not self._sink and not (self._sender_stop.is_set() and self._inflight == 0
                                              and not self._direct):
                    self._direct_cv.wait(1.0)
                if not self._sink:
                    return
                if len(self._sink) < 50 and self._inflight > len(self._sink):
                    self._direct_cv.wait(0.02)   # a few more sends finish: fewer, larger writes
                batch, self._sink = self._sink, []
            try:
                self._mark_sent(batch)
                backoff.reset()
            except Exception:
                # not marked: still leased, so sent once more when the lease ends (reclaimed > 0)
                log.exception("marking sent alerts failed; they will be sent again after their lease")
                self._sender_stop.wait(backoff.failed())
            finally:
                with self._direct_cv:
                    self._inflight -= len(batch)
                    self._direct_cv.notify_all()

    def wait_for_sender(self, limit: int, timeout: float) -> bool:
        """Back-pressure for the loop: wait (at most `timeout` s) until at most `limit` leased
        alerts are waiting or being sent; False if there are still more."""
        deadline = _time.monotonic() + timeout
        with self._direct_cv:
            while len(self._direct) + self._inflight > limit:
                left = deadline - _time.monotonic()
                if left <= 0:
                    return False
                self._direct_cv.wait(left)
        return True

    def _send_all(self, docs: list[dict], t: datetime) -> None:
        """Send a batch; the successful sends are marked together afterwards (one batched write,
        docs/ferretdb.md). A crash before the marks leaves the batch's
        sent notifications leased, so each is sent once more after the lease (`reclaimed`)."""
        sent: list[tuple[dict, datetime, float]] = []
        try:
            if self.send_threads > 1 and len(docs) > 1:
                list(self._send_pool().map(lambda d: self._deliver(d, t, sent), docs))
            else:
                for d in docs:
                    self._deliver(d, t, sent)
        finally:
            if sent:
                self._mark_sent(sent)

    def _mark_sent(self, sent: list[tuple[dict, datetime, float]]) -> None:
        """Successful sends, in few inserts: the delivery log, who was alerted, the sent markers
        (the notification documents are not updated: see store.py), then out of the queue."""
        self.store.record_deliveries([self._delivery(doc, at, "sent", None, spent) for doc, at, spent in sent])
        self.store.add_alerted_many([(doc["finding_id"], {**{k: doc.get(k) for k in _ALERTED}, "at": at,
                                                         "planned_at": doc.get("created_at")})
                                     for doc, at, _ in sent if doc["kind"] in ("alert", "repeat")])
        self.store.mark_sent([{"_id": doc["_id"], "finding_id": doc["finding_id"], "channel": doc["channel"],
                               "sent_at": at, "attempts": doc.get("attempts", 0) + 1,
                               "reclaims": doc.get("reclaims", 0)} for doc, at, _ in sent])
        for doc, at, _ in sent:
            self._count("sent", doc["channel"])
            if self.metrics is not None and doc.get("created_at"):
                self.metrics.latency.labels(doc["channel"]).observe(
                    max(0.0, (at - stored_utc(doc["created_at"])).total_seconds()))
            log.info("notification sent", extra={"fields": self._log_fields(doc)})

    def _log_fields(self, doc: dict) -> dict:
        return {"notification_id": str(doc.get("_id")), "finding_id": doc.get("finding_id"),
                "dossier_code": doc.get("dossier_code"), "recipient": doc.get("recipient"),
                "channel": doc.get("channel"), "kind": doc.get("kind"), "level": doc.get("level")}

    def _record(self, doc: dict, now: datetime, outcome: str, error: str | None, seconds: float) -> None:
        self.store.record_delivery(self._delivery(doc, now, outcome, error, seconds))

    def _delivery(self, doc: dict, now: datetime, outcome: str, error: str | None, seconds: float) -> dict:
        return {
            "notification_id": doc.get("_id"), "finding_id": doc["finding_id"],
            "dossier_code": doc.get("dossier_code"), "agency_code": doc.get("finding_agency") or doc.get("agency_code"),
            "recipient_agency": doc.get("agency_code"), "recipient": doc["recipient"],
            "channel": doc["channel"], "kind": doc["kind"], "level": doc["level"], "at": now,
            "attempt": doc.get("attempts", 0) + (0 if outcome == "failed" and doc.get("address") is None else 1),
            "outcome": outcome, "error": error, "send_seconds": round(seconds, 6),
            "reclaimed": doc.get("reclaims", 0),   # > 0: an earlier sender crashed; maybe a duplicate
            "latency_seconds": max(0.0, (now - stored_utc(doc["created_at"])).total_seconds()) if doc.get("created_at") else None,
        }

    def _outgoing(self, doc: dict, now: datetime) -> Outgoing | None:
        if doc["kind"] == "digest":
            return Outgoing(doc["channel"], doc["address"], doc["subject"], doc["text"], doc.get("html"),
                            message_id=str(doc["_id"]))
        f = self._snapshots.get(doc["finding_id"]) if doc.get("snapshot") else None
        if f is not None and f.get("episode", 0) != doc.get("episode", 0):
            return None   # resolved and re-opened since: that alert belonged to the earlier episode
        if f is None:
            f = self.store.get_finding(doc["finding_id"])
        if f is None:
            raise TemplateMissing(f"finding {doc['finding_id']} is not in the store")
        if doc["kind"] in ("alert", "repeat") and f["state"] == "resolved":
            return None
        lateness = doc.get("reason") == "lateness"
        if (doc["kind"] == "repeat" or (doc["level"] >= 1 and not lateness)) and f.get("acked_at") is not None:
            return None
        route = self.policy.route(f["rule"], f["severity"])
        f = self._as_of(f, now)
        ctx = self.renderer.context(f, agency_name=self._agency_name(f["agency_code"]),
                                    procedure_name=self.procedure_name(f.get("procedure_code") or ""),
                                    recipient_name=doc.get("recipient_name") or "",
                                    recipient_title=doc.get("recipient_title") or "")
        ack = None if doc["kind"] == "resolved" else self.ack_url(f["_id"], doc["person"], now)
        req = self.requirement(f.get("ruleset"), f["rule"])
        escalation = None
        if doc["level"] >= 1 and doc["kind"] != "resolved":
            escalation = {"reason": "lateness" if lateness else "unacknowledged",
                          "after_wh": route.escalate_after_wh,
                          "first_sent_local": local_text(doc.get("first_sent_at")),
                          "acked_local": local_text(f.get("acked_at"))}
        r = self.renderer.render_alert(ctx, kind=doc["kind"], level=doc["level"],
                                       escalate_after_wh=route.escalate_after_wh, ack_url=ack,
                                       requirement=req, escalation=escalation)
        if doc["channel"] == "webhook":
            finding = {k: v for k, v in f.items() if k in (
                "rule", "state", "severity", "dossier_code", "procedure_code", "agency_code",
                "responsible_role", "legal_basis", "title", "overdue_working_hours", "ruleset",
                "revision", "details")}
            finding.update(finding_id=f["_id"], detected_at=_iso(f.get("detected_at")), due_at=_iso(f.get("due_at")))
            payload = {"type": f"motcua.notification.{doc['kind']}", "notification_id": str(doc["_id"]),
                       "level": doc["level"], "subject": r.subject, "text": r.text, "ack_url": ack,
                       "finding": finding, "sent_at": now.isoformat()}
            return Outgoing("webhook", doc["address"], r.subject, r.text, payload=payload,
                            target=doc.get("target"), message_id=str(doc["_id"]))
        text = r.sms if doc["channel"] == "sms" else r.text
        files = ()
        if doc["channel"] == "email" and doc["kind"] != "resolved":
            # the document the law requires next, pre-filled on the rule set's form (.docx)
            from .documents import attachments_for
            files = attachments_for(f, agency_name=ctx["agency_name"],
                                    procedure_name=self.procedure_name(f.get("procedure_code") or ""))
        return Outgoing(doc["channel"], doc["address"], r.subject, text,
                        r.html if doc["channel"] == "email" else None, message_id=str(doc["_id"]),
                        attachments=files)

    def _deliver(self, doc: dict, now: datetime, sent: list | None = None) -> None:
        """Render and send one notification; failures and retries are written here, a success
        is appended to `sent` for the caller to mark (or marked here when `sent` is None)."""
        fields = self._log_fields(doc)
        channel = self.channels.get(doc["channel"])
        try:
            msg = self._outgoing(doc, now)
        except (TemplateMissing, Exception) as exc:   # rendering is deterministic: retrying won't help
            log.exception("notification failed: cannot render", extra={"fields": fields})
            self._fail(doc, now, f"render: {type(exc).__name__}: {exc}"[:300], 0.0)
            return
        if msg is None:
            self.store.finish(doc["_id"], {"status": "cancelled", "cancelled_at": now,
                                           "error": "resolved or acknowledged before delivery"})
            return
        if channel is None:
            self._fail(doc, now, f"channel {doc['channel']!r} is not configured", 0.0)
            return
        t0 = _time.perf_counter()
        try:
            channel.send(msg)
        except ChannelError as exc:
            spent = _time.perf_counter() - t0
            attempts = doc.get("attempts", 0) + 1
            if exc.permanent or attempts >= self.policy.retry_attempts:
                self._fail(doc, now, str(exc), spent)
                return
            delay = backoff_delay(attempts, self.policy.retry_base_seconds, self.policy.retry_max_seconds)
            self._record(doc, now, "error", str(exc), spent)
            self.store.retry_at(doc["_id"], now + timedelta(seconds=delay),
                                {"attempts": attempts, "error": str(exc)})
            self._count("retries", doc["channel"])
            log.warning("send failed; will retry", extra={"fields": {**fields, "attempt": attempts,
                                                                      "retry_in_s": delay, "error": str(exc)}})
            return
        item = (doc, ensure_utc(self.clock.now()), _time.perf_counter() - t0)
        if sent is None:
            self._mark_sent([item])
        else:
            sent.append(item)   # list.append is atomic: the send threads share the list

    def _fail(self, doc: dict, now: datetime, error: str, spent: float) -> None:
        self._record(doc, now, "failed", error, spent)
        self.store.finish(doc["_id"], {"status": "failed", "failed_at": now, "error": error,
                                       "attempts": doc.get("attempts", 0) + 1})
        self._count("failed", doc["channel"])
        log.error("notification failed", extra={"fields": {**self._log_fields(doc), "error": error}})

    # --- scheduled work -----------------------------------------------------------------------------
    def run_scheduled(self, now: datetime | None = None) -> dict:
        """Escalations, repeats and digests that are due; returns counts."""
        now = ensure_utc(now or self.clock.now())
        return {"escalated": self._escalate(now), "repeated": self._repeat(now), "digests": self.run_digests(now)}

    def _escalate(self, now: datetime) -> int:
        """Escalation for lack of acknowledgement: only when the previous level's alert reached
        its recipients `escalate_after` working hours ago (a deferred, retried or failed alert
        gave them no time yet); otherwise the check moves to when it will have."""
        n = 0
        for f in self.store.due_escalations(now):
            route = self.policy.route(f["rule"], f["severity"])
            level = f.get("level", 0) + 1
            deepest = min(route.max_level, escalation_levels(f, self.directory))
            if level > deepest or not route.escalate_after_wh:
                self.store.set_finding(f["_id"], {"next_escalation_at": None})
                continue
            reached = [stored_utc(d["at"]) for d in self.store.alerted_for(f["_id"], f.get("episode", 0))
                       if d.get("kind") == "alert" and d.get("level") == level - 1 and d.get("at")]
            first = min(reached) if reached else None
            ready = self._add_working(f["agency_code"], first or now, route.escalate_after_wh)
            if first is None or (ready is not None and ready > now):
                if ready is not None:   # not delivered yet: look again one full period later
                    self.store.set_finding(f["_id"], {"next_escalation_at": ready},
                                           expect={"level": f.get("level", 0)})
                continue
            nxt = None
            if level < deepest:
                nxt = self._add_working(f["agency_code"], now, route.escalate_after_wh)
            if not self.store.set_finding(f["_id"], {"level": level, "next_escalation_at": nxt},
                                          expect={"level": f.get("level", 0)}):
                continue   # another instance did it
            n += self._plan(f, route, level, now, reason="unacknowledged", first_sent_at=first)
            log.info("finding escalated", extra={"fields": {"finding_id": f["_id"], "level": level}})
        return n

    def _repeat(self, now: datetime) -> int:
        n = 0
        for f in self.store.due_repeats(now):
            route = self.policy.route(f["rule"], f["severity"])
            seq = f.get("repeats", 0) + 1
            nxt = None
            if route.repeat_every_wh and seq < route.max_repeats:
                nxt = self._add_working(f["agency_code"], now, route.repeat_every_wh)
            if not self.store.set_finding(f["_id"], {"repeats": seq, "next_repeat_at": nxt},
                                          expect={"repeats": f.get("repeats", 0)}):
                continue
            seen = set()
            for d in self.store.alerted_for(f["_id"], f.get("episode", 0)):
                if d.get("kind") != "alert" or d["recipient"] in seen:
                    continue
                seen.add(d["recipient"])
                if d.get("planned_at") is not None and route.repeat_every_wh:
                    # a recipient alerted later (an escalation) counts from their own alert:
                    # never a repeat in the same moment as the alert it would repeat. Half a
                    # period, not a whole one: the finding's repeat ticks drift by the
                    # scheduler's interval, and a tick seconds early must not skip the recipient
                    since = self._add_working(d["agency_code"], stored_utc(d["planned_at"]), route.repeat_every_wh / 2)
                    if since is not None and since > now:
                        continue
                r = _recipient(d)
                due = now if (route.any_hour or r.channel == "webhook") else self._next_working(r.agency_code, now)
                n += self._insert(f, r, d["level"], "repeat", seq, due, now)
        return n

    # --- digests -------------------------------------------------------------------------------------
    def run_digests(self, now: datetime | None = None) -> int:
        """Create today's digest for every agency whose subtree has open findings, between the
        policy's digest time and `catch_up_hours` later, on the agency's working days."""
        now = ensure_utc(now or self.clock.now())
        local = now.astimezone(TZ)
        start = local.replace(hour=self.policy.digest_time.hour, minute=self.policy.digest_time.minute,
                              second=0, microsecond=0)
        if not start <= local < start + timedelta(hours=self.policy.digest_catch_up_hours) or self.directory is None:
            return 0   # only around the digest time: a finding at 15:00 must not trigger a digest
        day = local.date().isoformat()
        candidates: set[str] = set()
        for code in self.store.open_agencies():
            if code in self.directory:
                candidates.add(code)
                candidates.update(self.directory.ancestors(code))
        n = 0
        for code in sorted(candidates):
            if (day, code) in self._digest_done:
                continue
            try:
                if not self._calendars(code).is_working_day(local.date()):
                    self._digest_done.add((day, code))
                    continue
            except Exception:
                log.exception("calendar failed; digest skipped", extra={"fields": {"agency": code}})
                continue
            n += self._digest(code, day, local, now)
            self._digest_done.add((day, code))
        if len(self._digest_done) > 50_000:
            self._digest_done = {k for k in self._digest_done if k[0] == day}
        return n

    def digest_content(self, agency_code: str, now: datetime) -> dict:
        """The lists of a digest: open findings of the agency's subtree, from the notify store."""
        sub = sorted(self.directory.subtree(agency_code))
        overdue, due_soon, violations = [], [], []
        for f in self.store.open_findings(sub):
            f = self._as_of(f, now)
            item = {"dossier_code": f["dossier_code"], "agency_name": self._agency_name(f["agency_code"]),
                    "title": f.get("title") or f["rule"], "rule": f["rule"],
                    "due_local": local_text(stored_utc(f.get("due_at"))),
                    "late_text": late_text(f.get("overdue_working_hours"))}
            (overdue if f["rule"] == "OVERDUE" else due_soon if f["rule"] == "DUE_SOON" else violations).append(item)
        return {"overdue": overdue, "due_soon": due_soon, "violations": violations}

    def _digest(self, code: str, day: str, local: datetime, now: datetime) -> int:
        content = self.digest_content(code, now)
        if not any(content.values()):
            return 0
        n = 0
        for role in self.policy.digest_roles:
            for label, acode, person in people_for(self.directory, code, role):
                r = Recipient(f"email:{label}@{acode}", f"{label}@{acode}", "email",
                              getattr(person, "email", None) or None, acode, label,
                              getattr(person, "name", "") or "", getattr(person, "title", "") or "")
                ctx = dict(content, recipient_greeting=greeting(r.name, r.title),
                           agency_name=self._agency_name(code), date_local=local.strftime("%d/%m/%Y"))
                rendered = self.renderer.render_digest(ctx)
                pseudo = {"_id": f"digest:{day}:{code}", "episode": 0, "rule": "DIGEST", "severity": "info",
                          "dossier_code": None, "agency_code": code}
                n += self._insert(pseudo, r, 0, "digest", 0, now, now, subject=rendered.subject,
                                  text=rendered.text, html=rendered.html,
                                  counts={k: len(v) for k, v in content.items()})
        return n


_ALERTED = ("recipient", "person", "channel", "address", "agency_code", "role", "recipient_name",
            "recipient_title", "target", "level", "kind", "episode")


def _recipient(d: dict) -> Recipient:
    return Recipient(d["recipient"], d["person"], d["channel"], d["address"], d["agency_code"], d["role"],
                     d.get("recipient_name") or "", d.get("recipient_title") or "", d.get("target"))


def _iso(t) -> str | None:
    t = stored_utc(t)
    return t.isoformat() if t else None
