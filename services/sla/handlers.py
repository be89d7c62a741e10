"""The sla service's work, without Kafka offsets: events in, dossier states and findings out.

For a batch of raw messages (one poll): parse each with `shared.events.load_stored()`, apply it to
its dossier's state with the legal engine, evaluate every touched dossier at `clock.now()`,
reconcile the findings with the stored ones, store states and findings (bulk writes), then
publish the stored-but-unpublished finding changes to `sla.findings` (key = dossier code).
Messages that cannot be parsed or applied come back as `Rejected`: the loop sends them to the
dead-letter topic before it commits.

Idempotent: the engine records applied event ids in the state, findings have deterministic ids,
and a finding change is stored with a revision before it is published, so a crash between store
and publish republishes the same (finding id, revision) on the next touch or at start-up.
"""
from __future__ import annotations

import heapq
import logging
import time
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Iterable

from shared.events import load_stored
from shared.messaging import decode

from .metrics import SlaMetrics
from .repository import (DossierWrite, FindingWrite, Repository, finding_doc, finding_message,
                         strip_dossier)

log = logging.getLogger("motcua.sla")

# a dossier whose evaluation gives a next check in the past is looked at again after this
MIN_RECHECK = timedelta(seconds=60)


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


def change_message(change: Any) -> dict:
    """The finding message (DESIGN.md §7) a reconcile change carries."""
    if isinstance(change, dict):
        return dict(change.get("message") or change)
    msg = getattr(change, "message", None)
    if msg is not None:
        return dict(msg() if callable(msg) else msg)
    if hasattr(change, "to_message"):
        return dict(change.to_message())
    finding = getattr(change, "finding")
    out = dict(finding.to_message())
    state = getattr(change, "state", None)
    if state:
        out["state"] = state
    return out


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
    elif t in ("dossier.refused", "dossier.resolved", "dossier.returned", "dossier.withdrawn"):
        summary[t.split(".", 1)[1] + "_at"] = at
        if t == "dossier.resolved":
            summary["outcome"] = data.get("outcome")


def due_at_of(state, evaluation) -> datetime | None:
    """The legal due instant the engine computed, when it exposes one."""
    for obj in (evaluation, state):
        due = getattr(obj, "due_at", None)
        if isinstance(due, datetime):
            return due
    return None


def _default_engine():
    import shared.engine as engine
    return engine


class SlaHandler:
    """Applies events and scheduled checks; owns no Kafka offsets."""

    def __init__(self, repo: Repository, publisher, topic_findings: str, clock, ctx,
                 engine=None, metrics: SlaMetrics | None = None):
        self.repo = repo
        self.publisher = publisher
        self.topic_findings = topic_findings
        self.clock = clock
        self.ctx = ctx
        self.engine = engine or _default_engine()
        self.metrics = metrics or SlaMetrics()
        self._due: dict[str, tuple[datetime, int | None]] = {}
        self._heap: list[tuple[datetime, str]] = []

    # -- events ---------------------------------------------------------------------------------
    def handle(self, items: list[Incoming]) -> list[Rejected]:
        """Apply a batch of raw messages; returns the ones to dead-letter."""
        rejected: list[Rejected] = []
        parsed: list[tuple[Incoming, dict]] = []
        for item in items:
            try:
                value = decode(item.raw)
            except (UnicodeDecodeError, ValueError) as exc:
                rejected.append(Rejected(item, "invalid_json", f"not UTF-8 JSON: {exc.__class__.__name__}"))
                continue
            try:
                event = load_stored(value)
            except ValueError as exc:
                rejected.append(Rejected(item, "invalid_event", str(exc)[:2000]))
                continue
            if item.key is not None and item.key != event["dossier_code"]:
                rejected.append(Rejected(item, "key_mismatch",
                                         "message key differs from dossier_code"))
                continue
            parsed.append((item, event))
        if not parsed:
            return rejected

        codes = list(dict.fromkeys(ev["dossier_code"] for _, ev in parsed))
        stored = self.repo.load_dossiers(codes)
        states = {c: self._state_of(c, stored.get(c)) for c in codes}
        partitions = {c: stored[c].get("partition") for c in stored}
        agencies = {c: set(stored[c].get("agencies", ())) if c in stored else set() for c in codes}
        summaries = {c: dict(stored[c].get("summary") or {}) if c in stored else {} for c in codes}
        touched: list[str] = []
        for item, event in parsed:
            code = event["dossier_code"]
            try:
                states[code] = self.engine.apply(states[code], event, self.ctx)
            except Exception as exc:   # the engine refuses this event: dead-letter it, go on
                log.warning("event not applicable", extra={"fields": {
                    "event_id": event["event_id"], "type": event["type"], "error": exc.__class__.__name__}})
                rejected.append(Rejected(item, "not_applicable", f"{exc.__class__.__name__}: {exc}"[:2000]))
                continue
            self.metrics.events_applied.inc()
            if item.partition is not None:
                partitions[code] = item.partition
            agencies[code].update(event_agencies(event))
            update_summary(summaries[code], event)
            if code not in touched:
                touched.append(code)
        if touched:
            self._evaluate_and_store(touched, states, stored, partitions, agencies=agencies,
                                     summaries=summaries)
        order = {id(item): i for i, item in enumerate(items)}
        rejected.sort(key=lambda r: order[id(r.item)])
        return rejected

    # -- scheduled checks -----------------------------------------------------------------------
    # The instance keeps an in-memory index (code -> next_check_at) of the dossiers of the
    # partitions it owns, loaded from the store when partitions are assigned and updated on every
    # write it makes: a periodic query on next_check_at would scan the whole collection on
    # FerretDB every 0.5 s. The index is derived data: any instance can rebuild it from the store.
    def load_due_index(self, partitions: Iterable[int]) -> int:
        """(Re)load the index for newly assigned partitions; returns how many dossiers it holds."""
        n = 0
        for code, t, part in self.repo.next_checks(list(partitions)):
            self._index(code, t, part)
            n += 1
        return n

    def forget_partitions(self, partitions: Iterable[int]) -> None:
        gone = set(partitions)
        self._due = {c: v for c, v in self._due.items() if v[1] not in gone}

    def _index(self, code: str, t: datetime | None, partition: int | None) -> None:
        if t is None:
            self._due.pop(code, None)
            return
        self._due[code] = (t, partition)
        heapq.heappush(self._heap, (t, code))

    def check_due(self, partitions: Iterable[int], limit: int = 500) -> int:
        """Evaluate dossiers of these partitions whose next_check_at has passed; returns how many."""
        parts = set(partitions)
        if not parts:
            return 0
        now = self.clock.now()
        codes: list[str] = []
        others: list[tuple[datetime, str]] = []
        while self._heap and self._heap[0][0] <= now and len(codes) < limit:
            t, code = heapq.heappop(self._heap)
            cur = self._due.get(code)
            if cur is None or cur[0] != t or code in codes:
                continue            # stale heap entry
            if cur[1] not in parts:
                others.append((t, code))    # not asked for now: keep it
                continue
            codes.append(code)
        for entry in others:
            heapq.heappush(self._heap, entry)
        if not codes:
            return 0
        stored = self.repo.load_dossiers(codes)
        due = {}
        for c in codes:
            d = stored.get(c)
            if d is None or d.get("next_check_at") is None or d["next_check_at"] > now:
                self._index(c, d.get("next_check_at") if d else None, d.get("partition") if d else None)
                continue            # changed by another instance since we indexed it
            due[c] = d
            self.metrics.detection_lag.observe(max(0.0, (now - d["next_check_at"]).total_seconds()))
        if due:
            states = {c: self._state_of(c, d) for c, d in due.items()}
            partitions_of = {c: d.get("partition") for c, d in due.items()}
            self._evaluate_and_store(list(due), states, due, partitions_of, now=now)
            self.metrics.dossiers_checked.inc(len(due))
        return len(codes)

    # -- publishing -----------------------------------------------------------------------------
    def republish_pending(self, *, partitions: Iterable[int] | None = None, limit: int = 10000) -> int:
        """Publish finding changes stored but not yet published (start-up, partition assignment)."""
        return self._publish(self.repo.pending_findings(partitions=partitions, limit=limit))

    def _publish(self, docs: list[dict]) -> int:
        """Publish stored finding documents, wait for the acks, then mark them published."""
        if not docs:
            return 0
        futures = []
        send = getattr(self.publisher, "send", None)
        for d in docs:
            msg = finding_message(d)
            if send is not None:
                futures.append((d, send(self.topic_findings, d["dossier_code"], msg)))
            else:
                self.publisher.publish(self.topic_findings, d["dossier_code"], msg)
                futures.append((d, None))
        for d, fut in futures:
            if fut is not None:
                fut.get(timeout=30)
        self.repo.mark_published([(d["_id"], d["revision"]) for d, _ in futures])
        for d, _ in futures:
            self.metrics.findings_published.labels(d.get("state", "?")).inc()
        return len(futures)

    # -- internals ------------------------------------------------------------------------------
    def _state_of(self, code: str, doc: dict | None):
        if doc is None:
            return self.engine.new_state(code)
        return self.engine.DossierState.from_doc(strip_dossier(doc))

    def _evaluate_and_store(self, codes: list[str], states: dict, stored: dict[str, dict],
                            partitions: dict[str, int | None], now: datetime | None = None,
                            agencies: dict[str, set] | None = None,
                            summaries: dict[str, dict] | None = None) -> None:
        now = now or self.clock.now()
        ids = [fid for c in codes for fid in (stored.get(c) or {}).get("finding_ids", ())]
        previous: dict[str, dict[str, dict]] = {}
        for fid, d in self.repo.load_findings(ids).items():
            previous.setdefault(d["dossier_code"], {})[fid] = d
        dossier_writes: list[DossierWrite] = []
        finding_writes: list[FindingWrite] = []
        to_publish: list[dict] = []
        for code in codes:
            state = states[code]
            evaluation = self.engine.evaluate(state, now, self.ctx)
            prev = previous.get(code, {})
            changes = self.engine.reconcile({fid: finding_message(d) for fid, d in prev.items()},
                                            evaluation, now)
            next_check = evaluation.next_check_at
            if next_check is not None and next_check <= now:
                log.warning("engine gave a next check in the past", extra={"fields": {"dossier_code": code}})
                next_check = now + MIN_RECHECK
            old = stored.get(code)
            seen = agencies[code] if agencies else set((old or {}).get("agencies", ()))
            summary = dict(summaries[code] if summaries else (old or {}).get("summary") or {})
            due = due_at_of(state, evaluation)
            if due is not None:
                summary["due_at"] = due
            if getattr(state, "procedure_field", None):
                summary["field"] = state.procedure_field
            fids = set((old or {}).get("finding_ids", ()))
            for ch in changes:
                msg = change_message(ch)
                fid = msg["finding_id"]
                before = prev.get(fid)
                w = FindingWrite(fid, msg, partitions.get(code),
                                 revision=(before["revision"] if before else 0) + 1,
                                 published_revision=(before.get("published_revision", 0) if before else 0))
                finding_writes.append(w)
                to_publish.append(finding_doc(w, now))
                fids.add(fid)
            changed = {w.finding_id for w in finding_writes}
            # changes stored earlier but never published (a crash): out with this touch
            to_publish.extend(d for fid, d in prev.items() if d.get("pending") and fid not in changed)
            dossier_writes.append(DossierWrite(code, state.to_doc(), partitions.get(code), next_check,
                                               old["rev"] if old and "rev" in old else 0,
                                               agencies=sorted(seen), summary=summary,
                                               finding_ids=sorted(fids)))
        t0 = time.perf_counter()
        self.repo.save(dossier_writes, finding_writes, now)
        log.debug("stored", extra={"fields": {
            "dossiers": len(dossier_writes), "findings": len(finding_writes),
            "seconds": round(time.perf_counter() - t0, 4)}})
        for w in dossier_writes:
            self._index(w.code, w.next_check_at, w.partition)
        self._publish(to_publish)
