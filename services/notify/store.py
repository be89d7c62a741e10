"""MongoDB storage of the notify service (works on MongoDB and FerretDB v1.24).

Collections:
- `notify_findings`: the latest revision of every finding received (`_id` = finding id), plus
  the scheduler's state for it (escalation level reached, next escalation/repeat instants, ack).
  The daily digest reads this store, never the sla database.
- `notifications`: one document per (finding_id, episode, recipient, level, kind, seq), unique
  index (`episode` counts re-openings of a resolved finding, 0 for most).
  Inserting it is the claim: a second insert for the same key fails, so each alert is sent at
  most once per recipient and level (kind `alert`, seq 0); repeats use seq 1, 2…; the closing
  notice is kind `resolved`; digests are finding_id `digest:<date>`, kind `digest`.
  status: pending → sending (leased) → sent | failed | cancelled; pending → pending (retry later).
- `deliveries`: every attempt (time, channel, recipient, outcome, error, latency).
- `acks`: every acknowledgement (who, when, how).
- `notification_claims`: `_id` = `<notification id>:a<attempt>:r<reclaim>`; inserting it is the
  lock that lets exactly one instance send one attempt.
"""
from __future__ import annotations

from datetime import datetime, timedelta

from pymongo import ASCENDING, DESCENDING
from pymongo.errors import DuplicateKeyError

FINDINGS = "notify_findings"
NOTIFICATIONS = "notifications"
DELIVERIES = "deliveries"
ACKS = "acks"
CLAIMS = "notification_claims"
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

    # --- findings ---------------------------------------------------------------------------
    def upsert_finding(self, doc: dict) -> tuple[bool, dict | None]:
        """Store a finding revision unless a newer or equal one is stored.

        Returns (stored, previous): stored is False for a stale or repeated revision."""
        fid = doc["_id"]
        prev = self.findings.find_one({"_id": fid})
        if prev is None:
            try:
                self.findings.insert_one({**SCHEDULE_DEFAULTS, **doc})
                return True, None
            except DuplicateKeyError:
                prev = self.findings.find_one({"_id": fid})
        if prev is not None and prev.get("revision", -1) >= doc["revision"]:
            return False, prev
        fields = {k: v for k, v in doc.items() if k != "_id"}
        res = self.findings.update_one({"_id": fid, "revision": {"$lt": doc["revision"]}}, {"$set": fields})
        return res.modified_count == 1, prev

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
    def create_notification(self, doc: dict) -> bool:
        """Insert (claim) a notification; False when one with the same key exists."""
        try:
            self.notifications.insert_one(doc)
            return True
        except DuplicateKeyError:
            return False

    def claim_due(self, now: datetime, lease: timedelta, scan: int = 20) -> dict | None:
        """Take one due notification for sending (pending and due, or a lease that expired).

        The claim is an insert into `notification_claims` with a unique `_id` per notification and
        attempt: FerretDB's findAndModify is not atomic between concurrent writers, a unique key
        is. Only the instance whose insert succeeds sends."""
        for query in ({"status": "pending", "due_at": {"$lte": now}},
                      {"status": "sending", "lease_until": {"$lt": now}}):
            for cand in self.notifications.find(query).sort([("due_at", ASCENDING)]).limit(scan):
                stale = cand["status"] == "sending"
                reclaims = cand.get("reclaims", 0) + (1 if stale else 0)
                key = f"{cand['_id']}:a{cand.get('attempts', 0)}:r{reclaims}"
                try:
                    self.claims.insert_one({"_id": key, "at": now})
                except DuplicateKeyError:
                    continue   # another instance took it
                fields = {"status": "sending", "lease_until": now + lease, "reclaims": reclaims}
                self.notifications.update_one({"_id": cand["_id"]}, {"$set": fields})
                cand.update(fields)
                return cand
        return None

    def update_notification(self, nid, fields: dict, expect_status: str | None = None) -> bool:
        q = {"_id": nid}
        if expect_status:
            q["status"] = expect_status
        return self.notifications.update_one(q, {"$set": fields}).matched_count == 1

    def cancel_pending(self, finding_id: str, kinds: tuple[str, ...], now: datetime,
                       reason: str, min_level: int = 0) -> int:
        res = self.notifications.update_many(
            {"finding_id": finding_id, "status": "pending", "kind": {"$in": list(kinds)},
             "level": {"$gte": min_level}},
            {"$set": {"status": "cancelled", "cancelled_at": now, "error": reason}})
        return res.modified_count

    def notifications_for(self, finding_id: str, **q) -> list[dict]:
        return list(self.notifications.find({"finding_id": finding_id, **q}).sort("created_at", ASCENDING))

    def count_notifications(self, q: dict) -> int:
        return self.notifications.count_documents(q)

    # --- deliveries -------------------------------------------------------------------------
    def record_delivery(self, doc: dict) -> None:
        self.deliveries.insert_one(doc)

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
