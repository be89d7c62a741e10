"""The sla loop with pipelined writes (ConsumerLoop(pipeline=True)): a batch is prepared on the
held copies while the previous batch's store write and publish run on the writer thread.
Fakes: in-memory repository (its save gated by a threading.Event), bus, consumer, tiny engine."""
from __future__ import annotations

import threading
import time
from datetime import timedelta

import pytest
from kafka import TopicPartition

from shared.platform.clock import VirtualClock
from shared.platform.messaging import InMemoryBus
from shared.platform.runtime import Backoff
from services.sla.dlq import DeadLetters
from services.sla.handlers import SlaHandler
from services.sla.loop import ConsumerLoop
from services.sla.repository import InMemoryRepository, StaleWrite

from helpers.sla import FAKE_CTX, FINDINGS, T0, FakeConsumer, FakeEngine, event, incoming, published, rec

TP0 = TopicPartition("dossier.events", 0)


class GatedRepository(InMemoryRepository):
    """save() waits for `gate`, then raises `fail` once if set."""

    def __init__(self):
        super().__init__()
        self.gate = threading.Event()
        self.gate.set()
        self.fail: Exception | None = None
        self.saves = 0

    def save(self, dossiers, findings, now):
        assert self.gate.wait(10)
        self.saves += 1
        if self.fail is not None:
            exc, self.fail = self.fail, None
            raise exc
        return super().save(dossiers, findings, now)


@pytest.fixture
def world():
    clock = VirtualClock(T0)
    repo = GatedRepository()
    bus = InMemoryBus()
    a = SlaHandler(repo, bus, FINDINGS, clock, ctx=FAKE_CTX, engine=FakeEngine)
    a.assign([0])
    return clock, repo, bus, a


def pipelined(consumer, handler, bus, clock, **kw):
    loop = ConsumerLoop(consumer, handler, DeadLetters(bus, "dlq", clock), check_interval=3600,
                        pipeline=True, **kw)
    loop._assigned = set(consumer.assignment())      # already held
    loop._backoff = Backoff(0.01)
    loop._last_check = time.monotonic()              # no scheduled checks in these tests
    return loop


def wait_until(cond, timeout=5.0):
    end = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < end, "condition not reached"
        time.sleep(0.01)


def test_next_batch_is_prepared_while_the_first_is_written_and_commits_follow_the_writes(world):
    clock, repo, bus, a = world
    clock.set(T0 + timedelta(hours=2))               # overdue on receipt: a finding per dossier
    consumer = FakeConsumer([[rec(event("D-1"), 0)], [rec(event("D-2"), 1)], []])
    loop = pipelined(consumer, a, bus, clock)
    repo.gate.clear()
    loop.run_once()                                  # D-1 prepared, its write waits
    loop.run_once()                                  # D-2 prepared on top, nothing written yet
    assert "D-1" in a.cache.docs[0] and "D-2" in a.cache.docs[0]
    assert repo.dossiers == {} and consumer.commits == [] and published(bus) == []
    repo.gate.set()
    loop.run_once()                                  # nothing polled: wait for the writes, commit
    assert consumer.commits == [{0: 2}]              # both batches written: one commit
    assert set(repo.dossiers) == {"D-1", "D-2"}
    assert sorted(published(bus)) == [("D-1", "D-1:OVERDUE", "open", 1), ("D-2", "D-2:OVERDUE", "open", 1)]
    assert a.publication.in_flight == {} and loop.batches == 2


def test_a_failed_write_commits_nothing_after_it_and_puts_the_held_copies_back(world):
    clock, repo, bus, a = world
    a.handle([incoming(event("D-0"))])               # stored and held before (next check T0 + 1 h)
    clock.set(T0 + timedelta(hours=2))
    held_before = dict(a.cache.docs[0]), dict(a.cache.findings)
    repo.saves = 0
    d1, d2, d0 = event("D-1"), event("D-2"), event("D-0", "dossier.resolved", when=T0 + timedelta(minutes=5))
    consumer = FakeConsumer([[rec(d1, 1)], [rec(d2, 2), rec(d0, 3)], [], [rec(d1, 1), rec(d2, 2), rec(d0, 3)], []])
    loop = pipelined(consumer, a, bus, clock)
    repo.gate.clear()
    repo.fail = ConnectionError("store down")
    loop.run_once()
    loop.run_once()                                  # batch 2 queued behind the failing one
    repo.gate.set()
    loop.run_once()
    assert consumer.commits == [] and consumer.seeks == [0]     # rewound to the committed offset
    assert repo.saves == 1                           # batch 2 was skipped, not written
    assert set(repo.dossiers) == {"D-0"} and repo.dossiers["D-0"]["closed"] is False
    assert (dict(a.cache.docs[0]), dict(a.cache.findings)) == held_before
    assert a.publication.in_flight == {} and not loop._inflight and published(bus) == []
    loop.run_once()                                  # read again: applied once
    loop.run_once()
    assert consumer.commits == [{0: 4}]
    assert set(repo.dossiers) == {"D-0", "D-1", "D-2"} and repo.dossiers["D-0"]["closed"] is True
    assert sorted(published(bus)) == [("D-1", "D-1:OVERDUE", "open", 1), ("D-2", "D-2:OVERDUE", "open", 1)]


class RecheckingEngine(FakeEngine):
    """The fake engine, but an overdue dossier is looked at again every hour (stays held open)."""

    @staticmethod
    def evaluate(state, now, ctx):
        ev = FakeEngine.evaluate(state, now, ctx)
        if ev.findings:
            ev.next_check_at = now + timedelta(hours=1)
        return ev


def test_a_finding_in_flight_is_not_published_again_by_the_next_batch(world):
    clock, repo, bus, a = world
    a.engine = RecheckingEngine
    clock.set(T0 + timedelta(hours=2))
    ev = event("D-3")
    consumer = FakeConsumer([[rec(ev, 0)], [rec(ev, 0)], []])  # the same event twice (redelivery)
    loop = pipelined(consumer, a, bus, clock)
    repo.gate.clear()
    loop.run_once()
    loop.run_once()                                  # D-3's finding is pending in the held copy
    repo.gate.set()
    loop.run_once()
    assert published(bus) == [("D-3", "D-3:OVERDUE", "open", 1)]
    assert consumer.commits == [{0: 1}]


def test_a_stale_write_in_flight_reloads_the_partition_and_rewinds(world):
    clock, repo, bus, a = world
    a.handle([incoming(event("D-5"))])
    b = SlaHandler(repo, bus, FINDINGS, clock, ctx=FAKE_CTX, engine=FakeEngine)
    b.assign([0])
    b.handle([incoming(event("D-5", "dossier.resolved", when=T0 + timedelta(minutes=1)), 1)])
    consumer = FakeConsumer([[rec(event("D-5", "dossier.resolved", when=T0 + timedelta(minutes=2)), 2)],
                             [rec(event("D-6"), 3)], []])
    loop = pipelined(consumer, a, bus, clock)
    repo.gate.clear()
    loop.run_once()
    loop.run_once()
    repo.gate.set()
    loop.run_once()
    assert a.metrics.stale_retries._value.get() == 1
    assert consumer.commits == [] and consumer.seeks == [0]
    assert a.cache.docs[0]["D-5"] is None            # reloaded: b's resolved (closed) version
    assert "D-6" not in a.cache.docs[0] and "D-6" not in repo.dossiers


def test_a_batch_that_needs_a_store_read_waits_for_the_writes_in_flight(world):
    clock, repo, bus, a = world
    other = rec(event("D-8"), 1)
    other.partition = 3                              # a partition not held: read by _id
    consumer = FakeConsumer([[rec(event("D-7"), 0)], [other], []])
    consumer.tps.add(TopicPartition("dossier.events", 3))
    loop = pipelined(consumer, a, bus, clock)
    loop._assigned = {TP0}                           # 3 "assigned" without a load: not held
    loop._track_assignment = lambda: None
    repo.gate.clear()
    loop.run_once()
    assert len(loop._inflight) == 1
    threading.Timer(0.2, repo.gate.set).start()
    loop.run_once()                                  # drains D-7 first, then D-8 synchronously
    assert consumer.commits == [{0: 1}, {3: 2}] and not loop._inflight


def test_revocation_waits_for_the_writes_and_their_offsets_on_revoked_partitions_stay_uncommitted(world):
    clock, repo, bus, a = world
    a.publication.defer_marks = True                             # as in the worker
    clock.set(T0 + timedelta(hours=2))
    consumer = FakeConsumer([[rec(event("D-9"), 0)], []])
    loop = pipelined(consumer, a, bus, clock)
    repo.gate.clear()
    loop.run_once()
    threading.Timer(0.2, repo.gate.set).start()
    loop.listener().on_partitions_revoked({TP0})     # inside poll: waits for the write
    assert "D-9" in repo.dossiers and loop._inflight[0].future.done()
    # recorded as published before the hand-over: the new owner does not publish it again
    assert repo.findings["D-9:OVERDUE"]["pending"] is False
    assert published(bus) == [("D-9", "D-9:OVERDUE", "open", 1)]
    consumer.tps = set()                             # handed over
    loop.run_once()
    assert consumer.commits == [] and not loop._inflight and not a.cache.holds(0)


def test_stop_drains_and_commits_what_is_in_flight(world):
    clock, repo, bus, a = world
    consumer = FakeConsumer([[rec(event("D-10"), 0)]])
    loop = pipelined(consumer, a, bus, clock)
    repo.gate.clear()

    run_once = loop.run_once

    def once_then_stop():
        run_once()
        loop.stop()
        threading.Timer(0.1, repo.gate.set).start()
    loop.run_once = once_then_stop
    loop.run()
    assert consumer.commits == [{0: 1}] and consumer.closed and "D-10" in repo.dossiers


def test_records_polled_with_a_new_assignment_are_not_applied_after_a_failed_write(world):
    clock, repo, bus, a = world
    later = rec(event("D-12"), 1)
    consumer = FakeConsumer([[rec(event("D-11"), 0)], [later]])
    loop = pipelined(consumer, a, bus, clock)
    repo.gate.clear()
    repo.fail = ConnectionError("store down")
    loop.run_once()                                  # D-11 in flight (its write will fail)
    consumer.tps.add(TopicPartition("dossier.events", 1))   # a partition comes with the next poll
    threading.Timer(0.1, repo.gate.set).start()
    loop.run_once()                                  # the drain for the new partition sees the failure
    assert loop.write_failures == 1 and consumer.commits == []
    assert "D-12" not in a.cache.docs[0] and "D-12" not in repo.dossiers
    assert consumer.seeks == [0, 0]                  # D-11's batch, then the batch polled after it


def test_a_poll_is_written_in_parts_and_a_failed_part_stops_the_rest(world):
    clock, repo, bus, a = world
    evs = [event(f"E-{i}") for i in range(5)]
    consumer = FakeConsumer([[rec(e, i) for i, e in enumerate(evs)], [], []])
    loop = pipelined(consumer, a, bus, clock, write_batch=2)
    saves = []
    orig = repo.save

    def save(dossiers, findings, now):
        saves.append(sorted(w.code for w in dossiers))
        if len(saves) == 2:
            raise ConnectionError("store down")
        return orig(dossiers, findings, now)
    repo.save = save
    loop.run_once()
    loop.run_once()
    assert saves[0] == ["E-0", "E-1"] and saves[1] == ["E-2", "E-3"] and len(saves) == 2
    assert consumer.commits == [{0: 2}]              # the first part only
    assert set(repo.dossiers) == {"E-0", "E-1"} and set(a.cache.docs[0]) == {"E-0", "E-1"}
    assert loop.write_failures == 1 and consumer.seeks == [0]


def test_held_dossiers_are_sent_as_the_bson_the_held_copy_was_made_from(world):
    import bson

    from services.sla.repository import dossier_doc, stored_dossier
    clock, repo, bus, a = world
    pending = a.prepare([incoming(event("B-1"))])
    [w] = pending.dossiers
    assert w.raw is not None and bson.decode(w.raw) == bson.decode(bson.encode(dossier_doc(w, pending.now)))
    assert stored_dossier(w, pending.now).raw == w.raw
    a.abandon(pending, None)                         # nothing stored: the held copy goes back
    assert "B-1" not in a.cache.docs[0]


def test_commits_while_batches_keep_coming_are_spaced_and_all_made_when_idle(world):
    clock, repo, bus, a = world
    consumer = FakeConsumer([[rec(event(f"C-{i}"), i)] for i in range(4)] + [[]])
    loop = pipelined(consumer, a, bus, clock, commit_interval=3600)
    loop._last_commit = time.monotonic()
    for _ in range(4):
        loop.run_once()
    wait_until(lambda: len(repo.dossiers) == 4)
    assert consumer.commits == []                    # written, not committed yet: the interval
    loop.run_once()                                  # nothing polled: everything written is committed
    assert consumer.commits == [{0: 4}]
