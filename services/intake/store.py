"""The idempotency store of intake (MongoDB or FerretDB), append-only:

- `intake_events`: one document per event id: `_id` = event_id (unique), `hash` (SHA-256 of the
  normalised event), `status`, `dossier_code`, `agency_code`, `type`, `key_id`, `recorded_at`,
  `value` (the exact Kafka message: a retry republishes the same bytes). Written once:
  - `status: "published"` with `topic`, `partition`, `offset`, `published_at` when the first
    publish was acknowledged (the usual case: one insert per event);
  - `status: "pending"` when it was not (broker down): the client got a 503 and retries;
- `intake_published`: one receipt per *republished* pending event: `_id` = event_id, `topic`,
  `partition`, `offset`, `published_at` (an insert, not an update: FerretDB's SQLite handler
  updates slowly). A pending event with a receipt reads as `published` (readers merge them).

Protocol (at-least-once, never a 2xx without an acknowledged publish, and never a 2xx without
the event recorded here):
1. read the event ids (one `find`): same id + different body → 409; already published → 200
   with the original result; pending → republish the stored message;
2. publish the new ones and wait for the broker's ack (acks=all);
3. insert the new events (one `insert_many`, unordered): `published` with their position, or
   `pending` for those Kafka did not acknowledge; add receipts for republished pending events.
A crash between 2 and 3 (or MongoDB failing at 3, answered 503) leaves an event on Kafka that is
not recorded: the client retries with the same event id and body and intake publishes it again.
Two requests racing with the same new event id both publish; the unique `_id` lets one insert
win and the other answers from it (200 with the same body; 409 with a different one — that
body reached Kafka too). Either way an event can reach Kafka twice; consumers dedup by `event_id`.
"""
from __future__ import annotations

from datetime import datetime
from typing import Iterable

from pymongo.errors import BulkWriteError

COLLECTION = "intake_events"
RECEIPTS = "intake_published"


class IntakeStore:
    def __init__(self, db):
        self.coll = db[COLLECTION]
        self.receipts = db[RECEIPTS]

    def ensure_indexes(self) -> None:
        """`_id` is unique by itself; these serve lookups by dossier and ops queries of pending."""
        self.coll.create_index([("status", 1), ("recorded_at", 1)], name="status_recorded")

    def insert_new(self, docs: list[dict]) -> set[str]:
        """Insert event documents (published or pending) in one unordered `insert_many`; returns
        the ids that already existed (not inserted: a concurrent request recorded them first)."""
        if not docs:
            return set()
        try:
            self.coll.insert_many(docs, ordered=False)
            return set()
        except BulkWriteError as exc:
            dup = set()
            for err in exc.details.get("writeErrors", []):
                if err.get("code") == 11000:
                    dup.add(docs[err["index"]]["_id"])
                else:
                    raise
            return dup

    def get_many(self, ids: Iterable[str]) -> dict[str, dict]:
        """Event documents by id, each with its receipt merged in (status `published`)."""
        ids = list(ids)
        if not ids:
            return {}
        docs = {d["_id"]: d for d in self.coll.find({"_id": {"$in": ids}})}
        pending = [i for i, d in docs.items() if d.get("status") != "published"]
        if pending:
            for r in self.receipts.find({"_id": {"$in": pending}}):
                docs[r["_id"]].update(status="published", topic=r["topic"],
                                      partition=r["partition"], offset=r["offset"],
                                      published_at=r["published_at"])
        return docs

    def get(self, event_id: str) -> dict | None:
        return self.get_many([event_id]).get(event_id)

    def mark_published(self, results: list[tuple[str, str, int, int]], at: datetime) -> None:
        """Record receipts (event_id, topic, partition, offset) of republished pending events.
        Append-only: one insert_many instead of one update per event (FerretDB's SQLite handler
        updates slowly); a second receipt for an event is ignored, the first one stands."""
        if not results:
            return
        docs = [{"_id": eid, "topic": t, "partition": p, "offset": o, "published_at": at}
                for eid, t, p, o in results]
        try:
            self.receipts.insert_many(docs, ordered=False)
        except BulkWriteError as exc:
            if any(e.get("code") != 11000 for e in exc.details.get("writeErrors", [])):
                raise

    def ping(self) -> None:
        self.coll.database.command("ping")
