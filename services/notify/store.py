"""MongoDB storage of the notify service (works on MongoDB and FerretDB v1.24).

Collections: `notify_findings`, `notifications` (unique per finding, episode, recipient, level,
kind, seq: inserting it is the claim), `deliveries`, `acks`, `notify_queue` (notifications not yet
final), `notify_alerted`, `notification_claims`. What each holds and why:
docs/architecture.md, "notify".

The service reads and writes through this port as it would against MongoDB; every choice forced
by FerretDB v1.24 is made here, each with a comment naming the limit (docs/ferretdb.md). A
notification's document says its outcome itself (`status`, `sent_at`, `attempts`, `reclaims`).
"""
from __future__ import annotations

from datetime import datetime, timedelta

from bson import ObjectId
from pymongo import ASCENDING, DESCENDING
from pymongo.errors import BulkWriteError, DuplicateKeyError

from shared.contracts.alerting import NOTIFY_FINDINGS
from shared.domain.instants import stored_utc

FINDINGS = NOTIFY_FINDINGS     # its name is part of the alerting contract: the sla API reads it
NOTIFICATIONS = "notifications"
DELIVERIES = "deliveries"
ACKS = "acks"
CLAIMS = "notification_claims"
QUEUE = "notify_queue"
ALERTED = "notify_alerted"
# FerretDB: an insert command is one SQLite transaction, far cheaper per document than updates;
# chunks keep each command (and the duplicate-key report of an unordered insert) bounded
INSERT_CHUNK = 200        # documents per insert_many
NOTIFICATION_KEY = ("finding_id", "episode", "recipient", "level", "kind", "seq")
# scheduler state of a finding, set when notify first stores it and never overwritten by revisions
SCHEDULE_DEFAULTS = {"episode": 0, "level": 0, "next_escalation_at": None, "next_repeat_at": None,
                     "repeats": 0, "acked_at": None, "acked_by": None, "acked_recipient": None}


class NotifyStore:
    def __init__(self, db):
        self.db = db
        self.findings = db[FINDINGS]
        self.notifications = db[NOTIFICATIONS]
        self.deliveries = db[DELIVERIES]
        self.acks = db[ACKS]
        self.claims = db[CLAIMS]
        self.queue = db[QUEUE]
        self.alerted = db[ALERTED]

    def ensure_indexes(self) -> None:
        self.notifications.create_index([(k, ASCENDING) for k in NOTIFICATION_KEY], unique=True,
                                        name="one_per_finding_recipient_level")
        self.notifications.create_index([("status", ASCENDING), ("due_at", ASCENDING)], name="due")
        self.notifications.create_index([("finding_id", ASCENDING)], name="finding")
        self.deliveries.create_index([("at", DESCENDING)], name="at")
        self.deliveries.create_index([("finding_id", ASCENDING)], name="finding")
        self.findings.create_index([("state", ASCENDING), ("agency_code", ASCENDING)], name="open")
        self.findings.create_index([("next_escalation_at", ASCENDING)], name="escalation")
        self.findings.create_index([("next_repeat_at", ASCENDING)], name="repeat")
        self.acks.create_index([("finding_id", ASCENDING)], name="finding")
        self.queue.create_index([("due_at", ASCENDING)], name="due")
        self.alerted.create_index([("finding_id", ASCENDING)], name="finding")

    # --- findings ---------------------------------------------------------------------------
    def upsert_finding(self, doc: dict) -> tuple[bool, dict | None]:
        """Store a finding revision unless a newer or equal one is stored.

        Returns (stored, previous): stored is False for a stale or repeated revision. Only
        `_id`-equality filters are used: FerretDB reads every document for any other filter
        (and for a lookup that misses), so the insert comes first. The revision comparison is
        done here, not in the filter; a finding's messages all come from one partition, read
        by one instance at a time, and a stale write during a rebalance is re-read and
        overwritten by the newer revision that follows it on the same partition."""
        fid = doc["_id"]
        try:
            self.findings.insert_one({**SCHEDULE_DEFAULTS, "first_revision": doc["revision"], **doc})
            return True, None
        except DuplicateKeyError:
            pass
        prev = self.findings.find_one({"_id": fid})
        if prev is not None and prev.get("revision", -1) >= doc["revision"]:
            return False, prev
        self.findings.update_one({"_id": fid}, {"$set": {k: v for k, v in doc.items() if k != "_id"}})
        return True, prev

    def insert_new_findings(self, docs: list[dict]) -> set:
        """Insert findings in one unordered write (chunks of INSERT_CHUNK); returns the `_id`s
        inserted. One already stored is no error here: the caller handles it as a revision
        (`upsert_finding`). `docs` must have distinct `_id`s."""
        full = [{**SCHEDULE_DEFAULTS, **d} for d in docs]
        dups = _insert_many_new(self.findings, full)
        return {d["_id"] for i, d in enumerate(full) if i not in dups}

    def get_finding(self, finding_id: str) -> dict | None:
        return self.findings.find_one({"_id": finding_id})

    def set_finding(self, finding_id: str, fields: dict, expect: dict | None = None) -> bool:
        """Compare-and-set on the scheduler fields; False when `expect` no longer holds."""
        res = self.findings.update_one({"_id": finding_id, **(expect or {})}, {"$set": fields})
        return res.matched_count == 1

    def due_escalations(self, now: datetime, limit: int = 100) -> list[dict]:
        return list(self.findings.find({"next_escalation_at": {"$lte": now}, "acked_at": None,
                                        "state": {"$ne": "resolved"}}).limit(limit))

    def due_repeats(self, now: datetime, limit: int = 100) -> list[dict]:
        return list(self.findings.find({"next_repeat_at": {"$lte": now}, "acked_at": None,
                                        "state": {"$ne": "resolved"}}).limit(limit))

    def open_findings(self, agencies: list[str] | None = None) -> list[dict]:
        q: dict = {"state": {"$ne": "resolved"}}
        if agencies is not None:
            q["agency_code"] = {"$in": agencies}
        return list(self.findings.find(q).sort([("due_at", ASCENDING), ("_id", ASCENDING)]))

    def open_agencies(self) -> list[str]:
        return sorted(self.findings.distinct("agency_code", {"state": {"$ne": "resolved"}}))

    # --- notifications ----------------------------------------------------------------------
    def create_notification(self, doc: dict, leased_until: datetime | None = None) -> bool:
        """Insert (claim) a notification, and queue it when pending; False when one with the
        same key exists.

        `leased_until`: the caller sends it itself right away (no queue scan, no claim
        round trips): its queue entry starts as claimed once (`n` = 1) and leased until then, so
        no other sender takes it unless the caller crashes before marking it."""
        return self.create_notifications([(doc, leased_until)])[0]

    def create_notifications(self, items: list[tuple[dict, datetime | None]]) -> list[bool]:
        """`create_notification` for many (doc, leased_until) in a few inserts: the queue entries
        of the pending ones first, then the notifications (unordered: a duplicate key means
        already planned, False at its index), then the queue entries of the duplicates are
        deleted again. Queue first: a crash in between leaves a queue entry without its
        notification (removed by `claim_due` once older than a lease), never a pending
        notification without a queue entry (which nothing would send)."""
        if not items:
            return []
        for doc, _ in items:
            doc.setdefault("_id", ObjectId())
        entries = [self._queue_entry(doc, leased_until) for doc, leased_until in items
                   if doc.get("status") == "pending"]
        for i in range(0, len(entries), INSERT_CHUNK):
            self.queue.insert_many(entries[i:i + INSERT_CHUNK], ordered=False)
        dups = _insert_many_new(self.notifications, [doc for doc, _ in items])
        orphans = [items[i][0]["_id"] for i in sorted(dups) if items[i][0].get("status") == "pending"]
        self._delete_queued(orphans)
        return [i not in dups for i in range(len(items))]

    @staticmethod
    def _queue_entry(doc: dict, leased_until: datetime | None) -> dict:
        leased = leased_until is not None
        return {"_id": doc["_id"], "due_at": leased_until if leased else doc["due_at"],
                "n": 1 if leased else 0, "finding_id": doc["finding_id"], "kind": doc["kind"],
                "level": doc["level"], "at": doc.get("created_at")}

    def _delete_queued(self, ids: list) -> None:
        """Queue entries out, `INSERT_CHUNK` at a time with one `$in` delete: FerretDB reads the
        queue once per delete statement (a bulk of DeleteOne by `_id` reads it once per entry)."""
        for i in range(0, len(ids), INSERT_CHUNK):
            self.queue.delete_many({"_id": {"$in": ids[i:i + INSERT_CHUNK]}})

    def claim_due(self, now: datetime, lease: timedelta, limit: int = 50) -> list[dict]:
        """Take up to `limit` due notifications for sending; returns their documents."""
        out = []
        for entry in self.queue.find({"due_at": {"$lte": now}}).sort([("due_at", ASCENDING)]).limit(limit):
            doc = self.notifications.find_one({"_id": entry["_id"]})
            if doc is None:
                # its notification is being inserted (or the planner crashed, or it was a duplicate)
                at = entry.get("at")
                if at is None or stored_utc(at) <= now - lease:
                    self.queue.delete_one({"_id": entry["_id"]})
                continue
            if doc.get("status") != "pending":
                self.queue.delete_one({"_id": entry["_id"]})   # final already (sent: the sender died before dequeuing)
                continue
            try:
                # FerretDB: findAndModify is not atomic between writers, a unique `_id` is
                self.claims.insert_one({"_id": f"{entry['_id']}:{entry.get('n', 0)}", "at": now})
            except DuplicateKeyError:
                continue   # another instance took it
            self.queue.update_one({"_id": entry["_id"]}, {"$set": {"due_at": now + lease, "n": entry.get("n", 0) + 1}})
            # claims beyond the attempts recorded: senders that crashed between claim and mark
            doc["reclaims"] = max(0, entry.get("n", 0) - doc.get("attempts", 0))
            out.append(doc)
        return out

    def finish(self, nid, fields: dict) -> None:
        """A notification reached a final state (failed, cancelled): out of the queue. One that
        is sent already stays sent: an attempt of it was accepted."""
        if self._not_sent(nid):
            self.notifications.update_one({"_id": nid}, {"$set": fields})
            self._keep_sent(nid)
        self.queue.delete_one({"_id": nid})

    def mark_sent(self, markers: list[dict]) -> None:
        """Record notifications as sent (`_id`, `channel`, `sent_at`, `attempts`, `reclaims` each)
        on their documents, then take them out of the queue.

        Unconditional, so a send accepted while the notification was being cancelled or failed
        still says `sent`. The first send time and the highest counts are kept (`$min`/`$max`):
        a second sender of the same notification (a reclaimed lease) does not hide the first."""
        for m in markers:
            self.notifications.update_one({"_id": m["_id"]}, {
                "$set": {"status": "sent", "error": None}, "$min": {"sent_at": m["sent_at"]},
                "$max": {"attempts": m.get("attempts", 1), "reclaims": m.get("reclaims", 0)}})
        self._delete_queued([m["_id"] for m in markers])

    def _not_sent(self, nid) -> bool:
        """Read the status, then write: FerretDB applies an update as a read and a later write of
        the whole document, so a status guard in the filter would not stop a concurrent send
        either; `_keep_sent` settles it after the write (docs/ferretdb.md, "Measured")."""
        doc = self.notifications.find_one({"_id": nid}, {"status": 1})
        return doc is not None and doc.get("status") != "sent"

    def _keep_sent(self, nid) -> bool:
        """After a write guarded by `_not_sent`: a send recorded between that read and the write
        (a second sender of a reclaimed lease) left its `sent_at`, which no other write sets or
        clears, so the status goes back to `sent` — whatever the order, a send wins."""
        doc = self.notifications.find_one({"_id": nid}, {"status": 1, "sent_at": 1})
        if doc is not None and doc.get("sent_at") is not None and doc.get("status") != "sent":
            self.notifications.update_one({"_id": nid}, {"$set": {"status": "sent", "error": None}})
            self.queue.delete_one({"_id": nid})
            return True
        return False

    def get_notification(self, q: dict) -> dict | None:
        return self.notifications.find_one(q)

    def list_notifications(self, q: dict, limit: int = 100, skip: int = 0,
                           projection: dict | None = None) -> list[dict]:
        """Notifications matching `q`, newest first."""
        sort = [("created_at", DESCENDING), ("_id", DESCENDING)]
        return list(self.notifications.find(q, projection).sort(sort).skip(skip).limit(limit))

    def sent_counts(self) -> dict[str, int]:
        """Sent notifications by channel."""
        return {row["_id"]: row["n"] for row in self.notifications.aggregate(
            [{"$match": {"status": "sent"}}, {"$group": {"_id": "$channel", "n": {"$sum": 1}}}])}

    def retry_at(self, nid, due: datetime, fields: dict) -> None:
        if self._not_sent(nid):
            self.notifications.update_one({"_id": nid}, {"$set": {**fields, "status": "pending", "due_at": due}})
            self.queue.update_one({"_id": nid}, {"$set": {"due_at": due}})
            self._keep_sent(nid)

    def cancel_pending(self, finding_id: str, kinds: tuple[str, ...], now: datetime,
                       reason: str, min_level: int = 0, keep: dict | None = None) -> int:
        """Cancel queued notifications of a finding not yet being sent; `keep` = {field: value}
        of notifications to leave alone (e.g. {"reason": "lateness"}). Read, then written, as
        `_not_sent` explains; a send recorded in between wins (`_keep_sent`)."""
        n = 0
        for entry in self.queue.find({"finding_id": finding_id}):
            if entry.get("kind") not in kinds or entry.get("level", 0) < min_level:
                continue
            nid = entry["_id"]
            doc = self.notifications.find_one({"_id": nid}, {"status": 1, **dict.fromkeys(keep or {}, 1)})
            if doc is None or doc.get("status") != "pending" or any(
                    doc.get(k) == v for k, v in (keep or {}).items()):
                continue
            self.notifications.update_one({"_id": nid}, {"$set": {
                "status": "cancelled", "cancelled_at": now, "error": reason}})
            if not self._keep_sent(nid):
                self.queue.delete_one({"_id": nid})
                n += 1
        return n

    def add_alerted(self, finding_id: str, recipient: dict) -> None:
        """Remember who received an alert of the finding (for repeats and the closing notice).

        Insert-only, one document per (finding, episode, recipient, level, kind): FerretDB applies
        updates as read-modify-write of the whole document, so concurrent `$addToSet`s on the
        finding's document would lose entries."""
        key = "|".join(str(recipient.get(k)) for k in ("episode", "recipient", "level", "kind"))
        try:
            self.alerted.insert_one({"_id": f"{finding_id}|{key}", "finding_id": finding_id, **recipient})
        except DuplicateKeyError:
            pass

    def add_alerted_many(self, items: list[tuple[str, dict]]) -> None:
        """`add_alerted` for many (finding id, recipient) pairs: one insert, repeats ignored."""
        docs = {}
        for finding_id, recipient in items:
            key = "|".join(str(recipient.get(k)) for k in ("episode", "recipient", "level", "kind"))
            docs.setdefault(f"{finding_id}|{key}", {"_id": f"{finding_id}|{key}", "finding_id": finding_id,
                                                   **recipient})
        _insert_ignoring_repeats(self.alerted, list(docs.values()))

    def alerted_for(self, finding_id: str, episode: int) -> list[dict]:
        return list(self.alerted.find({"finding_id": finding_id, "episode": episode}).sort("_id", ASCENDING))

    def queue_size(self, now: datetime) -> tuple[int, int]:
        """(due, deferred) entries of the queue."""
        total = self.queue.count_documents({})
        deferred = self.queue.count_documents({"due_at": {"$gt": now}})
        return total - deferred, deferred

    # --- deliveries -------------------------------------------------------------------------
    def record_delivery(self, doc: dict) -> None:
        self.deliveries.insert_one(doc)

    def record_deliveries(self, docs: list[dict]) -> None:
        """Insert delivery entries; one whose `_id` is stored already (a retried write) is kept."""
        if docs:
            _insert_ignoring_repeats(self.deliveries, docs)

    def list_deliveries(self, q: dict, limit: int = 100, skip: int = 0) -> list[dict]:
        return list(self.deliveries.find(q).sort([("at", DESCENDING), ("_id", DESCENDING)]).skip(skip).limit(limit))

    # --- acknowledgements -------------------------------------------------------------------
    def record_ack(self, finding_id: str, person: str, by: str, via: str, now: datetime,
                   note: str | None = None) -> bool:
        """Record an acknowledgement; True when it is the finding's first."""
        self.acks.insert_one({"finding_id": finding_id, "recipient": person, "by": by, "via": via, "at": now,
                              "note": note})
        res = self.findings.update_one({"_id": finding_id, "acked_at": None},
                                       {"$set": {"acked_at": now, "acked_by": by, "acked_recipient": person,
                                                 "next_escalation_at": None, "next_repeat_at": None}})
        return res.modified_count == 1


def _insert_many_new(coll, docs: list[dict]) -> set[int]:
    """Unordered inserts in chunks of INSERT_CHUNK; returns the indexes (into `docs`) refused as
    duplicate keys. Any other error raises."""
    dups: set[int] = set()
    for start in range(0, len(docs), INSERT_CHUNK):
        try:
            coll.insert_many(docs[start:start + INSERT_CHUNK], ordered=False)
        except BulkWriteError as exc:
            errors = exc.details.get("writeErrors", [])
            if any(e.get("code") != 11000 for e in errors) or exc.details.get("writeConcernErrors"):
                raise
            dups.update(start + e["index"] for e in errors)
    return dups


def _insert_ignoring_repeats(coll, docs: list[dict]) -> None:
    """insert_many (unordered) where an existing `_id` is not an error."""
    _insert_many_new(coll, docs)
