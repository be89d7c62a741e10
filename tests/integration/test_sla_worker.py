"""The sla worker on a real Kafka broker and a real MongoDB-wire server (FerretDB in the dev stack).

Loop mechanics (DLQ, crash between store and commit, rebalance, rebuild) run with the small
engine of tests/helpers/sla.py (OVERDUE one hour after receipt) so that each test
controls exactly which findings must exist; test_sla_scenarios.py drives the real legal engine.
Each test uses its own topics, consumer group and database.
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from datetime import timedelta
from pathlib import Path

import pytest

from shared.platform.clock import FileClock, VirtualClock
from shared.platform.messaging import KafkaPublisher, encode
from services.sla.rebuild import rebuild
from services.sla.repository import MongoRepository, live_names, strip_dossier
from services.sla.worker import build_worker

from helpers.sla import FAKE_CTX, T0, FakeEngine, event
from helpers.sla_stack import FAST, Running, consume, wait_for

pytestmark = pytest.mark.integration
REPO_ROOT = Path(__file__).resolve().parents[2]


def test_events_scheduler_findings_and_dead_letters(settings, db):
    clock = VirtualClock(T0)
    w = Running(settings, clock, "g-" + uuid.uuid4().hex[:6])
    pub = KafkaPublisher(settings.kafka_bootstrap_servers)
    try:
        pub.publish(settings.topic_events, "D-1", event("D-1"))
        pub._producer.send(settings.topic_events, key=b"D-bad", value=b"\x00not json").get(10)
        pub.publish(settings.topic_events, "D-2", dict(event("D-2"), unexpected=True))
        pub.publish(settings.topic_events, "D-3", event("D-3"))
        repo = MongoRepository(db)
        wait_for(lambda: repo.findings.database[repo.names.dossiers].count_documents({}) == 2,
                 what="two dossiers stored")
        dlq = consume(settings, settings.topic_events_dlq, lambda rs: len(rs) >= 2)
        reasons = sorted(v["reason"] for _, v in dlq)
        assert reasons == ["invalid_event", "invalid_json"]
        bad = next(r for r, v in dlq if v["reason"] == "invalid_json")
        hdr = dict(bad.headers)
        assert hdr["dlq.origin.topic"].decode() == settings.topic_events
        assert int(hdr["dlq.origin.offset"].decode()) >= 0
        # the scheduler: move the clock past the due instant; findings appear within 2 s
        t_set = time.monotonic()
        clock.set(T0 + timedelta(hours=1, seconds=1))
        opened = consume(settings, settings.topic_findings, lambda rs: len(rs) >= 2, timeout=10)
        lag = time.monotonic() - t_set
        assert lag <= 2.5, f"detection lag {lag:.2f} s"
        assert sorted((v["finding_id"], v["state"], v["revision"]) for _, v in opened) == [
            ("D-1:OVERDUE", "open", 1), ("D-3:OVERDUE", "open", 1)]
        assert all(r.key.decode() == v["dossier_code"] for r, v in opened)
        pub.publish(settings.topic_events, "D-1", event("D-1", "dossier.resolved", when=clock.now()))
        msgs = consume(settings, settings.topic_findings, lambda rs: len(rs) >= 3, timeout=20)
        assert ("D-1:OVERDUE", "resolved", 2) in [(v["finding_id"], v["state"], v["revision"]) for _, v in msgs]
        f = repo.findings.find_one({"_id": "D-1:OVERDUE"})
        assert (f["revision"], f["published_revision"], f["pending"]) == (2, 2, False)
    finally:
        w.stop()
        pub.close()


def _worker_cmd(group, **consumer):
    code = ("import sys; sys.path.insert(0, %r);"
            "from helpers.sla import FAKE_CTX, FakeEngine;"
            "from services.sla.worker import build_worker;"
            "from shared.platform.config import Settings;"
            "w = build_worker(Settings.from_env(), ctx=FAKE_CTX, engine=FakeEngine, group_id=%r,"
            " consumer_config=%r);"
            "w.run()") % (str(REPO_ROOT / "tests"), group, dict(FAST, **consumer))
    return [sys.executable, "-c", code]


def test_kill_between_store_and_commit_loses_and_duplicates_nothing(settings, db, tmp_path):
    """SIGKILL a worker subprocess repeatedly mid-stream; a last one finishes the work."""
    clock_file = tmp_path / "clock"
    FileClock(clock_file).set(T0 + timedelta(hours=2))     # every dossier overdue on receipt
    env = dict(os.environ, KAFKA_BOOTSTRAP_SERVERS=settings.kafka_bootstrap_servers,
               MONGO_URI=settings.mongo_uri, MONGO_DB=settings.mongo_db,
               TOPIC_EVENTS=settings.topic_events, TOPIC_FINDINGS=settings.topic_findings,
               MOTCUA_CLOCK_FILE=str(clock_file))
    group = "g-" + uuid.uuid4().hex[:6]
    from services.sla.worker import ensure_sla_topics
    ensure_sla_topics(settings)
    n = 150
    pub = KafkaPublisher(settings.kafka_bootstrap_servers, linger_ms=5)
    futs = [pub.send(settings.topic_events, f"K-{i}", event(f"K-{i}")) for i in range(n)]
    for f in futs:
        f.get(20)
    repo = MongoRepository(db)
    kills = 0
    for _ in range(4):
        # small polls: many store/publish/commit cycles, so the kill lands inside one
        p = subprocess.Popen(_worker_cmd(group, max_poll_records=10), env=env, cwd=REPO_ROOT,
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            target = repo.dossiers.count_documents({}) + 15
            wait_for(lambda: repo.dossiers.count_documents({}) >= min(target, n) or p.poll() is not None,
                     timeout=60, what="progress before the kill")
        finally:
            p.send_signal(signal.SIGKILL)
            p.wait(10)
            kills += 1
        if repo.dossiers.count_documents({}) >= n:
            break
    p = subprocess.Popen(_worker_cmd(group), env=env, cwd=REPO_ROOT,
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_for(lambda: repo.findings.count_documents({"pending": False}) == n, timeout=120,
                 what="all findings stored and published")
    finally:
        p.send_signal(signal.SIGTERM)
        p.wait(20)
    assert repo.dossiers.count_documents({}) == n
    assert all(len(d["event_ids"]) == 1 for d in repo.dossiers.find({}, {"event_ids": 1}))
    assert repo.findings.count_documents({}) == n
    assert repo.findings.count_documents({"revision": 1}) == n   # never re-opened, never duplicated
    msgs = consume(settings, settings.topic_findings, lambda rs: {v["finding_id"] for _, v in rs}
                   >= {f"K-{i}:OVERDUE" for i in range(n)})
    by_id: dict = {}
    for _, v in msgs:
        by_id.setdefault((v["finding_id"], v["revision"]), []).append(v)
    assert {fid for fid, _ in by_id} == {f"K-{i}:OVERDUE" for i in range(n)}
    assert all(rev == 1 for _, rev in by_id)
    # a republished change is the same change (same id, revision and content)
    for copies in by_id.values():
        assert all(c == copies[0] for c in copies)
    print(f"\nkills={kills}, messages={len(msgs)} for {n} findings "
          f"({len(msgs) - n} republished copies of the same revision)")


def test_two_instances_share_partitions_through_rebalances(settings, db):
    clock = VirtualClock(T0 + timedelta(hours=2))
    group = "g-" + uuid.uuid4().hex[:6]
    pub = KafkaPublisher(settings.kafka_bootstrap_servers, linger_ms=5)
    a = Running(settings, clock, group)
    b = None
    n = 120
    try:
        for i in range(n // 2):
            pub.send(settings.topic_events, f"R-{i}", event(f"R-{i}"))
        pub.flush()
        b = Running(settings, clock, group)                 # forces a rebalance
        wait_for(lambda: len(b.worker.loop.consumer.assignment()) > 0, timeout=30, what="b assigned")
        parts_a = {tp.partition for tp in a.worker.loop.consumer.assignment()}
        parts_b = {tp.partition for tp in b.worker.loop.consumer.assignment()}
        assert parts_a and parts_b and not parts_a & parts_b
        for i in range(n // 2, n):
            pub.send(settings.topic_events, f"R-{i}", event(f"R-{i}"))
        pub.flush()
        a.stop()                                            # another rebalance: b takes all
        repo = MongoRepository(db)
        wait_for(lambda: repo.findings.count_documents({"pending": False}) == n, timeout=90,
                 what="every finding stored and published")
        assert b.worker.handler.metrics.events_applied._value.get() > 0
        assert a.worker.handler.metrics.events_applied._value.get() > 0
    finally:
        if b:
            b.stop()
        pub.close()
    assert repo.findings.count_documents({}) == n and repo.findings.count_documents({"revision": 1}) == n
    msgs = consume(settings, settings.topic_findings, lambda rs: len({v["finding_id"] for _, v in rs}) >= n)
    assert {(v["finding_id"], v["revision"]) for _, v in msgs} == {(f"R-{i}:OVERDUE", 1) for i in range(n)}


def test_rebuild_equals_live_and_switches_over(settings, db):
    clock = VirtualClock(T0)
    w = Running(settings, clock, "g-" + uuid.uuid4().hex[:6])
    pub = KafkaPublisher(settings.kafka_bootstrap_servers)
    try:
        for i in range(20):
            pub.publish(settings.topic_events, f"B-{i}", event(f"B-{i}"))
        live = MongoRepository(db)
        wait_for(lambda: live.dossiers.count_documents({}) == 20, what="20 dossiers")
        clock.set(T0 + timedelta(hours=1, seconds=1))
        wait_for(lambda: live.findings.count_documents({"pending": False}) == 20, what="20 open findings")
        for i in range(0, 20, 3):
            pub.publish(settings.topic_events, f"B-{i}", event(f"B-{i}", "dossier.resolved", when=clock.now()))
        wait_for(lambda: live.findings.count_documents({"pending": False}) == 20
                 and live.findings.count_documents({"state": "resolved"}) == 7, what="live findings")
    finally:
        w.stop()
        pub.close()
    res = rebuild(settings, db, clock, object(), engine=FakeEngine, suffix="t1")
    assert res.messages == 27 and res.rejected == 0 and res.switched
    assert live_names(db).dossiers == "dossiers_t1"
    rebuilt = MongoRepository.live(db)

    def dossiers(repo):
        return {d["_id"]: (strip_dossier(d), d["partition"], d["summary"], d["next_check_at"])
                for d in repo.dossiers.find({})}

    def findings(repo):
        return {d["_id"]: (d["state"], d["rule"], d["dossier_code"], d["due_at"]) for d in repo.findings.find({})}
    assert dossiers(rebuilt) == dossiers(live)
    assert findings(rebuilt) == findings(live)
    assert rebuilt.findings.count_documents({"pending": True}) == 0
    # the same replay in this process (one share of partitions) gives the same collections
    one = rebuild(settings, db, clock, object(), engine=FakeEngine, suffix="t2", switch=False, workers=1)
    assert (one.messages, one.rejected, one.dossiers, one.findings) == (27, 0, res.dossiers, res.findings)
    assert live_names(db).dossiers == "dossiers_t1"
    single = MongoRepository(db, one.names)
    assert dossiers(single) == dossiers(live) and findings(single) == findings(live)


def test_dlq_cli_show_and_redrive(settings, db):
    clock = VirtualClock(T0)
    w = Running(settings, clock, "g-" + uuid.uuid4().hex[:6])
    pub = KafkaPublisher(settings.kafka_bootstrap_servers)
    env = dict(os.environ, KAFKA_BOOTSTRAP_SERVERS=settings.kafka_bootstrap_servers,
               TOPIC_EVENTS=settings.topic_events, TOPIC_FINDINGS=settings.topic_findings)
    motcua = [str(Path(sys.executable).parent / "motcua")]     # the console script
    try:
        bad = dict(event("C-1"), surprise=1)            # unknown field: invalid_event
        pub.publish(settings.topic_events, "C-1", bad)
        consume(settings, settings.topic_events_dlq, lambda rs: len(rs) >= 1)
        out = subprocess.run(motcua + ["dlq", "show", "--json", "--limit", "5"], env=env, cwd=REPO_ROOT,
                             capture_output=True, text=True, timeout=60)
        assert out.returncode == 0, out.stderr
        [line] = [ln for ln in out.stdout.splitlines() if ln.startswith("{")]
        import json
        shown = json.loads(line)
        assert shown["reason"] == "invalid_event" and "surprise" in shown["error"]
        assert shown["origin"]["topic"] == settings.topic_events and shown["origin"]["key"] == "C-1"
        assert shown["value"]["data"]["applicant"]["phone"] == "***" and "0901234567" not in out.stdout
        dry = subprocess.run(motcua + ["dlq", "redrive", "--dry-run"], env=env, cwd=REPO_ROOT,
                             capture_output=True, text=True, timeout=60)
        assert dry.returncode == 0 and "would redrive 1 message(s)" in dry.stdout
        real = subprocess.run(motcua + ["dlq", "redrive"], env=env, cwd=REPO_ROOT,
                              capture_output=True, text=True, timeout=60)
        assert real.returncode == 0 and "redrove 1 message(s)" in real.stdout
        # still invalid: the worker dead-letters it again, with the redriven copy's origin (and
        # the redrive's marker is in the DLQ too)
        recs = consume(settings, settings.topic_events_dlq, lambda rs: len(rs) >= 3)
        assert sorted(v["origin"]["offset"] for _, v in recs if "origin" in v) == [0, 1]
        bad_limit = subprocess.run(motcua + ["dlq", "show", "--limit", "0"], env=env, cwd=REPO_ROOT,
                                   capture_output=True, text=True, timeout=60)
        assert bad_limit.returncode == 2 and "at least 1" in bad_limit.stderr
    finally:
        w.stop()
        pub.close()


def test_rebuild_cli_refuses_while_workers_run_and_lag_is_reported(settings, db):
    from services.sla.api import consumer_lag
    clock = VirtualClock(T0)
    group = "g-" + uuid.uuid4().hex[:6]
    w = Running(settings, clock, group)
    pub = KafkaPublisher(settings.kafka_bootstrap_servers)
    env = dict(os.environ, KAFKA_BOOTSTRAP_SERVERS=settings.kafka_bootstrap_servers,
               MONGO_DB=settings.mongo_db, TOPIC_EVENTS=settings.topic_events,
               TOPIC_FINDINGS=settings.topic_findings)
    try:
        for i in range(5):
            pub.publish(settings.topic_events, f"M-{i}", event(f"M-{i}"))
        wait_for(lambda: sum(consumer_lag(settings, group).values()) == 0
                 and db.dossiers.count_documents({}) == 5, what="group caught up")
        lag = consumer_lag(settings, group)
        assert len(lag) == 6 and set(lag.values()) == {0}
        out = subprocess.run([str(Path(sys.executable).parent / "motcua"), "rebuild", "--group", group], env=env,
                             cwd=REPO_ROOT, capture_output=True, text=True, timeout=60)
        assert out.returncode == 2 and "stop the sla workers" in out.stderr
        assert live_names(db).dossiers == "dossiers"        # nothing switched
    finally:
        w.stop()
        pub.close()


def test_partition_back_from_another_instance_is_reloaded_not_stale(settings, db):
    """A holds every partition, B takes some and resolves dossiers there, B leaves: A, given the
    partitions back, works on what B stored (re-read at assignment), not on what it held before."""
    clock = VirtualClock(T0)
    group = "g-" + uuid.uuid4().hex[:6]
    pub = KafkaPublisher(settings.kafka_bootstrap_servers, linger_ms=5)
    repo = MongoRepository(db)
    n = 24
    a = Running(settings, clock, group)
    b = None
    try:
        for i in range(n):
            pub.send(settings.topic_events, f"S-{i}", event(f"S-{i}"))
        pub.flush()
        wait_for(lambda: repo.dossiers.count_documents({}) == n, what="A stored every dossier")
        b = Running(settings, clock, group)
        wait_for(lambda: len(b.worker.loop.consumer.assignment()) > 0
                 and len(a.worker.loop.consumer.assignment()) < 6, timeout=30, what="B assigned")
        resolved = {f"S-{i}": event(f"S-{i}", "dossier.resolved", when=T0 + timedelta(minutes=5))
                    for i in range(n)}
        for code, ev in resolved.items():
            pub.send(settings.topic_events, code, ev)
        pub.flush()
        wait_for(lambda: repo.dossiers.count_documents({"closed": True}) == n, what="all resolved")
        assert b.worker.handler.metrics.events_applied._value.get() > 0     # B resolved some
        b.stop()
        b = None
        wait_for(lambda: len(a.worker.loop.consumer.assignment()) == 6, timeout=30, what="A has all back")
        wait_for(lambda: a.worker.handler.cache.partitions() == set(range(6)), what="A holds all")
        # past every due instant: a stale copy would see open dossiers and report them overdue
        clock.set(T0 + timedelta(hours=2))
        late = {f"S-{i}": event(f"S-{i}", "dossier.resolved", when=clock.now()) for i in range(n)}
        for code, ev in late.items():
            pub.send(settings.topic_events, code, ev)
        pub.flush()
        wait_for(lambda: all(len(d["event_ids"]) == 3 for d in repo.dossiers.find({}, {"event_ids": 1})),
                 what="A applied the third event on every dossier")
        time.sleep(1.5)                                   # three scheduler rounds
        assert a.worker.handler.metrics.stale_retries._value.get() == 0   # reloaded, never refused
        assert repo.findings.count_documents({}) == 0     # nothing was ever overdue
        for d in repo.dossiers.find({}):
            assert d["event_ids"][1:] == [resolved[d["_id"]]["event_id"], late[d["_id"]]["event_id"]]
    finally:
        if b:
            b.stop()
        a.stop()
        pub.close()


def test_a_failed_background_write_rewinds_and_commits_nothing_after_it(settings, db):
    """Pipelined writes (the worker's default): a batch's store write fails on the writer thread
    while the next batches are prepared on the held copies. When the failure is handled the group's
    committed offsets are still at or before its first record on each of its partitions (nothing
    after it was committed), the batches queued behind it were not written, and in the end every
    event is applied once and every finding is published once."""
    from kafka import TopicPartition

    clock = VirtualClock(T0 + timedelta(hours=2))           # overdue on receipt: one finding each
    group = "g-" + uuid.uuid4().hex[:6]
    n = 300
    pub = KafkaPublisher(settings.kafka_bootstrap_servers, linger_ms=5)
    for i in range(n):
        pub.send(settings.topic_events, f"F-{i}", event(f"F-{i}"))
    pub.flush()
    pub.close()
    worker = build_worker(settings, clock, ctx=FAKE_CTX, engine=FakeEngine, group_id=group,
                          consumer_config=FAST, max_records=20)
    loop = worker.loop
    assert loop.pipeline
    writes = []
    write = worker.handler.write

    def failing_write(pending):
        writes.append(len(pending.dossiers))
        if len(writes) == 3:
            time.sleep(0.5)                                 # the next batches are prepared meanwhile
            raise ConnectionError("store unavailable (injected)")
        return write(pending)
    worker.handler.write = failing_write
    failures = []
    fail = loop._fail

    def recording_fail(exc):
        chain = list(loop._inflight)
        first: dict[int, int] = {}
        for r in chain[0].batch:
            first[r.partition] = min(first.get(r.partition, r.offset), r.offset)
        calls_before = len(writes)
        fail(exc)
        committed = {p: loop.consumer.committed(TopicPartition(settings.topic_events, p)) or 0 for p in first}
        failures.append((len(chain), first, committed, calls_before))
    loop._fail = recording_fail
    th = threading.Thread(target=worker.run, daemon=True)
    th.start()
    repo = MongoRepository(db)
    try:
        wait_for(lambda: repo.findings.count_documents({"pending": False}) == n, timeout=90,
                 what="every finding stored and published")
        tps = [TopicPartition(settings.topic_events, p) for p in range(6)]
        wait_for(lambda: sum(loop.consumer.committed(tp) or 0 for tp in tps) == n, timeout=30,
                 what="every offset committed")
    finally:
        worker.stop()
        th.join(20)
    [(chain, first, committed, calls)] = failures
    assert chain >= 2, "no batch was queued behind the failed one"
    assert calls == 3                                       # the ones behind it were skipped
    assert all(committed[p] <= first[p] for p in first), (first, committed)
    assert repo.dossiers.count_documents({}) == n and repo.findings.count_documents({"revision": 1}) == n
    msgs = consume(settings, settings.topic_findings, lambda rs: len(rs) >= n)
    assert sorted((v["finding_id"], v["revision"]) for _, v in msgs) == sorted(
        (f"F-{i}:OVERDUE", 1) for i in range(n))
