"""The sla service's work, without Kafka offsets: events in, dossier states and findings out.

`handle()` = `prepare()` (parse, engine, evaluate, reconcile; held copies updated, undo kept) +
`write()` (store and publish: I/O only) + `finish()` or `abandon()`. Messages that cannot be
parsed or applied come back as `Rejected` for the loop to dead-letter. Protocol (delivery, held
partitions, scheduler, pipelined writes): docs/architecture.md, "sla".
"""
from __future__ import annotations

import heapq
import logging
import time
import uuid
import zlib
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Iterable

from shared.contracts.eventcheck import accept_stored
from shared.contracts.events import load_stored
from shared.platform.messaging import decode

from .alarms import Alarm, OpsAlerts, raise_alarms, reference_data_problem
from .metrics import SlaMetrics
from .repository import (DossierWrite, FindingWrite, Repository, StaleWrite, dossier_doc,
                         finding_doc, finding_message, strip_dossier)

log = logging.getLogger("motcua.sla")

# a dossier whose evaluation gives a next check in the past is looked at again after this
MIN_RECHECK = timedelta(seconds=60)
# held dossiers whose next check is further than this go to day buckets instead of the heap
FAR_HORIZON_S = 6 * 3600
FAR_BUCKET_S = 86400


@dataclass
class Incoming:
    """One raw message; `origin` is opaque here (the loop's topic/partition/offset)."""
    key: str | None
    raw: bytes
    partition: int | None = None
    origin: Any = None


@dataclass
class Rejected:
    item: Incoming
    reason: str          # machine code: invalid_json, invalid_event, key_mismatch, not_applicable
    error: str           # human-readable, no personal data


_ABSENT = object()      # in an undo entry: nothing was held


@dataclass
class Pending:
    """A batch applied in memory (`SlaHandler.prepare`) whose store write and publish are to do."""
    rejected: list[Rejected]
    dossiers: list[DossierWrite]
    findings: list[FindingWrite]
    to_publish: list[dict]          # stored finding documents to publish after the write
    now: datetime
    held: set                       # held partitions it writes
    undo: list                      # previous held copies (SlaHandler._undo)
    items: int = 0                  # messages in the batch (dead-letter accounting)
    stored: bool = False            # the store write completed
    done: list = field(default_factory=list)   # (finding id, revision) published


def event_agencies(event: dict) -> set[str]:
    """Agencies an event names: where it happened, and the handling/transfer/consultation target."""
    out = {event["agency_code"]}
    data = event.get("data") or {}
    for k in ("handling_agency_code", "to_agency_code", "from_agency_code"):
        if data.get(k):
            out.add(data[k])
    return out


def update_summary(summary: dict, event: dict) -> None:
    """Record the facts reports count (Biểu 06/VPCP/KSTT, Decision 766) from one event.

    Idempotent: applying the same event again writes the same values.
    """
    t, data, at = event["type"], event.get("data") or {}, event["occurred_at"]
    if t == "dossier.received":
        comps = list(dict.fromkeys(data.get("components") or []))
        summary.update(procedure_code=data.get("procedure_code"), channel=data.get("channel"),
                       received_at=at, received_agency=event["agency_code"],
                       handling_agency=data.get("handling_agency_code") or event["agency_code"],
                       components_n=len(comps),
                       digitized_n=len(set(data.get("digitized") or []) & set(comps)))
    elif t == "dossier.transferred":
        summary["handling_agency"] = data["to_agency_code"]
    elif t == "dossier.supplement_requested":
        summary["supplement_requested"] = True
    elif t == "dossier.apology_issued":
        summary["extended"] = True          # apology / extension request (Đ19 k6 NĐ 118)
    elif t in ("dossier.refused", "dossier.resolved", "dossier.returned", "dossier.withdrawn",
               "dossier.stopped"):
        summary[t.split(".", 1)[1] + "_at"] = at
        if t == "dossier.resolved":
            summary["outcome"] = data.get("outcome")


def parse_item(item: Incoming) -> dict | Rejected:
    """The event a raw message carries, or why it must be dead-lettered."""
    try:
        value = decode(item.raw)
    except (UnicodeDecodeError, ValueError) as exc:
        return Rejected(item, "invalid_json", f"not UTF-8 JSON: {exc.__class__.__name__}")
    event = accept_stored(value)        # valid messages: the compiled fast path
    if event is None:
        try:
            event = load_stored(value)      # anything else: marshmallow, every error named
        except ValueError as exc:
            return Rejected(item, "invalid_event", str(exc)[:2000])
    if item.key is not None and item.key != event["dossier_code"]:
        return Rejected(item, "key_mismatch", "message key differs from dossier_code")
    return event


def evaluate_dossier(engine, ctx, code: str, state, now: datetime, prev: dict[str, dict],
                     partition: int | None, summary: dict) -> tuple[datetime | None, dict, list[FindingWrite]]:
    """Evaluate one dossier at `now` against its stored findings `prev` (id -> stored document):
    its next check, its summary with the due date and field, and the finding changes to store
    (each at the next revision). Shared by the worker and `motcua rebuild`."""
    evaluation = engine.evaluate(state, now, ctx)
    changes = engine.reconcile({fid: finding_message(d) for fid, d in prev.items()}, evaluation, now)
    next_check = evaluation.next_check_at
    if next_check is not None and next_check <= now:
        log.warning("engine gave a next check in the past", extra={"fields": {"dossier_code": code}})
        next_check = now + MIN_RECHECK
    summary = dict(summary)
    if state.due_at is not None:
        summary["due_at"] = state.due_at
    if state.procedure_field:
        summary["field"] = state.procedure_field
    if getattr(state, "ruleset", None):
        summary["ruleset"] = state.ruleset        # the rule set of its receipt (reports say which)
    writes: list[FindingWrite] = []
    for ch in changes:
        msg = dict(ch.message)
        fid = msg["finding_id"]
        before = prev.get(fid)
        writes.append(FindingWrite(fid, msg, partition,
                                   revision=(before["revision"] if before else 0) + 1,
                                   published_revision=(before.get("published_revision", 0) if before else 0),
                                   new=before is None))
    return next_check, summary, writes


def default_engine():
    """The legal engine (shared.domain.engine), imported on first use."""
    import shared.domain.engine as engine
    return engine


class StateCache:
    """The stored documents of the dossiers of the partitions this instance owns (derived data).

    Loaded in one scan of `dossiers` and one of `findings` when partitions are assigned, kept in
    step with every write this instance makes, dropped when the partitions are revoked (and
    rebuilt from the store on the next assignment or after a StaleWrite). Documents are held as
    compressed BSON (what the store returned, with its millisecond instants) to keep memory small;
    a closed dossier (no next check) is held as a marker only and read by _id if touched again.
    MongoDB stays the source of truth: nothing here is written anywhere.
    """

    def __init__(self):
        from bson.codec_options import CodecOptions
        self._opts = CodecOptions(tz_aware=True)
        self._zdict: bytes | None = None
        self.docs: dict[int, dict[str, bytes | None]] = {}     # partition -> code -> doc | marker
        self.findings: dict[str, bytes] = {}                    # code -> {"f": [finding docs]}

    def holds(self, partition: int | None) -> bool:
        return partition is not None and partition in self.docs

    def partitions(self) -> set[int]:
        return set(self.docs)

    # Held documents are BSON compressed with raw deflate against a preset dictionary: the first
    # document this cache encodes (documents of one office share most of their bytes: field
    # names, codes, rule sets), so a held document takes a fraction of its BSON size.
    def encode(self, doc: dict) -> bytes:
        import bson
        return self.compress(bson.encode(doc))

    def compress(self, raw: bytes) -> bytes:
        """A document's BSON, compressed as held."""
        if self._zdict is None:
            self._zdict = raw
        c = zlib.compressobj(6, zlib.DEFLATED, -15, 9, zlib.Z_DEFAULT_STRATEGY, self._zdict)
        return c.compress(raw) + c.flush()

    def decode(self, packed: bytes) -> dict:
        import bson
        d = zlib.decompressobj(-15, self._zdict)
        return bson.decode(d.decompress(packed) + d.flush(), codec_options=self._opts)

    def put_dossier(self, partition: int, doc: dict, raw: bytes | None = None) -> None:
        """Hold a stored dossier document (`raw`: its BSON when already encoded)."""
        part = self.docs.setdefault(partition, {})
        if doc.get("next_check_at") is None:
            part[doc["_id"]] = None
        else:
            part[doc["_id"]] = self.compress(raw) if raw is not None else self.encode(doc)

    def put_findings(self, code: str, docs: list[dict]) -> None:
        if docs:
            self.findings[code] = self.encode({"f": docs})
        else:
            self.findings.pop(code, None)

    def findings_of(self, code: str) -> dict[str, dict]:
        raw = self.findings.get(code)
        return {d["_id"]: d for d in self.decode(raw)["f"]} if raw else {}

    def drop(self, partitions: Iterable[int]) -> None:
        for p in partitions:
            for code in self.docs.pop(p, {}):
                self.findings.pop(code, None)

    def size(self) -> int:
        return sum(len(d) for d in self.docs.values())


class Loading:
    """Partitions being loaded into the held copy (`SlaHandler.start_assign`), step by step."""

    def __init__(self, partitions: list[int], steps):
        self.partitions = partitions
        self._steps = steps
        self.result: tuple[int, int] | None = None
        self.started = time.perf_counter()

    def step(self, budget_s: float) -> bool:
        """Load for about `budget_s` seconds; True once everything is loaded."""
        if self.result is not None:
            return True
        end = time.monotonic() + budget_s
        try:
            while True:
                next(self._steps)
                if time.monotonic() >= end:
                    return False
        except StopIteration as stop:
            self.result = stop.value or (0, 0)
            return True

    def cancel(self) -> None:
        self._steps.close()


class SlaHandler:
    """Applies events and scheduled checks; owns no Kafka offsets."""

    def __init__(self, repo: Repository, publisher, topic_findings: str, clock, ctx,
                 engine=None, metrics: SlaMetrics | None = None, defer_marks: bool = False,
                 ops_alerts: OpsAlerts | None = None):
        self.repo = repo
        self.ops_alerts = ops_alerts        # where reference-data alarms are recorded (alarms.py)
        self.publisher = publisher
        self.topic_findings = topic_findings
        self.clock = clock
        self.ctx = ctx
        self.engine = engine or default_engine()
        self.metrics = metrics or SlaMetrics()
        self.cache = StateCache()
        # scheduler: min-heap of (next_check_at as POSIX seconds, partition, code); an entry is
        # current when the dossier's document still has that next_check_at (stale ones skipped)
        self._heap: list[tuple[float, int | None, str]] = []
        # held dossiers whose next check is in a day bucket beyond the one FAR_HORIZON_S from now
        # reaches: only their code, in day buckets
        # (a code costs far less memory than a heap entry); moved into the heap as the day nears
        self._far: dict[int, list[str]] = {}
        # "published" marks (fid, revision) not yet written: the loop writes them when idle
        # (defer_marks) — losing them in a crash only republishes the same revision
        self.defer_marks = defer_marks
        self._marks: list[tuple[str, int]] = []
        self._owner: dict[int, str] = {}    # held partition -> token written at its assignment
        # (finding id, revision) -> prepared batches publishing it, not finished yet
        self._publishing: dict[tuple[str, int], int] = {}

    # -- events ---------------------------------------------------------------------------------
    def handle(self, items: list[Incoming]) -> list[Rejected]:
        """Apply a batch of raw messages, store and publish its effects; returns the ones to
        dead-letter. `prepare()`, `write()` and `finish()` (or `abandon()`) in one call."""
        pending = self.prepare(items)
        self._write_through(pending)
        return pending.rejected

    def _write_through(self, pending: "Pending") -> None:
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

    def prepare(self, items: list[Incoming]) -> "Pending":
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

    def write(self, pending: "Pending") -> None:
        """Store a prepared batch, then publish its finding changes and wait for the acks.

        Only I/O on the repository and the publisher (both thread-safe), no held state: the loop
        runs it on its writer thread while the next batch is prepared. `pending.stored` says
        whether the store write completed (a failure after it is a failed publish)."""
        if pending.dossiers or pending.findings:
            self.repo.save(pending.dossiers, pending.findings, pending.now)
        pending.stored = True
        log.debug("stored", extra={"fields": {
            "dossiers": len(pending.dossiers), "findings": len(pending.findings)}})
        pending.done = self._send(pending.to_publish)

    def finish(self, pending: "Pending") -> None:
        """After `write()` succeeded: schedule the dossiers' next checks, record the findings as
        published (held copies, deferred marks, metrics)."""
        self._release(pending)
        for w in pending.dossiers:
            self._push(w.code, w.next_check_at, w.partition)
        self._published(pending.to_publish, pending.done)

    def abandon(self, pending: "Pending", exc: BaseException | None) -> None:
        """After `write()` failed (or was skipped because an earlier batch failed), newest batch
        first: nothing stored → the held copies go back to what they were before `prepare()`;
        stored but not published → they stay (they match the store; the pending findings go
        out on the next touch or assignment); StaleWrite → another instance wrote: the held
        partitions are reloaded from the store."""
        self._release(pending)
        if isinstance(exc, StaleWrite):
            self._undo(pending.undo)
            self._reload(pending.held)
        elif pending.stored:
            for w in pending.dossiers:
                self._push(w.code, w.next_check_at, w.partition)
        else:
            self._undo(pending.undo)

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

    def due_now(self) -> bool:
        """True when the scheduler has a check due now (maybe a stale entry)."""
        now_ts = self.clock.now().timestamp()
        self._promote(now_ts)
        return bool(self._heap) and self._heap[0][0] <= now_ts

    # -- partitions -----------------------------------------------------------------------------
    def assign(self, partitions: Iterable[int], *, claim: bool = True) -> tuple[int, int]:
        """Hold newly assigned partitions: record this instance as their latest owner (`claim`),
        load their dossiers and findings (one scan of each collection), index their next checks,
        publish what was stored but never published. Returns (dossiers held, findings republished)."""
        loading = self.start_assign(partitions, claim=claim)
        while not loading.step(3600.0):
            pass
        return loading.result

    def start_assign(self, partitions: Iterable[int], *, claim: bool = True) -> "Loading":
        """`assign()` in steps: the loop drives `Loading.step()` between polls, so that loading a
        large partition (10^5-10^6 dossiers: minutes on FerretDB) never keeps it from polling
        (a consumer that does not poll within max.poll.interval.ms is put out of the group)."""
        parts = sorted(set(partitions))
        if parts and claim:
            token = uuid.uuid4().hex
            self.repo.claim_partitions(parts, token, self.clock.now())
            self._owner.update({p: token for p in parts})
        self.cache.drop(parts)
        for p in parts:
            self.cache.docs[p] = {}
        return Loading(parts, self._load_steps(parts))

    def _load_steps(self, parts: list[int]):
        """Generator behind `Loading`: yields every few hundred documents, returns
        (dossiers held, findings republished)."""
        if not parts:
            return 0, 0
        n = 0
        for d in self.repo.dossiers_in(parts):
            p = d.get("partition")
            if p not in self.cache.docs:
                continue
            self.cache.put_dossier(p, d)
            self._push(d["_id"], d.get("next_check_at"), p)
            n += 1
            if n % 200 == 0:
                yield
        by_code: dict[str, list[dict]] = {}
        pending: list[dict] = []
        for i, f in enumerate(self.repo.findings_in(parts)):
            if f.get("partition") in self.cache.docs:
                by_code.setdefault(f["dossier_code"], []).append(f)
                if f.get("pending"):
                    pending.append(f)
            if i % 500 == 499:
                yield
        for code, docs in by_code.items():
            self.cache.put_findings(code, docs)
        pending.sort(key=lambda d: d["updated_at"])
        return n, self._publish(pending)

    def forget_partitions(self, partitions: Iterable[int]) -> None:
        """Revoked: drop what is held for these partitions (the new owner reloads from the store)."""
        gone = set(partitions)
        for p in gone:
            self._owner.pop(p, None)
        self.cache.drop(gone)
        self._heap = [e for e in self._heap if e[1] not in gone]
        heapq.heapify(self._heap)
        held = list(self.cache.docs.values())
        self._far = {k: kept for k, codes in self._far.items()
                     if (kept := [c for c in codes if any(c in part for part in held)])}

    def load_due_index(self, partitions: Iterable[int]) -> int:
        """Compatibility name of `assign()` (returns the number of dossiers held)."""
        return self.assign(partitions)[0]

    # -- scheduled checks -----------------------------------------------------------------------
    # The scheduler never queries the store to find what is due: the min-heap holds the next
    # checks of every dossier this instance wrote or loaded when its partitions were assigned.
    def check_due(self, partitions: Iterable[int], limit: int = 500) -> int:
        """Evaluate dossiers of these partitions whose next_check_at has passed; returns how many."""
        parts = set(partitions)
        if not parts:
            return 0
        now = self.clock.now()
        now_ts = now.timestamp()
        picked: dict[str, int | None] = {}
        others: list[tuple[float, int | None, str]] = []
        self._promote(now_ts)
        while self._heap and self._heap[0][0] <= now_ts and len(picked) < limit:
            entry = heapq.heappop(self._heap)
            if entry[1] not in parts:
                others.append(entry)    # not asked for now: keep it
                continue
            if entry[2] not in picked:
                picked[entry[2]] = entry[1]
        for entry in others:
            heapq.heappush(self._heap, entry)
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
            self._evaluate_and_store(list(due), states, due, partitions_of, now, scheduled=True)
            self.metrics.dossiers_checked.inc(len(due))
        return len(picked)

    # -- publishing -----------------------------------------------------------------------------
    def republish_pending(self, *, partitions: Iterable[int] | None = None, limit: int = 10000) -> int:
        """Publish finding changes stored but not yet published (start-up, partition assignment)."""
        return self._publish(self.repo.pending_findings(partitions=partitions, limit=limit))

    def flush_marks(self) -> int:
        """Write the deferred "published" marks; returns how many."""
        marks, self._marks = self._marks, []
        if marks:
            try:
                self.repo.mark_published(marks)
            except Exception:
                self._marks = marks + self._marks
                raise
        return len(marks)

    def pending_marks(self) -> int:
        return len(self._marks)

    def _publish(self, docs: list[dict]) -> int:
        """Publish stored finding documents, wait for the acks, then mark them published."""
        if not docs:
            return 0
        self._published(docs, self._send(docs))
        return len(docs)

    def _send(self, docs: list[dict]) -> list[tuple[str, int]]:
        """Publish stored finding documents and wait for the acks; (finding id, revision) of each.
        Thread-safe (the publisher only)."""
        futures = [self.publisher.send(self.topic_findings, d["dossier_code"], finding_message(d))
                   for d in docs]
        for fut in futures:
            fut.get(timeout=30)
        return [(d["_id"], d["revision"]) for d in docs]

    def _published(self, docs: list[dict], done: list[tuple[str, int]]) -> None:
        """Record published finding documents: deferred marks, held copies, metrics."""
        if not docs:
            return
        self._marks.extend(done)
        if not self.defer_marks:
            self.flush_marks()
        # the held copies are published now (the store follows with the marks)
        revs = dict(done)
        for code in {d["dossier_code"] for d in docs}:
            if code in self.cache.findings:
                held = self.cache.findings_of(code)
                for fid, f in held.items():
                    if revs.get(fid) == f["revision"]:
                        f["pending"], f["published_revision"] = False, f["revision"]
                self.cache.put_findings(code, list(held.values()))
        for d in docs:
            self.metrics.findings_published.labels(d.get("state", "?")).inc()

    # -- internals ------------------------------------------------------------------------------
    def _push(self, code: str, t: datetime | None, partition: int | None) -> None:
        if t is None:
            return
        ts = t.timestamp()
        key = int(ts // FAR_BUCKET_S)
        # a far bucket only when _promote would not take it back at once: promoting decodes the
        # held document to read its next check, a cost paid again for every new dossier whose
        # next check falls later in the current bucket
        if self.cache.holds(partition) and \
                key > int((self.clock.now().timestamp() + FAR_HORIZON_S) // FAR_BUCKET_S):
            self._far.setdefault(key, []).append(code)
        else:
            heapq.heappush(self._heap, (ts, partition, code))

    def _promote(self, now_ts: float) -> None:
        """Move the far buckets that come within FAR_HORIZON_S into the heap (their documents say
        when; a code no longer held, or without a next check, is dropped)."""
        if not self._far:
            return
        limit = int((now_ts + FAR_HORIZON_S) // FAR_BUCKET_S)
        for key in sorted(k for k in self._far if k <= limit):
            for code in self._far.pop(key):
                for p, part in self.cache.docs.items():
                    if code in part:
                        raw = part[code]
                        t = self.cache.decode(raw).get("next_check_at") if raw is not None else None
                        if t is not None:
                            heapq.heappush(self._heap, (t.timestamp(), p, code))
                        break

    def scheduled(self) -> int:
        """Entries in the scheduler (heap and far buckets; stale ones included)."""
        return len(self._heap) + sum(len(v) for v in self._far.values())

    def _load(self, where: dict[str, int | None]) -> dict[str, dict]:
        """Stored documents of these dossiers (code -> its partition, None when unknown): from the
        cache for held partitions (absent there = new), by _id from the store otherwise."""
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
                              and (fid, d["revision"]) not in self._publishing)
            w = DossierWrite(code, state.to_doc(), partitions.get(code), next_check,
                             old["rev"] if old and "rev" in old else 0,
                             agencies=sorted(seen), summary=summary, finding_ids=sorted(fids))
            if not mine and _unchanged(old, w):
                continue            # nothing to write (a redelivered event, a no-op check)
            finding_writes.extend(mine)
            dossier_writes.append(w)
        return dossier_writes, finding_writes, previous, to_publish

    def _evaluate_and_store(self, codes: list[str], states: dict, stored: dict[str, dict],
                            partitions: dict[str, int | None], now: datetime,
                            scheduled: bool = False) -> None:
        dossier_writes, finding_writes, previous, to_publish = self._evaluate(
            codes, states, stored, partitions, now)
        held = {w.partition for w in dossier_writes if self.cache.holds(w.partition)}
        if scheduled and dossier_writes and all(self.cache.holds(w.partition) for w in dossier_writes):
            self._store_scheduled(dossier_writes, finding_writes, previous, to_publish, held, now)
            return
        self._write_through(self._stage(dossier_writes, finding_writes, previous, to_publish, now, [], 0))

    def _stage(self, dossier_writes, finding_writes, previous, to_publish, now, rejected, n) -> "Pending":
        """A prepared batch: the held copies take its documents now (undo kept), its findings
        to publish are noted as in flight (a later batch does not publish them again)."""
        held = {w.partition for w in dossier_writes if self.cache.holds(w.partition)}
        undo: list = []
        self._remember(dossier_writes, finding_writes, previous, now, undo)
        for d in to_publish:
            key = (d["_id"], d["revision"])
            self._publishing[key] = self._publishing.get(key, 0) + 1
        return Pending(rejected, dossier_writes, finding_writes, to_publish, now, held, undo, n)

    def _release(self, pending: "Pending") -> None:
        for d in pending.to_publish:
            key = (d["_id"], d["revision"])
            left = self._publishing.get(key, 0) - 1
            if left > 0:
                self._publishing[key] = left
            else:
                self._publishing.pop(key, None)

    def _undo(self, undo: list) -> None:
        """Put back the held copies a prepared batch replaced (newest change first). A finding
        recorded as published since keeps that mark (it went out with an earlier batch)."""
        for p, code, old_doc, old_findings in reversed(undo):
            part = self.cache.docs.get(p)
            if part is None:
                continue                # dropped since (revoked): nothing held to put back
            if old_doc is _ABSENT:
                part.pop(code, None)
            else:
                part[code] = old_doc
            cur = self.cache.findings.get(code)
            if old_findings is _ABSENT:
                self.cache.findings.pop(code, None)
                continue
            self.cache.findings[code] = old_findings
            if cur is not None and cur is not old_findings:
                sent = {d["_id"]: d["revision"] for d in self.cache.decode(cur)["f"] if not d.get("pending")}
                docs = self.cache.decode(old_findings)["f"]
                flip = [d for d in docs if d.get("pending") and sent.get(d["_id"]) == d["revision"]]
                for d in flip:
                    d["pending"], d["published_revision"] = False, d["revision"]
                if flip:
                    self.cache.put_findings(code, docs)

    def _store_scheduled(self, dossier_writes, finding_writes, previous, to_publish, held, now) -> None:
        """Scheduled checks of held dossiers: findings first, then the dossiers.

        New findings are inserted and published before the dossier documents are replaced (an
        update is expensive on FerretDB); the order and its guards: docs/architecture.md,
        "Scheduler".
        """
        owners = self.repo.owners(sorted(held))
        lost = {p for p in held if owners.get(p) != self._owner.get(p)}
        if lost:
            log.warning("partitions owned by another instance", extra={"fields": {"partitions": sorted(lost)}})
            self.forget_partitions(lost)
            raise StaleWrite(f"partitions {sorted(lost)} were assigned to another instance")
        try:
            self.repo.save([], finding_writes, now)
        except StaleWrite:
            self._reload(held)
            raise
        self._remember(dossier_writes, finding_writes, previous, now)
        self._publish(to_publish)
        try:
            self.repo.save(dossier_writes, [], now)
        except Exception:
            self._reload(held)      # what we hold says written: read back what is
            raise
        for w in dossier_writes:
            self._push(w.code, w.next_check_at, w.partition)

    def _reload(self, partitions: set[int]) -> None:
        """Re-read held partitions from the store (ownership unchanged)."""
        if partitions:
            owners = {p: self._owner.get(p) for p in partitions}
            self.forget_partitions(partitions)
            self._owner.update({p: t for p, t in owners.items() if t})
            self.assign(partitions, claim=False)

    def _remember(self, dossiers: list[DossierWrite], findings: list[FindingWrite],
                  previous: dict[str, dict[str, dict]], now: datetime, undo: list | None = None) -> None:
        """Keep the held copies in step with what is stored (or about to be: `undo` receives
        (partition, code, previous dossier, previous findings) for each held dossier replaced).
        Held copies are BSON: instants are kept at the store's millisecond precision."""
        import bson

        by_code: dict[str, list[FindingWrite]] = {}
        for f in findings:
            by_code.setdefault(f.message["dossier_code"], []).append(f)
        for w in dossiers:
            if not self.cache.holds(w.partition):
                continue
            if undo is not None:
                undo.append((w.partition, w.code, self.cache.docs[w.partition].get(w.code, _ABSENT),
                             self.cache.findings.get(w.code, _ABSENT)))
            doc = dossier_doc(w, now)
            w.raw = bson.encode(doc)        # the store write sends these bytes as they are
            self.cache.put_dossier(w.partition, doc, w.raw)
            if w.code in by_code or w.code in self.cache.findings:
                held = dict(previous.get(w.code) or {})
                for f in by_code.get(w.code, ()):
                    held[f.finding_id] = finding_doc(f, now)
                self.cache.put_findings(w.code, list(held.values()))


def _unchanged(old: dict | None, w: DossierWrite) -> bool:
    """True when writing `w` would store what `old` already holds (bookkeeping aside)."""
    if old is None:
        return False
    return (strip_dossier(old) == w.doc and old.get("partition") == w.partition
            and old.get("next_check_at") == w.next_check_at
            and sorted(old.get("agencies") or ()) == sorted(w.agencies)
            and (old.get("summary") or {}) == w.summary
            and sorted(old.get("finding_ids") or ()) == sorted(w.finding_ids))
