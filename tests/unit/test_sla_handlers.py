"""The sla handler, loop and DLQ on fakes (in-memory repository, bus and consumer, a tiny engine
with the documented interface). The real engine and real Kafka/FerretDB: tests/integration."""
from __future__ import annotations

import json
from datetime import timedelta

import pytest

from shared.platform.clock import VirtualClock
from shared.platform.messaging import InMemoryBus, encode
from shared.platform.runtime import Backoff
from services.sla.dlq import DeadLetters, Origin, TooManyDeadLetters, printable
from services.sla.handlers import SlaHandler
from services.sla.projection import Incoming
from services.sla.loop import ConsumerLoop
from services.sla.repository import InMemoryRepository, StaleWrite

from helpers.sla import FAKE_CTX, FINDINGS, T0, FakeConsumer, FakeEngine, event, incoming, published, rec


@pytest.fixture
def world():
    clock = VirtualClock(T0)
    repo = InMemoryRepository()
    bus = InMemoryBus()
    handler = SlaHandler(repo, bus, FINDINGS, clock, ctx=FAKE_CTX, engine=FakeEngine)
    return clock, repo, bus, handler


def test_open_then_resolve_through_scheduler_and_events(world):
    clock, repo, bus, handler = world
    rec = event("D-1")
    assert handler.handle([incoming(rec)]) == []
    doc = repo.dossiers["D-1"]
    assert doc["next_check_at"] == T0 + timedelta(hours=1) and doc["partition"] == 0
    assert handler.check_due([0]) == 0          # not due yet
    clock.advance(timedelta(hours=1, seconds=1))
    assert handler.check_due([1]) == 0          # another instance's partition
    assert handler.check_due([0]) == 1
    assert published(bus) == [("D-1", "D-1:OVERDUE", "open", 1)]
    assert repo.dossiers["D-1"]["next_check_at"] is None
    handler.handle([incoming(event("D-1", "dossier.resolved", when=clock.now()), 1)])
    assert published(bus)[1:] == [("D-1", "D-1:OVERDUE", "resolved", 2)]
    f = repo.findings["D-1:OVERDUE"]
    assert (f["revision"], f["published_revision"], f["pending"]) == (2, 2, False)


def test_same_events_twice_change_nothing(world):
    clock, repo, bus, handler = world
    evs = [event("D-2"), event("D-2", "dossier.resolved", when=T0 + timedelta(hours=2))]
    clock.set(T0 + timedelta(hours=3))
    handler.handle([incoming(evs[0], 0)])
    handler.handle([incoming(evs[1], 1)])
    before = (dict(repo.findings), published(bus), repo.dossiers["D-2"]["event_ids"])
    handler.handle([incoming(evs[0], 0), incoming(evs[1], 1)])   # redelivered after a crash
    assert repo.dossiers["D-2"]["event_ids"] == before[2]
    assert published(bus) == before[1] == [("D-2", "D-2:OVERDUE", "open", 1),
                                           ("D-2", "D-2:OVERDUE", "resolved", 2)]
    assert repo.findings.keys() == before[0].keys()


def test_crash_between_store_and_publish_republishes_same_revision(world):
    clock, repo, bus, handler = world
    clock.set(T0 + timedelta(hours=2))
    bus.fail_with = RuntimeError("broker down")
    rec = event("D-3")
    with pytest.raises(RuntimeError):
        handler.handle([incoming(rec)])
    assert repo.findings["D-3:OVERDUE"]["pending"] is True and published(bus) == []
    bus.fail_with = None
    # start-up / partition assignment: what is stored but unpublished goes out
    assert handler.republish_pending(partitions=[0]) == 1
    assert published(bus) == [("D-3", "D-3:OVERDUE", "open", 1)]
    # the redelivered event changes nothing and publishes nothing more
    handler.handle([incoming(rec)])
    assert published(bus) == [("D-3", "D-3:OVERDUE", "open", 1)]


def test_unpublished_finding_goes_out_on_next_touch(world):
    clock, repo, bus, handler = world
    clock.set(T0 + timedelta(hours=2))
    bus.fail_with = RuntimeError("broker down")
    rec = event("D-4")
    with pytest.raises(RuntimeError):
        handler.handle([incoming(rec)])
    bus.fail_with = None
    handler.handle([incoming(rec)])     # redelivery touches the dossier
    assert published(bus) == [("D-4", "D-4:OVERDUE", "open", 1)]


def test_poison_and_refused_events_are_rejected_others_applied(world):
    clock, repo, bus, handler = world
    good = event("D-5")
    bad_json = incoming(None, 1, raw=b"{not json")
    bad_event = dict(event("D-5"), occurred_at="2024-11-05T08:00:00")   # naive instant
    refused = event("D-5", "dossier.withdrawn")
    wrong_key = Incoming("OTHER", encode(event("D-5")), 0, Origin("dossier.events", 0, 4))
    rej = handler.handle([incoming(good, 0), bad_json, incoming(bad_event, 2),
                          incoming(refused, 3), wrong_key])
    assert [r.reason for r in rej] == ["invalid_json", "invalid_event", "not_applicable", "key_mismatch"]
    assert "occurred_at" in rej[1].error
    assert repo.dossiers["D-5"]["event_ids"] == [good["event_id"]]


def test_instant_without_utc_form_is_dead_lettered_not_raised(world):
    """A valid ISO instant that overflows once in UTC (a message intake would refuse, written by
    something else) is a poison message: rejected with the field named, the batch goes on."""
    clock, repo, bus, handler = world
    good = event("D-7")
    bad = dict(event("D-7"), recorded_at="0001-01-01T00:00:00+07:00")
    rej = handler.handle([incoming(bad, 0), incoming(good, 1)])
    assert [r.reason for r in rej] == ["invalid_event"]
    assert "recorded_at" in rej[0].error and "out of range" in rej[0].error
    assert repo.dossiers["D-7"]["event_ids"] == [good["event_id"]]


def test_stale_write_is_detected(world):
    clock, repo, bus, handler = world
    handler.handle([incoming(event("D-6"))])
    other = SlaHandler(repo, bus, FINDINGS, clock, ctx=FAKE_CTX, engine=FakeEngine)
    stale = repo.load_dossiers(["D-6"])
    handler.handle([incoming(event("D-6", "dossier.resolved"), 1)])
    repo.load_dossiers = lambda codes: stale        # `other` read before `handler` wrote
    with pytest.raises(StaleWrite):
        other.handle([incoming(event("D-6", "dossier.resolved"), 1)])


# --- the loop --------------------------------------------------------------------------------
def test_loop_dead_letters_then_commits_and_goes_on(world):
    clock, repo, bus, handler = world
    consumer = FakeConsumer([[rec(event("D-7"), 0), rec(None, 1, raw=b"\xff\xfe"),
                              rec(event("D-8"), 2)]])
    loop = ConsumerLoop(consumer, handler, DeadLetters(bus, "dossier.events.dlq", clock, handler.metrics),
                        check_interval=0)
    loop.run_once()
    assert set(repo.dossiers) == {"D-7", "D-8"}
    assert consumer.commits == [{0: 3}]
    [dl] = bus.messages("dossier.events.dlq")
    assert dl.headers["dlq.origin.offset"] == "1" and dl.headers["dlq.reason"] == "invalid_json"
    assert dl.value["origin"] == {"topic": "dossier.events", "partition": 0, "offset": 1, "key": "D-x"}
    assert dl.value["value_encoding"] == "base64"
    assert handler.metrics.dead_letters.labels("invalid_json")._value.get() == 1


def test_loop_does_not_commit_when_the_store_fails(world):
    clock, repo, bus, handler = world
    repo.fail_save_with = ConnectionError("mongo down")
    consumer = FakeConsumer([[rec(event("D-9"), 0)]])
    loop = ConsumerLoop(consumer, handler, DeadLetters(bus, "dlq", clock), check_interval=0)
    loop._backoff = Backoff(0.01)
    loop.run_once()
    assert consumer.commits == [] and consumer.seeks == [0]


def test_loop_runs_scheduled_checks_on_its_partitions(world):
    clock, repo, bus, handler = world
    handler.handle([incoming(event("D-10"), 0, partition=0), incoming(event("D-11"), 0, partition=3)])
    clock.advance(timedelta(hours=2))
    loop = ConsumerLoop(FakeConsumer([], partitions=(0,)), handler, DeadLetters(bus, "dlq", clock),
                        check_interval=0)
    loop.run_once()
    assert [p[1] for p in published(bus)] == ["D-10:OVERDUE"]


def test_too_many_dead_letters_in_a_row_stops(world):
    clock, repo, bus, handler = world
    dl = DeadLetters(bus, "dlq", clock, max_in_a_row=3)
    bad = [incoming(None, i, raw=b"x") for i in range(2)]
    rej = handler.handle(bad)
    dl.send(rej, 2)
    with pytest.raises(TooManyDeadLetters):
        dl.send(handler.handle(bad), 2)


def test_dlq_printable_redacts_personal_data(world):
    clock, repo, bus, handler = world
    ev = dict(event("D-12"), extra_field=1)
    dl = DeadLetters(bus, "dlq", clock)
    dl.send(handler.handle([incoming(ev)]), 1)
    shown = printable(bus.messages("dlq")[0].value)
    text = json.dumps(shown, ensure_ascii=False)
    assert "0901234567" not in text and shown["value"]["data"]["applicant"]["phone"] == "***"
    assert "extra_field" in shown["error"]


def test_summary_records_actors_and_assignees_for_the_dashboard():
    from datetime import datetime, timezone

    from services.sla.projection import update_summary

    t1 = datetime(2026, 11, 2, 2, tzinfo=timezone.utc)
    t2 = datetime(2026, 11, 3, 2, tzinfo=timezone.utc)
    rec = {"event_id": "e1", "type": "dossier.received", "occurred_at": t1, "agency_code": "A",
           "actor": {"id": "tn", "name": "Tiếp Nhận", "role": "một cửa"},
           "data": {"procedure_code": "1.004873", "channel": "direct", "components": []}}
    asg = {"event_id": "e2", "type": "dossier.assigned", "occurred_at": t2, "agency_code": "A",
           "actor": {"id": "tp", "name": "Trưởng Phòng"}, "data": {"officer": {"id": "cb", "name": "Cán Bộ"}}}
    summary: dict = {}
    update_summary(summary, asg)
    held = dict(summary)
    update_summary(summary, rec)                      # arrives late: does not become the latest
    assert summary["actors"] == {"e1": {"id": "tn", "name": "Tiếp Nhận"}, "e2": {"id": "tp", "name": "Trưởng Phòng"}}
    assert summary["assignees"] == {"e2": {"id": "cb", "name": "Cán Bộ"}}
    assert summary["last_actor"] == {"id": "cb", "name": "Cán Bộ"} and summary["last_actor_at"] == t2
    assert held["actors"] == {"e2": {"id": "tp", "name": "Trưởng Phòng"}}   # the earlier copy is untouched
    again = dict(summary)
    update_summary(again, asg)
    assert again == summary                           # idempotent
