"""The idempotency store of intake: collection `intake_events` (MongoDB or FerretDB).

One document per accepted event id:
`_id` = event_id (the unique index), `hash` (SHA-256 of the normalised event), `status`
(`pending` → `published`), `dossier_code`, `agency_code`, `type`, `key_id`, `recorded_at`,
`value` (the exact Kafka message, so a retry republishes the same bytes), and once published
`topic`, `partition`, `offset`, `published_at`.

Protocol (at-least-once, never a 2xx without an acknowledged publish):
1. insert `pending` (a duplicate id fails on the unique `_id`);
2. publish and wait for the broker's ack (acks=all);
3. mark `published` with the topic/partition/offset.
A crash or a broker failure between 1 and 3 leaves `pending`: the client got a 503 (or no answer)
and retries with the same event id and body; intake then republishes the stored message. The event
can therefore reach Kafka twice (e.g. ack lost after a write); consumers dedup by `event_id`.
"""
from __future__ import annotations

from datetime import datetime
from typing import Iterable

from pymongo import UpdateOne
from pymongo.errors import BulkWriteError

COLLECTION = "intake_events"


class IntakeStore:
    def __init__(self, db):
        self.coll = db[COLLECTION]

    def ensure_indexes(self) -> None:
        """`_id` is unique by itself; these serve lookups by dossier and ops queries of pending."""
        self.coll.create_index([("status", 1), ("recorded_at", 1)], name="status_recorded")

    def insert_pending(self, docs: list[dict]) -> set[str]:
        """Insert pending documents; returns the ids that already existed (not inserted)."""
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
        ids = list(ids)
        if not ids:
            return {}
        return {d["_id"]: d for d in self.coll.find({"_id": {"$in": ids}})}

    def get(self, event_id: str) -> dict | None:
        return self.coll.find_one({"_id": event_id})

    def mark_published(self, results: list[tuple[str, str, int, int]], at: datetime) -> None:
        """results: (event_id, topic, partition, offset)."""
        if not results:
            return
        sets = [({"_id": eid}, {"$set": {"status": "published", "topic": t, "partition": p,
                                          "offset": o, "published_at": at}})
                for eid, t, p, o in results]
        if len(sets) > 1:
            try:
                self.coll.bulk_write([UpdateOne(f, u) for f, u in sets], ordered=False)
                return
            except TypeError:   # mongomock (unit tests) does not take pymongo 4.9+'s UpdateOne
                pass
        for f, u in sets:
            self.coll.update_one(f, u)

    def ping(self) -> None:
        self.coll.database.command("ping")
