"""notify's changes, told to the readers that keep a copy (the dashboard's in-memory view).

`PublishingStore` is the `NotifyStore` with each write that changes how a finding stands with its
recipients also handed, after the write, to `emit(key, message)`; the worker's emit publishes to
`changes_topic(settings)` (key: the finding id, so one finding's changes keep their order).
The readers load notify's collections once and apply these messages from then on: on the
default store (FerretDB v1.24) a reader cannot ask notify's collections what changed, or look up
a finding's notifications, without reading whole collections.

Messages (JSON; instants ISO 8601), each field set to the value written:
- `{"op": "finding", "finding_id", "fields": {episode, level, repeats, acked_at, acked_by,
  next_escalation_at, next_repeat_at, state, revision}}` (those written);
- `{"op": "notification", "finding_id", "notification": {id, recipient, person, recipient_name,
  recipient_title, role, channel, level, kind, seq, episode, status, reason, error, created_at}}`:
  planned (inserted);
- `{"op": "outcome", "finding_id"?, "id", "fields": {status, sent_at | failed_at | cancelled_at,
  error, attempts}}`: sent (its marker), failed, cancelled, back to pending for a retry;
- `{"op": "cancel", "finding_id", "kinds", "min_level", "keep", "at", "reason"}`: the finding's
  pending notifications of those kinds and levels cancelled (`cancel_pending`);
- `{"op": "ack", "finding_id", "recipient", "by", "via", "at", "note"}`.

Best effort: published after the write, never failing it. A message lost (broker down, crash in
between) leaves a reader's copy stale until it loads again; acknowledgements are also polled.
"""
from __future__ import annotations

import logging
from datetime import datetime

from .store import SCHEDULE_DEFAULTS, NotifyStore

log = logging.getLogger("motcua.notify.changes")

FINDING_FIELDS = ("episode", "level", "repeats", "acked_at", "acked_by", "next_escalation_at",
                  "next_repeat_at", "state", "revision")
NOTIFICATION_FIELDS = ("recipient", "person", "recipient_name", "recipient_title", "role", "channel", "level",
                       "kind", "seq", "episode", "status", "reason", "error", "created_at")
OUTCOME_FIELDS = ("status", "sent_at", "failed_at", "cancelled_at", "error", "attempts")
_NID_MEMORY = 50_000      # notification id -> finding id, to key outcomes by finding


def changes_topic(settings) -> str:
    """The topic of notify's changes: beside the findings topic it follows (unique per test run
    as that one is), one of `Settings.topics()`."""
    return settings.topic_findings_notify


def _pick(doc: dict, keys) -> dict:
    return {k: doc[k] for k in keys if k in doc}


class PublishingStore(NotifyStore):
    def __init__(self, db, emit):
        super().__init__(db)
        self._emit_fn = emit
        self._fid_of: dict[str, str] = {}

    def _emit(self, key: str, msg: dict) -> None:
        try:
            self._emit_fn(key, msg)
        except Exception:   # noqa: BLE001 - the write is done; a reader reloads (module docstring)
            log.warning("notify change not published", exc_info=True)

    def _remember(self, nid, fid: str) -> None:
        if len(self._fid_of) >= _NID_MEMORY:
            self._fid_of.clear()
        self._fid_of[str(nid)] = fid

    def _finding(self, fid: str, fields: dict) -> None:
        fields = _pick(fields, FINDING_FIELDS)
        if fields:
            self._emit(fid, {"op": "finding", "finding_id": fid, "fields": fields})

    def _outcome(self, nid, fields: dict, fid: str | None = None) -> None:
        fid = fid or self._fid_of.get(str(nid))
        msg = {"op": "outcome", "id": str(nid), "fields": _pick(fields, OUTCOME_FIELDS)}
        if fid:
            msg["finding_id"] = fid
        self._emit(fid or str(nid), msg)

    # -- the writes -------------------------------------------------------------------------------
    def upsert_finding(self, doc: dict):
        stored, prev = super().upsert_finding(doc)
        if stored:
            self._finding(doc["_id"], doc if prev is not None else {**SCHEDULE_DEFAULTS, **doc})
        return stored, prev

    def insert_new_findings(self, docs: list[dict]) -> set:
        inserted = super().insert_new_findings(docs)
        for d in docs:
            if d["_id"] in inserted:
                self._finding(d["_id"], d)
        return inserted

    def set_finding(self, finding_id: str, fields: dict, expect: dict | None = None) -> bool:
        ok = super().set_finding(finding_id, fields, expect)
        if ok:
            self._finding(finding_id, fields)
        return ok

    def create_notifications(self, items):
        oks = super().create_notifications(items)
        for (doc, _), ok in zip(items, oks):
            if ok:
                self._remember(doc["_id"], doc["finding_id"])
                self._emit(doc["finding_id"], {"op": "notification", "finding_id": doc["finding_id"],
                                               "notification": {"id": str(doc["_id"]),
                                                                **_pick(doc, NOTIFICATION_FIELDS)}})
        return oks

    def claim_due(self, now: datetime, lease, limit: int = 50) -> list[dict]:
        docs = super().claim_due(now, lease, limit)
        for d in docs:
            self._remember(d["_id"], d["finding_id"])
        return docs

    def finish(self, nid, fields: dict) -> None:
        super().finish(nid, fields)
        self._outcome(nid, fields)

    def mark_sent(self, markers: list[dict]) -> None:
        super().mark_sent(markers)
        for m in markers:
            self._outcome(m["_id"], {**m, "status": "sent"}, m.get("finding_id"))

    def retry_at(self, nid, due: datetime, fields: dict) -> None:
        super().retry_at(nid, due, fields)
        self._outcome(nid, {**fields, "status": "pending"})

    def cancel_pending(self, finding_id: str, kinds: tuple[str, ...], now: datetime,
                       reason: str, min_level: int = 0, keep: dict | None = None) -> int:
        n = super().cancel_pending(finding_id, kinds, now, reason, min_level, keep)
        if n:
            self._emit(finding_id, {"op": "cancel", "finding_id": finding_id, "kinds": list(kinds),
                                    "min_level": min_level, "keep": keep or {}, "at": now, "reason": reason})
        return n

    def record_ack(self, finding_id: str, person: str, by: str, via: str, now: datetime,
                   note: str | None = None) -> bool:
        first = super().record_ack(finding_id, person, by, via, now, note)
        self._emit(finding_id, {"op": "ack", "finding_id": finding_id, "recipient": person, "by": by, "via": via,
                                "at": now, "note": note})
        return first


class KafkaChanges:
    """`emit` for `PublishingStore`: send without waiting (the write path never blocks on it)."""

    def __init__(self, publisher, topic: str):
        self.publisher, self.topic = publisher, topic

    def __call__(self, key: str, msg: dict) -> None:
        self.publisher.send(self.topic, key, msg)
