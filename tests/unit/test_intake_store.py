"""Group commit of intake's inserts (services.intake.store.GroupInsert): concurrent callers share
one insert_many, each gets its own outcome (inserted, duplicate ids, or the error)."""
import threading
import time

import mongomock
import pytest
from pymongo.errors import AutoReconnect, BulkWriteError

from services.intake.store import GroupInsert


class SlowColl:
    """A mongomock collection whose insert_many takes a while and is recorded."""

    def __init__(self, delay=0.05):
        self.coll = mongomock.MongoClient()["t"]["c"]
        self.delay = delay
        self.calls: list[int] = []
        self.fail_with: Exception | None = None
        self._lock = threading.Lock()

    def insert_many(self, docs, ordered=True):
        assert ordered is False
        with self._lock:
            self.calls.append(len(docs))
        time.sleep(self.delay)
        if self.fail_with is not None:
            raise self.fail_with
        return self.coll.insert_many(docs, ordered=False)


def run_concurrently(fns):
    out, errors = [None] * len(fns), [None] * len(fns)
    barrier = threading.Barrier(len(fns))

    def run(i):
        barrier.wait()
        try:
            out[i] = fns[i]()
        except Exception as exc:   # noqa: BLE001
            errors[i] = exc
    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(fns))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
        assert not t.is_alive(), "a caller hangs"
    return out, errors


def test_concurrent_inserts_share_round_trips_and_get_their_own_duplicates():
    coll = SlowColl()
    coll.coll.insert_one({"_id": "old-3"})
    g = GroupInsert(coll)
    fns = [lambda i=i: g.insert([{"_id": f"e{i}-a"}, {"_id": f"e{i}-b"}]) for i in range(12)]
    fns.append(lambda: g.insert([{"_id": "old-3"}, {"_id": "new-x"}]))
    fns.append(lambda: g.insert([{"_id": "e0-a"}]))       # races with caller 0 on the same id
    out, errors = run_concurrently(fns)
    assert errors == [None] * 14
    assert sum(coll.calls) == 12 * 2 + 2 + 1
    assert len(coll.calls) < 8, coll.calls                 # 14 callers, a few round trips
    assert out[12] == {"old-3"}
    # exactly one of the two writers of e0-a got it; the other was told it existed
    assert (out[0] == {"e0-a"}) != (out[13] == {"e0-a"})
    assert all(out[i] == set() for i in range(1, 12))
    assert coll.coll.count_documents({}) == 1 + 12 * 2 + 1


def test_a_failed_write_fails_only_its_callers_and_the_next_write_goes_on():
    coll = SlowColl()
    g = GroupInsert(coll)
    coll.fail_with = AutoReconnect("connection refused")
    with pytest.raises(AutoReconnect):
        g.insert([{"_id": "a"}])
    coll.fail_with = None
    assert g.insert([{"_id": "b"}]) == set()
    assert coll.coll.count_documents({}) == 1


def test_every_caller_of_a_failed_group_gets_the_error():
    coll = SlowColl(delay=0.1)
    coll.fail_with = AutoReconnect("down")
    g = GroupInsert(coll)
    _, errors = run_concurrently([lambda i=i: g.insert([{"_id": str(i)}]) for i in range(6)])
    assert all(isinstance(e, AutoReconnect) for e in errors), errors


def test_other_write_errors_reach_only_the_caller_whose_document_failed():
    class Picky(SlowColl):
        def insert_many(self, docs, ordered=True):
            self.calls.append(len(docs))
            errors = [{"index": i, "code": 121, "errmsg": "validation"}
                      for i, d in enumerate(docs) if d.get("bad")]
            for d in docs:
                if not d.get("bad"):
                    self.coll.insert_one(d)
            if errors:
                raise BulkWriteError({"writeErrors": errors, "nInserted": len(docs) - len(errors)})
    coll = Picky(delay=0)
    g = GroupInsert(coll)
    out, errors = run_concurrently([lambda: g.insert([{"_id": "ok"}]),
                                    lambda: g.insert([{"_id": "x", "bad": True}])])
    assert out[0] == set() and errors[0] is None
    assert isinstance(errors[1], BulkWriteError)


def test_batches_are_capped():
    coll = SlowColl(delay=0.05)
    g = GroupInsert(coll, max_docs=10)
    out, errors = run_concurrently([lambda i=i: g.insert([{"_id": f"{i}-{k}"} for k in range(4)])
                                    for i in range(8)])
    assert errors == [None] * 8
    assert max(coll.calls) <= 10 and sum(coll.calls) == 32
    assert g.insert([]) == set()


def test_receipts_share_the_events_collection_and_old_receipts_are_still_read():
    from datetime import datetime, timezone

    from services.intake.store import IntakeStore
    db = mongomock.MongoClient()["t"]
    store = IntakeStore(db)
    at = datetime(2024, 11, 5, tzinfo=timezone.utc)
    for eid in ("e-new", "e-old", "e-pending"):
        store.insert_pending([{"_id": eid, "hash": "h", "status": "pending"}])
    store.mark_published([("e-new", "t", 1, 7)], at)
    store.mark_published([("e-new", "t", 2, 9)], at)            # a second receipt: ignored
    db["intake_published"].insert_one({"_id": "e-old", "topic": "t", "partition": 0, "offset": 3,
                                       "published_at": at})      # written by an earlier version
    got = store.get_many(["e-new", "e-old", "e-pending", "e-missing"])
    assert (got["e-new"]["status"], got["e-new"]["partition"], got["e-new"]["offset"]) == ("published", 1, 7)
    assert (got["e-old"]["status"], got["e-old"]["offset"]) == ("published", 3)
    assert got["e-pending"]["status"] == "pending" and "e-missing" not in got
    assert db["intake_events"].find_one({"_id": "e-new/published"})["receipt_of"] == "e-new"
    assert db["intake_published"].count_documents({}) == 1      # nothing new written there
