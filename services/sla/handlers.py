"""The sla service's work, without Kafka offsets: events in, dossier states and findings out.

`handle()` = `prepare()` (parse, engine, evaluate, reconcile; held copies updated, undo kept) +
`write()` (store and publish: I/O only) + `finish()` or `abandon()`. Messages that cannot be
parsed or applied come back as `Rejected` for the loop to dead-letter. Protocol (delivery, held
partitions, scheduler, pipelined writes): docs/architecture.md, "sla".

`SlaHandler` composes the parts, one module each: projection.py (what an event does to a
dossier), heldstate.py (the held copy), partitions.py (ownership and loading), scheduler.py (when
dossiers are next checked), publication.py (publishing and "published" marks), staging.py (the
undo log of a prepared batch), scheduled.py (the storage order of scheduled checks).
"""
from __future__ import annotations

import logging
from datetime import datetime
from typing import Iterable

from .alarms import Alarm, OpsAlerts, raise_alarms, reference_data_problem
from .heldstate import StateCache
from .metrics import SlaMetrics
from .partitions import Loading, Partitions
from .projection import (Incoming, Rejected, default_engine, evaluate_dossier, event_agencies,
                         parse_item, unchanged, update_summary)
from .publication import Publication
from .repository import DossierWrite, FindingWrite, Repository, StaleWrite, finding_doc, strip_dossier
from .scheduled import store_scheduled
from .scheduler import Scheduler
from .staging import Pending, remember, undo

log = logging.getLogger("motcua.sla")


class SlaHandler:
    """Applies events and scheduled checks; owns no Kafka offsets."""

    def __init__(self, repo: Repository, publisher, topic_findings: str, clock, ctx,
                 engine=None, metrics: SlaMetrics | None = None, defer_marks: bool = False,
                 ops_alerts: OpsAlerts | None = None):
        self.repo = repo
        self.ops_alerts = ops_alerts        # where reference-data alarms are recorded (alarms.py)
        self.clock = clock
        self.ctx = ctx
        self.engine = engine or default_engine()
        self.metrics = metrics or SlaMetrics()
        self.cache = StateCache()
        self.scheduler = Scheduler(self.cache, clock)
        # defer_marks: the loop writes the "published" marks when idle (the worker)
        self.publication = Publication(repo, publisher, topic_findings, self.cache, self.metrics,
                                       defer_marks)
        self.partitions = Partitions(repo, clock, self.cache, self.scheduler, self.publication)

    # -- events ---------------------------------------------------------------------------------
    def handle(self, items: list[Incoming]) -> list[Rejected]:
        """Apply a batch of raw messages, store and publish its effects; returns the ones to
        dead-letter. `prepare()`, `write()` and `finish()` (or `abandon()`) in one call."""
        pending = self.prepare(items)
        self._write_through(pending)
        return pending.rejected

    def _write_through(self, pending: Pending) -> None:
        """Store and publish a prepared batch now: `write()` then `finish()`, or `abandon()` and
        raise."""
        try:
            self.write(pending)
        except BaseException as exc:
            self.abandon(pending, exc)
            raise
        self.finish(pending)

    def in_memory(self, items: list[Incoming]) -> bool:
        """True when `prepare(items)` reads nothing from the store: every message's dossier is in
        a held partition (new there, or held open). The loop overlaps only such batches with the
        store writes still in flight (a store read could miss a write not yet done)."""
        for it in items:
            if it.key is None or not self.cache.holds(it.partition):
                return False
            part = self.cache.docs[it.partition]
            if it.key in part and part[it.key] is None:
                return False            # held as a closed marker: read by _id
        return True

    def prepare(self, items: list[Incoming]) -> Pending:
        """Apply a batch in memory: parse, engine, evaluate, reconcile; the held copies of its
        dossiers and findings take the new documents at once (their previous ones are kept in
        `Pending.undo`). Nothing is stored or published: `write()` does that, then `finish()`;
        `abandon()` after a failure."""
        rejected: list[Rejected] = []
        parsed: list[tuple[Incoming, dict]] = []
        for item in items:
            event = parse_item(item)
            if isinstance(event, Rejected):
                rejected.append(event)
            else:
                parsed.append((item, event))
        if not parsed:
            return self._stage([], [], {}, [], self.clock.now(), rejected, len(items))

        where: dict[str, int | None] = {}
        for item, ev in parsed:
            where.setdefault(ev["dossier_code"], item.partition)
        codes = list(where)
        stored = self._load(where)
        states = {c: self._state_of(c, stored.get(c)) for c in codes}
        partitions = {c: stored[c].get("partition") for c in stored}
        agencies = {c: set(stored[c].get("agencies", ())) if c in stored else set() for c in codes}
        summaries = {c: dict(stored[c].get("summary") or {}) if c in stored else {} for c in codes}
        touched: list[str] = []
        alarms: list[Alarm] = []
        for item, event in parsed:
            code = event["dossier_code"]
            try:
                states[code] = self.engine.apply(states[code], event, self.ctx)
            except Exception as exc:   # the engine refuses this event: dead-letter it, go on
                problem = reference_data_problem(exc)
                if problem is not None:     # intake accepted it: an alarm, not only a dead letter
                    alarms.append(Alarm(problem[0], problem[1], str(exc)[:500], event["event_id"],
                                        event["type"], code, event.get("agency_code") or ""))
                else:
                    log.warning("event not applicable", extra={"fields": {
                        "event_id": event["event_id"], "type": event["type"],
                        "error": exc.__class__.__name__}})
                rejected.append(Rejected(item, "not_applicable", f"{exc.__class__.__name__}: {exc}"[:2000]))
                continue
            self.metrics.events_applied.inc()
            if item.partition is not None:
                partitions[code] = item.partition
            agencies[code].update(event_agencies(event))
            update_summary(summaries[code], event)
            if code not in touched:
                touched.append(code)
        now = self.clock.now()
        if alarms:
            raise_alarms(alarms, now, self.metrics, self.ops_alerts)
        dossier_writes, finding_writes, previous, to_publish = self._evaluate(
            touched, states, stored, partitions, now, agencies=agencies, summaries=summaries)
        order = {id(item): i for i, item in enumerate(items)}
        rejected.sort(key=lambda r: order[id(r.item)])
        return self._stage(dossier_writes, finding_writes, previous, to_publish, now, rejected, len(items))

    def write(self, pending: Pending) -> None:
        """Store a prepared batch, then publish its finding changes and wait for the acks.

        Only I/O on the repository and the publisher (both thread-safe), no held state: the loop
        runs it on its writer thread while the next batch is prepared. `pending.stored` says
        whether the store write completed (a failure after it is a failed publish)."""
        if pending.dossiers or pending.findings:
            self.repo.save(pending.dossiers, pending.findings, pending.now)
        pending.stored = True
        log.debug("stored", extra={"fields": {
            "dossiers": len(pending.dossiers), "findings": len(pending.findings)}})
        pending.done = self.publication.send(pending.to_publish)

    def finish(self, pending: Pending) -> None:
        """After `write()` succeeded: schedule the dossiers' next checks, record the findings as
        published (held copies, deferred marks, metrics)."""
        self.publication.release(pending.to_publish)
        for w in pending.dossiers:
            self.scheduler.push(w.code, w.next_check_at, w.partition)
        self.publication.published(pending.to_publish, pending.done)

    def abandon(self, pending: Pending, exc: BaseException | None) -> None:
        """After `write()` failed (or was skipped because an earlier batch failed), newest batch
        first: nothing stored → the held copies go back to what they were before `prepare()`;
        stored but not published → they stay (they match the store; the pending findings go
        out on the next touch or assignment); StaleWrite → another instance wrote: the held
        partitions are reloaded from the store."""
        self.publication.release(pending.to_publish)
        if isinstance(exc, StaleWrite):
            undo(self.cache, pending.undo)
            self.partitions.reload(pending.held)
        elif pending.stored:
            for w in pending.dossiers:
                self.scheduler.push(w.code, w.next_check_at, w.partition)
        else:
            undo(self.cache, pending.undo)

    def warm_up(self) -> None:
        """Build the working calendars of the offices the directory names: python-holidays'
        import and the day tables) that the first event would otherwise pay. The loop
        runs it while it joins the consumer group."""
        offices = {"default"} | {a.office for a in (self.ctx.directory or ())}
        for office in sorted(offices):
            try:
                self.ctx.calendars(office)
            except Exception:   # the first event naming it reports the problem
                log.warning("calendar not built", extra={"fields": {"office": office}}, exc_info=True)

    # -- partitions -----------------------------------------------------------------------------
    def assign(self, partitions: Iterable[int], *, claim: bool = True) -> tuple[int, int]:
        """Hold newly assigned partitions (partitions.py); returns (dossiers held, findings
        republished)."""
        return self.partitions.assign(partitions, claim=claim)

    def start_assign(self, partitions: Iterable[int], *, claim: bool = True) -> Loading:
        """`assign()` in steps: the loop drives `Loading.step()` between polls, so that loading a
        large partition (10^5-10^6 dossiers: minutes on FerretDB) never keeps it from polling
        (a consumer that does not poll within max.poll.interval.ms is put out of the group)."""
        return self.partitions.start(partitions, claim=claim)

    def forget_partitions(self, partitions: Iterable[int]) -> None:
        """Revoked: drop what is held for these partitions (the new owner reloads from the store)."""
        self.partitions.forget(partitions)

    # -- scheduled checks -----------------------------------------------------------------------
    def due_now(self) -> bool:
        """True when the scheduler has a check due now (maybe a stale entry)."""
        return self.scheduler.due_now()

    def scheduled(self) -> int:
        """Entries in the scheduler (heap and far buckets; stale ones included)."""
        return self.scheduler.size()

    def check_due(self, partitions: Iterable[int], limit: int = 500) -> int:
        """Evaluate dossiers of these partitions whose next_check_at has passed; returns how many."""
        parts = set(partitions)
        if not parts:
            return 0
        now = self.clock.now()
        picked = self.scheduler.take_due(parts, now.timestamp(), limit)
        if not picked:
            return 0
        # held without a next check (closed marker) or gone: a stale entry, nothing to read
        stored = self._load({c: p for c, p in picked.items()
                             if not self.cache.holds(p) or self.cache.docs[p].get(c) is not None})
        due = {}
        for c in picked:
            d = stored.get(c)
            if d is None or d.get("next_check_at") is None or d["next_check_at"] > now:
                continue            # changed since indexed (its current entry is in the heap)
            due[c] = d
            self.metrics.detection_lag.observe(max(0.0, (now - d["next_check_at"]).total_seconds()))
        if due:
            states = {c: self._state_of(c, d) for c, d in due.items()}
            partitions_of = {c: d.get("partition") for c, d in due.items()}
            self._check_and_store(list(due), states, due, partitions_of, now)
            self.metrics.dossiers_checked.inc(len(due))
        return len(picked)

    def _check_and_store(self, codes: list[str], states: dict, stored: dict[str, dict],
                         partitions: dict[str, int | None], now: datetime) -> None:
        dossier_writes, finding_writes, previous, to_publish = self._evaluate(
            codes, states, stored, partitions, now)
        held = {w.partition for w in dossier_writes if self.cache.holds(w.partition)}
        if dossier_writes and all(self.cache.holds(w.partition) for w in dossier_writes):
            store_scheduled(self.repo, self.cache, self.partitions, self.publication, self.scheduler,
                            dossier_writes, finding_writes, previous, to_publish, held, now)
            return
        self._write_through(self._stage(dossier_writes, finding_writes, previous, to_publish, now, [], 0))

    # -- publishing -----------------------------------------------------------------------------
    def republish_pending(self, *, partitions: Iterable[int] | None = None, limit: int = 10000) -> int:
        """Publish finding changes stored but not yet published (start-up, partition assignment)."""
        return self.publication.republish_pending(partitions=partitions, limit=limit)

    def flush_marks(self) -> int:
        """Write the deferred "published" marks; returns how many."""
        return self.publication.flush_marks()

    def pending_marks(self) -> int:
        return self.publication.pending_marks()

    # -- internals ------------------------------------------------------------------------------
    def _load(self, where: dict[str, int | None]) -> dict[str, dict]:
        """Stored documents of these dossiers (code -> its partition, None when unknown): from the
        held copy for held partitions (absent there = new), by _id from the store otherwise."""
        out: dict[str, dict] = {}
        ask: list[str] = []
        for code, p in where.items():
            if self.cache.holds(p):
                part = self.cache.docs[p]
                if code in part:
                    raw = part[code]
                    if raw is None:
                        ask.append(code)        # held as a closed marker: read it
                    else:
                        out[code] = self.cache.decode(raw)
            else:
                ask.append(code)
        if ask:
            out.update(self.repo.load_dossiers(ask))
        return out

    def _previous_findings(self, codes: list[str], stored: dict[str, dict]) -> dict[str, dict[str, dict]]:
        previous: dict[str, dict[str, dict]] = {}
        ask: list[str] = []
        for c in codes:
            d = stored.get(c)
            if not d:
                continue
            if self.cache.holds(d.get("partition")):
                # complete for held partitions (even a finding whose dossier write was lost)
                previous[c] = self.cache.findings_of(c)
            elif d.get("finding_ids"):
                ask.extend(d["finding_ids"])
        for fid, d in self.repo.load_findings(ask).items():
            previous.setdefault(d["dossier_code"], {})[fid] = d
        return previous

    def _state_of(self, code: str, doc: dict | None):
        if doc is None:
            return self.engine.new_state(code)
        return self.engine.DossierState.from_doc(strip_dossier(doc))

    def _evaluate(self, codes: list[str], states: dict, stored: dict[str, dict],
                  partitions: dict[str, int | None], now: datetime,
                  agencies: dict[str, set] | None = None, summaries: dict[str, dict] | None = None):
        """Evaluate touched dossiers: (dossier writes, finding writes, their stored findings by
        dossier, finding documents to publish)."""
        previous = self._previous_findings(codes, stored)
        dossier_writes: list[DossierWrite] = []
        finding_writes: list[FindingWrite] = []
        to_publish: list[dict] = []
        for code in codes:
            state = states[code]
            prev = previous.get(code, {})
            old = stored.get(code)
            seen = agencies[code] if agencies else set((old or {}).get("agencies", ()))
            next_check, summary, mine = evaluate_dossier(
                self.engine, self.ctx, code, state, now, prev, partitions.get(code),
                summaries[code] if summaries else (old or {}).get("summary") or {})
            fids = set((old or {}).get("finding_ids", ())) | set(prev)
            for w in mine:
                to_publish.append(finding_doc(w, now))
                fids.add(w.finding_id)
            changed = {w.finding_id for w in mine}
            # changes stored earlier but never published (a crash): out with this touch, unless
            # a batch still being written publishes them
            to_publish.extend(d for fid, d in prev.items() if d.get("pending") and fid not in changed
                              and not self.publication.is_in_flight(fid, d["revision"]))
            w = DossierWrite(code, state.to_doc(), partitions.get(code), next_check,
                             old["rev"] if old and "rev" in old else 0,
                             agencies=sorted(seen), summary=summary, finding_ids=sorted(fids))
            if not mine and unchanged(old, w):
                continue            # nothing to write (a redelivered event, a no-op check)
            finding_writes.extend(mine)
            dossier_writes.append(w)
        return dossier_writes, finding_writes, previous, to_publish

    def _stage(self, dossier_writes, finding_writes, previous, to_publish, now, rejected, n) -> Pending:
        """A prepared batch: the held copies take its documents now (undo kept), its findings
        to publish are noted as in flight (a later batch does not publish them again)."""
        held = {w.partition for w in dossier_writes if self.cache.holds(w.partition)}
        entries: list = []
        remember(self.cache, dossier_writes, finding_writes, previous, now, entries)
        self.publication.hold(to_publish)
        return Pending(rejected, dossier_writes, finding_writes, to_publish, now, held, entries, n)
