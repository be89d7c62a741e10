"""The idempotency store of intake (MongoDB or FerretDB), append-only.

`intake_events` holds one `pending` document per event id (`_id` = event_id, `hash`, the Kafka
message as text in `message`, …) and one receipt per published event (`_id` =
`<event_id>/published`: topic, partition, offset); an event is `published` iff it has a receipt.
Writes are group-committed per process (`GroupInsert`). Protocol (insert pending, publish, insert
receipt; retries): docs/architecture.md, "Intake: idempotency and publication".

FerretDB v1.24 applies an update as a read-modify-write of the whole document: publication is
recorded by inserting a receipt, never by updating the event (docs/ferretdb.md).
"""
from __future__ import annotations

import threading
from datetime import datetime
from typing import Iterable

from pymongo.errors import BulkWriteError

COLLECTION = "intake_events"
RECEIPTS = "intake_published"      # receipts of earlier versions: read, never written
RECEIPT_SUFFIX = "/published"


class _Slot:
    __slots__ = ("docs", "event", "lead", "done", "dups", "error")

    def __init__(self, docs: list[dict]):
        self.docs = docs
        self.event = threading.Event()
        self.lead = self.done = False
        self.dups: set[str] = set()
        self.error: BaseException | None = None


class GroupInsert:
    """Group commit of inserts into one collection, shared by a process's threads.

    `insert(docs)` returns the ids among `docs` that already existed (duplicate `_id`: not
    inserted) or raises what MongoDB raised for them. The first caller while no write is in
    flight leads: it inserts everything queued so far in one unordered `insert_many`, hands each
    caller its own outcome, then passes the lead to the first caller that queued meanwhile.
    No background thread (nothing to restart after a fork); one caller never waits for more
    than the write in flight plus its own.
    """

    def __init__(self, coll, max_docs: int = 1000):
        self.coll = coll
        self.max_docs = max_docs
        self._lock = threading.Lock()
        self._queue: list[_Slot] = []
        self._busy = False

    def insert(self, docs: list[dict]) -> set[str]:
        if not docs:
            return set()
        slot = _Slot(docs)
        with self._lock:
            self._queue.append(slot)
            if not self._busy:
                self._busy = slot.lead = True
        while not slot.lead and not slot.done:
            slot.event.wait()
            slot.event.clear()
        if not slot.done:
            self._lead()
        if slot.error is not None:
            raise slot.error
        return slot.dups

    def _lead(self) -> None:
        with self._lock:
            batch, size = [], 0
            while self._queue and (not batch or size + len(self._queue[0].docs) <= self.max_docs):
                slot = self._queue.pop(0)
                batch.append(slot)
                size += len(slot.docs)
        try:
            self._write(batch)
        finally:
            with self._lock:
                for slot in batch:
                    slot.done = True
                    slot.event.set()
                if self._queue:
                    nxt = self._queue[0]
                    nxt.lead = True
                    nxt.event.set()
                else:
                    self._busy = False

    def _write(self, batch: list[_Slot]) -> None:
        docs, owner = [], []
        for slot in batch:
            docs.extend(slot.docs)
            owner.extend([slot] * len(slot.docs))
        try:
            self.coll.insert_many(docs, ordered=False)
        except BulkWriteError as exc:
            for err in exc.details.get("writeErrors", []):
                slot = owner[err["index"]]
                if err.get("code") == 11000:
                    slot.dups.add(docs[err["index"]]["_id"])
                elif slot.error is None:
                    slot.error = BulkWriteError({"writeErrors": [err], "nInserted": 0})
        except BaseException as exc:   # noqa: BLE001 - every caller of this write gets it
            for slot in batch:
                slot.error = exc


class IntakeStore:
    def __init__(self, db):
        self.coll = db[COLLECTION]
        self.receipts = db[RECEIPTS]
        self._writer = GroupInsert(self.coll)     # pending documents and receipts alike

    def ensure_indexes(self) -> None:
        """`_id` is unique by itself; these serve ops queries of pending events and the receipt
        slip looked up by dossier code."""
        self.coll.create_index([("status", 1), ("recorded_at", 1)], name="status_recorded")
        self.coll.create_index([("dossier_code", 1), ("type", 1)], name="dossier_type")

    def insert_pending(self, docs: list[dict]) -> set[str]:
        """Insert pending documents; returns the ids that already existed (not inserted)."""
        return self._writer.insert(docs)

    def get_many(self, ids: Iterable[str]) -> dict[str, dict]:
        """Event documents by id, each with its receipt merged in (status `published`).

        One `_id` equality lookup per id: FerretDB v1.24 (SQLite) pushes `_id` equality down to
        its primary key but answers `{"_id": {"$in": [...]}}` by scanning the whole collection
        (docs/ferretdb.md). Only duplicates are looked up."""
        docs = {}
        for eid in dict.fromkeys(ids):
            doc = self.coll.find_one({"_id": eid})
            if doc is not None:
                receipt = (self.coll.find_one({"_id": eid + RECEIPT_SUFFIX})
                           or self.receipts.find_one({"_id": eid}))
                if receipt is not None:
                    doc.update(status="published", topic=receipt["topic"],
                               partition=receipt["partition"], offset=receipt["offset"],
                               published_at=receipt["published_at"])
                docs[eid] = doc
        return docs

    def get(self, event_id: str) -> dict | None:
        return self.get_many([event_id]).get(event_id)

    def of_dossier(self, dossier_code: str, event_type: str) -> list[dict]:
        """A dossier's event documents of one type, each with its receipt merged in (as `get`).

        FerretDB v1.24 reads the whole collection for any filter but `_id` equality (MongoDB uses
        the `dossier_type` index): fine for a counter reprinting a slip, never on the event path,
        where a pointer document per dossier would cost one more insert per event."""
        ids = [d["_id"] for d in self.coll.find({"dossier_code": dossier_code, "type": event_type},
                                                {"_id": 1})]
        return list(self.get_many(ids).values())

    def mark_published(self, results: list[tuple[str, str, int, int]], at: datetime) -> None:
        """Record receipts (event_id, topic, partition, offset). Append-only: one insert_many
        instead of one update per event (FerretDB's SQLite handler updates slowly); a second
        receipt for a republished event is ignored, the first one stands."""
        if not results:
            return
        docs = [{"_id": eid + RECEIPT_SUFFIX, "receipt_of": eid, "topic": t, "partition": p,
                 "offset": o, "published_at": at} for eid, t, p, o in results]
        self._writer.insert(docs)     # duplicates (a second receipt) are ignored

    def ping(self) -> None:
        self.coll.database.command("ping")
