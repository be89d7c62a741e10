"""What writing a send's outcome on the notification document costs (docs/ferretdb.md,
"Measured: writing notifications.status on a send").

Times, in one run, the write `NotifyStore.mark_sent` makes — an update with a filter on `_id`
alone — of notifications in a collection of SMALL and of FACTOR times as many, next to the same
update guarded by `status != "sent"` (the filter it avoids) and an insert into a side collection
(the insert-only marker notify wrote while FerretDB's `_id` lookups scanned the table). It prints the figures side by side and
asserts only that each write did what it should: the rates depend on the machine and its load.
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
    return [d["_id"] for d in docs]


def _per_op_ms(fn, ids) -> float:
    t = time.perf_counter()
    for i in ids:
        fn(i)
    return (time.perf_counter() - t) / len(ids) * 1000


def _costs(coll, side, ids, now) -> dict[str, float]:
    """ms per write of each kind, each on its own SAMPLES notifications (the last stored: the
    ones a scan reaches last)."""
    sent = {"status": "sent", "sent_at": now, "attempts": 1, "reclaims": 0}
    guarded, plain, marker = ids[-SAMPLES:], ids[-2 * SAMPLES:-SAMPLES], ids[-3 * SAMPLES:-2 * SAMPLES]

    def guarded_update(i):
        assert coll.update_one({"_id": i, "status": {"$ne": "sent"}}, {"$set": sent}).modified_count == 1

    def plain_update(i):
        assert coll.update_one({"_id": i}, {"$set": sent}).modified_count == 1

    out = {"guarded": _per_op_ms(guarded_update, guarded), "plain": _per_op_ms(plain_update, plain),
           "marker": _per_op_ms(lambda i: side.insert_one({"_id": i, "channel": "email", "sent_at": now}), marker)}
    assert coll.count_documents({"status": "sent"}) == 2 * SAMPLES    # nothing else was touched
    return out


def test_cost_of_writing_the_sent_status_on_the_notification(mongo_db):
    now = datetime.now(timezone.utc)
    coll, side = mongo_db.notifications, mongo_db.sent_markers
    small = _costs(coll, side, _fill(coll, SMALL, now), now)
    coll.update_many({}, {"$set": {"status": "pending"}})
    large = _costs(coll, side, _fill(coll, SMALL * (FACTOR - 1), now), now)
    assert coll.count_documents({}) == SMALL * FACTOR

    print(f"\nms per write             {SMALL:>8} {SMALL * FACTOR:>8} notifications")
    for key, label in (("plain", "update, _id (mark_sent)"), ("guarded", "update, _id+status"), ("marker", "marker insert")):
        print(f"{label:<23}  {small[key]:>8.2f} {large[key]:>8.2f}")
