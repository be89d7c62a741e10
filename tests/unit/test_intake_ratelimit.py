"""shared.platform.auth.RateLimiter with per-process counting (`sync_seconds` > 0), as intake uses it:
fewer MongoDB round trips, exact near the limit, overshoot within the documented bound."""
from datetime import datetime, timedelta, timezone

import mongomock
import pytest

import shared.platform.auth as auth
from shared.platform.auth import AuthError, RateLimiter
from shared.platform.clock import VirtualClock


class CountingColl:
    """Wraps a mongomock collection and counts the increments sent to it."""

    def __init__(self, coll):
        self._coll = coll
        self.round_trips = 0

    def find_one_and_update(self, *a, **kw):
        self.round_trips += 1
        return self._coll.find_one_and_update(*a, **kw)

    def __getattr__(self, name):
        return getattr(self._coll, name)


@pytest.fixture
def clock():
    return VirtualClock(datetime(2024, 11, 5, 2, 0, 30, tzinfo=timezone.utc))


def limiter(db, clock, limit, sync):
    lim = RateLimiter(db, limit=limit, window_seconds=60, clock=clock, sync_seconds=sync)
    lim.coll = CountingColl(lim.coll)
    return lim


def admitted(lim, key, n) -> int:
    ok = 0
    for _ in range(n):
        try:
            lim.hit(key)
            ok += 1
        except AuthError as exc:
            assert exc.status == 429 and exc.retry_after == 30
    return ok


def shared_count(db, key, clock) -> int:
    epoch = int(clock.now().timestamp())
    doc = db["rate_limits"].find_one({"_id": f"{key}:{epoch - epoch % 60}"})
    return doc["count"] if doc else 0


def test_one_process_is_exact_with_few_round_trips(clock):
    db = mongomock.MongoClient()["t"]
    lim = limiter(db, clock, limit=200, sync=3600)
    assert admitted(lim, "k", 260) == 200
    # first hit, one flush at the margin (200 // 10 = 20), then one per hit inside the margin
    # and one per refused hit: 1 + 1 + 19 + 60 — against 260 with sync_seconds=0
    assert lim.coll.round_trips == 81
    assert shared_count(db, "k", clock) == 260       # refused hits count too, as before


def test_every_hit_counts_in_mongo_without_sync(clock):
    db = mongomock.MongoClient()["t"]
    lim = limiter(db, clock, limit=200, sync=0)
    assert admitted(lim, "k", 210) == 200
    assert lim.coll.round_trips == 210


def test_small_limits_stay_exact_across_processes(clock):
    db = mongomock.MongoClient()["t"]
    a, b = limiter(db, clock, 10, 3600), limiter(db, clock, 10, 3600)
    results = [admitted(x, "k", 1) for _ in range(8) for x in (a, b)]
    assert sum(results) == 10 and results[:10] == [1] * 10


def test_sync_interval_elapsed_means_exact(clock, monkeypatch):
    t = [1000.0]
    monkeypatch.setattr(auth.time, "monotonic", lambda: t[0])
    db = mongomock.MongoClient()["t"]
    a, b = limiter(db, clock, 100, 1.0), limiter(db, clock, 100, 1.0)
    total = 0
    for _ in range(80):
        for x in (a, b):
            t[0] += 1.5                  # every hit comes after the sync interval
            total += admitted(x, "k", 1)
    assert total == 100


def test_two_processes_overshoot_within_the_documented_bound(clock):
    """Neither process syncs within the interval: each admits locally up to limit - margin
    on what it last saw; the excess is at most the hits the other left unflushed."""
    db = mongomock.MongoClient()["t"]
    limit, margin = 100, 10
    a, b = limiter(db, clock, limit, 3600), limiter(db, clock, limit, 3600)
    admitted_a, admitted_b = admitted(a, "k", 60), 0
    unflushed_a = 60 - 1                 # a synced on its first hit only
    admitted_b = admitted(b, "k", 200)
    total = admitted_a + admitted_b
    assert total > limit                 # the trade-off exists…
    assert total - limit <= min(unflushed_a, limit - margin)     # …and stays inside the bound
    # a goes on locally until its own view reaches the margin, then syncs and refuses
    more_a = admitted(a, "k", 100)
    assert more_a == (limit - margin - 1) - unflushed_a
    total += more_a
    assert total - limit <= limit - margin           # the bound with S × r unbounded
    with pytest.raises(AuthError):
        a.hit("k")


def test_new_window_resets_and_drops_old_windows(clock):
    db = mongomock.MongoClient()["t"]
    lim = limiter(db, clock, limit=50, sync=3600)
    assert admitted(lim, "k", 60) == 50
    clock.advance(timedelta(seconds=60))
    assert admitted(lim, "k", 5) == 5
    assert db["rate_limits"].count_documents({"key_id": "k"}) == 1


def test_mongo_failure_propagates_and_keeps_local_hits(clock):
    db = mongomock.MongoClient()["t"]
    lim = limiter(db, clock, limit=100, sync=3600)
    lim.hit("k")
    for _ in range(9):
        lim.hit("k")                     # local
    boom = RuntimeError("mongo down")

    def fail(*a, **kw):
        raise boom
    real = lim.coll.find_one_and_update
    lim.coll.find_one_and_update = fail
    lim._local["k"][3] = float("-inf")   # force a sync on the next hit
    with pytest.raises(RuntimeError):
        lim.hit("k")
    lim.coll.find_one_and_update = real
    lim.hit("k")                         # retries the sync: 1 + 9 kept + this one
    assert shared_count(db, "k", clock) == 11


def test_negative_sync_rejected():
    with pytest.raises(ValueError, match="sync interval"):
        RateLimiter(mongomock.MongoClient()["t"], 10, 60, sync_seconds=-1)
