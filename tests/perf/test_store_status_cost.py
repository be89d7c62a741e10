"""What writing `notifications.status` on a successful send would cost, against the insert-only
marker notify writes instead (docs/ferretdb.md, "Measured").

Compares in the same run: an update by `_id` of a notification in a small and in a ten times
larger collection, and the marker insert. On FerretDB v1.24 the update reads the whole
collection, so its cost grows with the collection; the test prints the figures and fails when
that stops being true (an upgrade that fixes it: the status can then be written directly).
"""
from __future__ import annotations

import time
from datetime import datetime, timezone

import pytest
from bson import ObjectId

pytestmark = pytest.mark.perf

SMALL, FACTOR, SAMPLES = 1000, 10, 15


def _doc(now):
    return {"_id": ObjectId(), "finding_id": f"F-{ObjectId()}", "episode": 0, "recipient": "email:head@X",
            "person": "head@X", "level": 0, "kind": "alert", "seq": 0, "channel": "email",
            "address": "head@example.org", "status": "pending", "attempts": 0, "error": None,
            "rule": "OVERDUE", "severity": "critical", "created_at": now, "due_at": now}


def _fill(coll, n, now):
    docs = [_doc(now) for _ in range(n)]
    for i in range(0, n, 500):
        coll.insert_many(docs[i:i + 500], ordered=False)
    return [d["_id"] for d in docs[-SAMPLES:]]


def _per_op(fn, ids) -> float:
    t = time.perf_counter()
    for i in ids:
        fn(i)
    return (time.perf_counter() - t) / len(ids)


def test_a_status_update_costs_the_collection_a_marker_insert_does_not(mongo_db):
    now = datetime.now(timezone.utc)
    coll, sent = mongo_db.notifications, mongo_db.notifications_sent
    sent_at = {"status": "sent", "sent_at": now, "attempts": 1, "reclaims": 0}

    ids = _fill(coll, SMALL, now)
    small = _per_op(lambda i: coll.update_one({"_id": i}, {"$set": sent_at}), ids)
    marker = _per_op(lambda i: sent.insert_one({"_id": i, "channel": "email", "sent_at": now}), ids)
    ids = _fill(coll, SMALL * (FACTOR - 1), now)
    large = _per_op(lambda i: coll.update_one({"_id": i}, {"$set": sent_at}), ids)

    print(f"\nupdate by _id: {small * 1000:.2f} ms at {SMALL} notifications, {large * 1000:.2f} ms at "
          f"{SMALL * FACTOR}; marker insert {marker * 1000:.2f} ms")
    assert large > 3 * small, "an update by _id no longer reads the whole collection: write the status"
    assert large > 10 * marker
