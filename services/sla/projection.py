"""What events do to a dossier's projection, shared by the worker (handlers.py) and `motcua rebuild`.

A raw message in (`Incoming`), its event out (`parse_item`) or the reason to dead-letter it
(`Rejected`); the facts an event adds to the dossier (`event_agencies`, `update_summary`); one
dossier's evaluation at an instant against its stored findings (`evaluate_dossier`).
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from shared.contracts.eventcheck import accept_stored
from shared.contracts.events import load_stored
from shared.platform.messaging import decode

from .repository import DossierWrite, FindingWrite, finding_message, strip_dossier

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
    record_people(summary, event, t, data, at)
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


def unchanged(old: dict | None, w: DossierWrite) -> bool:
    """True when writing `w` would store what `old` already holds (bookkeeping aside)."""
    if old is None:
        return False
    return (strip_dossier(old) == w.doc and old.get("partition") == w.partition
            and old.get("next_check_at") == w.next_check_at
            and sorted(old.get("agencies") or ()) == sorted(w.agencies)
            and (old.get("summary") or {}) == w.summary
            and sorted(old.get("finding_ids") or ()) == sorted(w.finding_ids))


def default_engine():
    """The legal engine (shared.domain.engine), imported on first use."""
    import shared.domain.engine as engine
    return engine


def record_people(summary: dict, event: dict, t: str, data: dict, at: datetime) -> None:
    """Who acted (`actors`: event id -> {id, name} of the event's actor), who was assigned
    (`assignees`: event id -> the officer of a dossier.assigned) and the latest of them by
    occurrence (`last_actor`, `last_actor_at`): the dashboard's "cán bộ xử lý" per step.
    Officials only, never applicant data. New dicts, not updates in place: summaries are
    shallow copies of the held ones."""
    who = None
    actor = event.get("actor")
    if isinstance(actor, dict) and actor.get("id"):
        who = {"id": actor["id"], "name": actor.get("name")}
        summary["actors"] = {**(summary.get("actors") or {}), str(event["event_id"]): who}
    if t == "dossier.assigned" and isinstance(data.get("officer"), dict):
        who = {"id": data["officer"]["id"], "name": data["officer"].get("name")}
        summary["assignees"] = {**(summary.get("assignees") or {}), str(event["event_id"]): who}
    if who is not None and (summary.get("last_actor_at") is None or at >= summary["last_actor_at"]):
        summary.update(last_actor=who, last_actor_at=at)
