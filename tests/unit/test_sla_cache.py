"""The sla handler's in-memory copy of its partitions (StateCache): loaded on assignment, kept in
step with its writes, dropped on revocation, never trusted over the store when another instance
wrote in between (fakes: in-memory repository and bus, the tiny engine of tests/helpers/sla.py)."""
from __future__ import annotations

from datetime import timedelta

import pytest
from kafka import TopicPartition

from shared.platform.clock import VirtualClock
from shared.platform.messaging import InMemoryBus
from services.sla.dlq import DeadLetters
from services.sla.handlers import SlaHandler
from services.sla.loop import ConsumerLoop
from services.sla.repository import InMemoryRepository, StaleWrite

from helpers.sla import FAKE_CTX, FINDINGS, T0, FakeConsumer, FakeEngine, event, incoming, published, rec


@pytest.fixture
def two():
    clock = VirtualClock(T0)
    repo = InMemoryRepository()
    bus = InMemoryBus()
    a = SlaHandler(repo, bus, FINDINGS, clock, ctx=FAKE_CTX, engine=FakeEngine)
    b = SlaHandler(repo, bus, FINDINGS, clock, ctx=FAKE_CTX, engine=FakeEngine)
    return clock, repo, bus, a, b


def test_held_partition_needs_no_store_reads(two):
    clock, repo, bus, a, _ = two
    a.handle([incoming(event("D-1"))])
    assert a.assign([0]) == (1, 0)
    reads = []
    orig = repo.load_dossiers
    repo.load_dossiers = lambda codes: reads.append(list(codes)) or orig(codes)
    a.handle([incoming(event("D-2")), incoming(event("D-1", "dossier.resolved"), 1)])
    assert reads == []                       # D-2 is new, D-1 is held: no lookups
    assert repo.dossiers["D-1"]["closed"] is True and "D-2" in repo.dossiers
    clock.advance(timedelta(hours=1, seconds=1))
    a.check_due([0])
    assert reads == []
    assert published(bus) == [("D-2", "D-2:OVERDUE", "open", 1)]


def test_revoked_then_reassigned_sees_what_the_other_instance_did(two):
    clock, repo, bus, a, b = two
    a.assign([0])
    a.handle([incoming(event("D-3"))])
    a.forget_partitions([0])                 # rebalance: b owns partition 0 now
    assert a.cache.size() == 0
    b.assign([0])
    resolved = event("D-3", "dossier.resolved", when=T0 + timedelta(minutes=5))
    b.handle([incoming(resolved, 1)])
    b.forget_partitions([0])
    a.assign([0])                            # back to a: reloaded from the store
    clock.set(T0 + timedelta(hours=2))
    assert a.check_due([0]) == 0             # resolved by b: nothing due, no finding
    late = event("D-3", "dossier.resolved", when=clock.now())
    a.handle([incoming(late, 2)])
    assert repo.dossiers["D-3"]["event_ids"][-2:] == [resolved["event_id"], late["event_id"]]
    assert repo.dossiers["D-3"]["rev"] == 3 and published(bus) == []


def test_stale_copy_without_revocation_notice_is_refused_then_reloaded(two):
    clock, repo, bus, a, b = two
    a.assign([0])
    first = event("D-4")
    a.handle([incoming(first)])
    b.assign([0])                            # a missed its revocation
    other = event("D-4", "dossier.resolved", when=T0 + timedelta(minutes=1))
    b.handle([incoming(other, 1)])
    mine = event("D-4", "dossier.resolved", when=T0 + timedelta(minutes=2))
    with pytest.raises(StaleWrite):
        a.handle([incoming(mine, 2)])
    assert repo.dossiers["D-4"]["event_ids"] == [first["event_id"], other["event_id"]]
    a.handle([incoming(mine, 2)])            # the loop re-reads the batch: now on fresh state
    assert repo.dossiers["D-4"]["event_ids"] == [first["event_id"], other["event_id"], mine["event_id"]]


def test_new_dossier_created_elsewhere_is_refused_not_overwritten(two):
    clock, repo, bus, a, b = two
    a.assign([0])
    b.assign([0])
    theirs = event("D-5")
    b.handle([incoming(theirs)])
    mine = event("D-5", "dossier.resolved")
    with pytest.raises(StaleWrite):
        a.handle([incoming(mine, 1)])        # a believed D-5 did not exist
    a.handle([incoming(mine, 1)])
    assert repo.dossiers["D-5"]["event_ids"] == [theirs["event_id"], mine["event_id"]]


def test_scheduled_check_on_stale_copy_opens_nothing_for_a_resolved_dossier(two):
    clock, repo, bus, a, b = two
    a.assign([0])
    a.handle([incoming(event("D-6"))])
    b.assign([0])
    b.handle([incoming(event("D-6", "dossier.resolved", when=T0 + timedelta(minutes=1)), 1)])
    clock.set(T0 + timedelta(hours=2))
    with pytest.raises(StaleWrite):
        a.check_due([0])                     # b was assigned partition 0 after a: a writes nothing
    assert not a.cache.holds(0)
    assert a.check_due([0]) == 0
    assert published(bus) == [] and repo.findings == {}


def test_assignment_publishes_what_was_stored_but_not_published(two):
    clock, repo, bus, a, b = two
    clock.set(T0 + timedelta(hours=2))
    bus.fail_with = RuntimeError("broker down")
    b.assign([0])
    with pytest.raises(RuntimeError):
        b.handle([incoming(event("D-7"))])   # stored, then the instance dies
    bus.fail_with = None
    assert a.assign([0]) == (1, 1)
    assert published(bus) == [("D-7", "D-7:OVERDUE", "open", 1)]
    assert repo.findings["D-7:OVERDUE"]["pending"] is False


def test_deferred_marks_are_written_later_and_not_republished_meanwhile(two):
    clock, repo, bus, a, _ = two
    a.publication.defer_marks = True
    a.assign([0])
    clock.set(T0 + timedelta(hours=2))
    ev = event("D-8")
    a.handle([incoming(ev)])
    assert repo.findings["D-8:OVERDUE"]["pending"] is True and a.pending_marks() == 1
    a.handle([incoming(ev)])                 # redelivered: the held copy knows it went out
    assert published(bus) == [("D-8", "D-8:OVERDUE", "open", 1)]
    assert a.flush_marks() == 1
    f = repo.findings["D-8:OVERDUE"]
    assert (f["pending"], f["published_revision"]) == (False, 1)


def test_loop_reloads_a_partition_revoked_and_given_back_within_one_poll(two):
    clock, repo, bus, a, b = two
    consumer = FakeConsumer([[rec(event("D-9"), 0)], [], []], partitions=(0,))
    loop = ConsumerLoop(consumer, a, DeadLetters(bus, "dlq", clock), check_interval=0)
    loop.run_once()                          # assigned 0, D-9 stored and held
    assert a.cache.holds(0) and "D-9" in a.cache.docs[0]
    b.assign([0])
    b.handle([incoming(event("D-9", "dossier.resolved", when=T0 + timedelta(minutes=1)), 1)])
    tp = TopicPartition("dossier.events", 0)
    listener = loop.listener()
    listener.on_partitions_revoked({tp})     # both inside one poll: assignment() looks unchanged
    listener.on_partitions_assigned({tp})
    clock.set(T0 + timedelta(hours=2))
    loop.run_once()
    assert a.cache.decode(a.cache.docs[0]["D-9"]) if a.cache.docs[0]["D-9"] else True
    assert published(bus) == [] and a.metrics.stale_retries._value.get() == 0
    assert repo.dossiers["D-9"]["closed"] is True


def test_scheduled_check_publishes_before_the_dossier_write_and_survives_its_failure(two):
    clock, repo, bus, a, _ = two
    a.assign([0])
    a.handle([incoming(event("D-10"))])
    clock.set(T0 + timedelta(hours=2))
    saves = []
    orig = repo.save

    def save(dossiers, findings, now):
        saves.append((len(dossiers), len(findings)))
        if dossiers and not findings:
            raise ConnectionError("store gone after the findings were stored")
        return orig(dossiers, findings, now)
    repo.save = save
    with pytest.raises(ConnectionError):
        a.check_due([0])
    assert saves == [(0, 1), (1, 0)]         # finding stored, published, then the dossier
    assert published(bus) == [("D-10", "D-10:OVERDUE", "open", 1)]
    assert repo.dossiers["D-10"]["next_check_at"] is not None and "D-10:OVERDUE" not in repo.dossiers["D-10"]["finding_ids"]
    repo.save = orig
    a.check_due([0])                         # re-evaluated from the store: nothing new to publish
    assert published(bus) == [("D-10", "D-10:OVERDUE", "open", 1)]
    d = repo.dossiers["D-10"]
    assert d["next_check_at"] is None and d["finding_ids"] == ["D-10:OVERDUE"]
    assert repo.findings["D-10:OVERDUE"]["revision"] == 1


def test_far_next_checks_wait_in_day_buckets_and_still_fall_due(two):
    clock, repo, bus, a, _ = two
    a.assign([0])
    a.handle([incoming(event("D-11"))])                          # due T0 + 1 h: in the heap
    far = event("D-12", when=T0 + timedelta(days=3))             # due three days later
    a.handle([incoming(far)])
    assert [e[2] for e in a.scheduler.heap] == ["D-11"] and sum(map(len, a.scheduler.far.values())) == 1
    a.forget_partitions([0])
    a.assign([0])                                                # reloaded: same split
    assert sorted(e[2] for e in a.scheduler.heap) == ["D-11"] and a.scheduled() == 2
    clock.set(T0 + timedelta(days=3, hours=1, seconds=1))
    a.check_due([0])
    assert sorted(p[1] for p in published(bus)) == ["D-11:OVERDUE", "D-12:OVERDUE"]


def test_a_check_beyond_the_horizon_in_the_bucket_it_reaches_goes_straight_to_the_heap(two):
    """More than FAR_HORIZON_S away but in the day bucket that _promote takes now: into the heap
    at once (a far bucket would be promoted at the next look, decoding the held document)."""
    from services.sla.scheduler import FAR_BUCKET_S, FAR_HORIZON_S
    clock, repo, bus, a, _ = two
    a.assign([0])
    later = event("D-13", when=T0 + timedelta(hours=9))           # due T0 + 10 h: 11:00 UTC
    due = (T0 + timedelta(hours=10)).timestamp()
    now = clock.now().timestamp()
    assert due > now + FAR_HORIZON_S and due // FAR_BUCKET_S == (now + FAR_HORIZON_S) // FAR_BUCKET_S
    a.handle([incoming(later)])
    assert [e[2] for e in a.scheduler.heap] == ["D-13"] and not a.scheduler.far
    clock.set(T0 + timedelta(hours=10, seconds=1))
    a.check_due([0])
    assert [p[1] for p in published(bus)] == ["D-13:OVERDUE"]


def test_a_large_partition_is_loaded_between_polls_paused_and_its_records_read_again(two):
    """Loading is done in steps between polls (the consumer keeps polling: it stays in the group);
    until the partition is held it is paused, its records are rewound, it gets no checks."""
    clock, repo, bus, a, b = two
    b.handle([incoming(event(f"D-{i}"), i) for i in range(450)])      # stored by another instance
    clock.set(T0 + timedelta(hours=2))                                 # every one of them is due
    new = rec(event("N-1"), 0)
    consumer = FakeConsumer([[new], [new], [new], [new]], partitions=(0,))
    loop = ConsumerLoop(consumer, a, DeadLetters(bus, "dlq", clock), check_interval=0, load_step=0)
    loop.run_once()                          # 200 of 450 loaded: paused, N-1 rewound, no checks
    tp = TopicPartition("dossier.events", 0)
    assert consumer.paused == {tp} and consumer.seeks == [0] and consumer.commits == []
    assert "N-1" not in repo.dossiers and published(bus) == [] and loop._partitions() == []
    loop.run_once()                          # 400
    assert consumer.paused == {tp} and consumer.seeks == [0, 0] and "N-1" not in repo.dossiers
    loop.run_once()                          # all held: resumed, N-1 applied, the due ones checked
    assert consumer.paused == set() and a.cache.size() == 451 and consumer.commits == [{0: 1}]
    assert {m[0] for m in published(bus)} == {f"D-{i}" for i in range(450)} | {"N-1"}
    assert len(published(bus)) == 451 and a.metrics.stale_retries._value.get() == 0


@pytest.fixture(params=["host", "just-booted"])
def uptime(request, monkeypatch):
    """The host's time.monotonic(), and one of a machine booted 5 s ago (monotonic time counts
    from boot on Linux): the loop must not mistake its start for "a check ran at boot"."""
    if request.param == "just-booted":
        import time
        real = time.monotonic
        shift = real() - 5.0
        monkeypatch.setattr(time, "monotonic", lambda: real() - shift)
    return request.param


def test_a_burst_of_due_checks_is_spread_over_loop_turns(two, uptime):
    """Scheduled checks stop after check_budget seconds in a loop turn and go on after the next
    poll (a long burst must not keep the consumer from polling)."""
    clock, repo, bus, a, _ = two
    a.assign([0])
    a.handle([incoming(event(f"D-{i}"), i) for i in range(30)])
    clock.set(T0 + timedelta(hours=2))
    consumer = FakeConsumer([[], [], []], partitions=(0,))
    loop = ConsumerLoop(consumer, a, DeadLetters(bus, "dlq", clock), check_interval=3600,
                        check_limit=10, check_budget=0)
    loop._assigned = set(consumer.assignment())      # already held
    loop.run_once()
    assert len(published(bus)) == 10                 # one batch of 10, then the budget is spent
    loop.run_once()                                  # not check_interval later: more was due
    assert len(published(bus)) == 20
    loop.run_once()
    assert len(published(bus)) == 30
