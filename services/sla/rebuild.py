"""Rebuild the sla projections from the event log: replay `dossier.events` from the beginning into
fresh collections (`dossiers_<ts>`, `findings_<ts>`) and switch the live pointer to them.

How: docs/architecture.md, "Rebuild"; when and how to run it: docs/operations.md, "Rebuild the sla
projections".
"""
from __future__ import annotations

import logging
import os
import queue
import threading
import time as _time
import traceback
from dataclasses import dataclass, field
from datetime import datetime

from shared.platform.config import Settings
from shared.platform.messaging import decode

from .dlq import Origin
from .projection import (Incoming, Rejected, default_engine, event_agencies, evaluate_dossier,
                         parse_item, update_summary)
from .repository import (INSERT_CHUNK, DossierWrite, MongoRepository, Names, dossier_doc,
                         finding_doc, live_names, switch_live)

log = logging.getLogger("motcua.sla.rebuild")



@dataclass
class RebuildResult:
    names: Names
    previous: Names
    messages: int
    rejected: int
    dossiers: int
    findings: int
    switched: bool
    timings: dict = field(default_factory=dict)    # seconds: read, replay (slowest process), indexes


@dataclass
class _Counts:
    messages: int = 0
    rejected: int = 0
    dossiers: int = 0
    findings: int = 0
    read_s: float = 0.0
    replay_s: float = 0.0

    def add(self, other: "_Counts") -> None:
        self.messages += other.messages
        self.rejected += other.rejected
        self.dossiers += other.dossiers
        self.findings += other.findings
        self.read_s = max(self.read_s, other.read_s)
        self.replay_s = max(self.replay_s, other.replay_s)


def group_members(settings: Settings, group_id: str) -> int:
    """How many consumers are in the group right now."""
    from kafka.admin import KafkaAdminClient

    admin = KafkaAdminClient(bootstrap_servers=settings.kafka_bootstrap_servers.split(","),
                             client_id="motcua-rebuild")
    try:
        desc = admin.describe_groups([group_id])[group_id]     # kafka-python 3.x: dicts
        return len(desc.get("members") or [])
    finally:
        admin.close()


def _consumer(settings: Settings):
    from kafka import KafkaConsumer
    return KafkaConsumer(bootstrap_servers=settings.kafka_bootstrap_servers.split(","),
                         group_id=None, enable_auto_commit=False, client_id="motcua-rebuild",
                         key_deserializer=lambda b: b.decode("utf-8") if b is not None else None)


def rebuild(settings: Settings, db, clock, ctx, *, engine=None, suffix: str | None = None,
            switch: bool = True, batch: int = 2000, timeout_s: float = 3600.0,
            workers: int | None = None, chunk: int = INSERT_CHUNK) -> RebuildResult:
    """Replay the topic into new collections and (by default) make them live.

    The replay re-enacts each dossier's live timeline: its events in log order (as the worker
    applies them), each applied and evaluated at its `recorded_at` (never before the previous
    one), and the scheduled checks that fell due in between evaluated at their `next_check_at`,
    then everything due up to `clock.now()`. So findings that opened and resolved in the past
    exist in the rebuilt collections as they do in the live ones. `workers` processes (default:
    one per CPU, at most one per partition) share the partitions; `workers=1` runs in this process.
    """
    from kafka import TopicPartition

    engine = engine or default_engine()
    now = clock.now()
    suffix = suffix or now.strftime("%Y%m%dT%H%M%S%fZ")
    names = Names(f"dossiers_{suffix}", f"findings_{suffix}")
    existing = set(db.list_collection_names())
    if names.dossiers in existing or names.findings in existing:
        raise ValueError(f"collections {names.dossiers}/{names.findings} already exist")
    consumer = _consumer(settings)
    try:
        parts = sorted(consumer.partitions_for_topic(settings.topic_events) or set())
        tps = [TopicPartition(settings.topic_events, p) for p in parts]
        ends = {tp.partition: off for tp, off in consumer.end_offsets(tps).items()} if tps else {}
    finally:
        consumer.close()
    busy = [p for p in parts if ends.get(p, 0) > 0]
    n = max(1, min(workers or os.cpu_count() or 1, len(busy)))
    shares = [busy[i::n] for i in range(n)]
    deadline = _time.monotonic() + timeout_s
    args = dict(settings=settings, names=names, ends=ends, now=now, ctx=ctx, engine=engine,
                batch=batch, deadline=deadline, chunk=chunk)
    total = _Counts()
    try:
        if n == 1:
            total.add(_replay(db, shares[0], **args))
        else:
            for counts in _in_processes(db.name, shares, args):
                total.add(counts)
    except BaseException:
        db.drop_collection(names.dossiers)     # nothing half-built is left behind
        db.drop_collection(names.findings)
        raise
    t0 = _time.perf_counter()
    repo = MongoRepository(db, names)
    repo.ensure_indexes()           # after the inserts: cheaper than maintaining them during
    timings = {"processes": n, "read": total.read_s, "replay": total.replay_s,
               "indexes": _time.perf_counter() - t0}
    previous = live_names(db)
    if switch:
        switch_live(db, names, now)
    return RebuildResult(names, previous, total.messages, total.rejected, total.dossiers,
                         total.findings, switch, timings)


def _in_processes(db_name: str, shares: list[list[int]], args: dict) -> list[_Counts]:
    """Run `_replay` for each share of partitions in a forked process (each with its own Kafka
    consumer and MongoDB client); returns their counts, or raises the first failure."""
    import multiprocessing as mp

    ctx = mp.get_context("fork")        # the engine, its context and the clock are inherited
    procs = []
    for share in shares:
        recv, send = ctx.Pipe(duplex=False)
        p = ctx.Process(target=_child, args=(send, db_name, share, args), daemon=True)
        p.start()
        send.close()
        procs.append((p, recv))
    out, errors = [], []
    for p, recv in procs:
        try:
            kind, value = recv.recv()
        except EOFError:
            kind, value = "error", "rebuild process ended without a result"
        p.join()
        if kind == "ok":
            out.append(_Counts(*value))
        else:
            errors.append(value)
    if errors:
        raise RuntimeError("rebuild failed:\n" + "\n".join(errors))
    return out


def _child(send, db_name: str, share: list[int], args: dict) -> None:
    try:
        from shared.platform.mongo import mongo_client

        client = mongo_client(args["settings"], appname="motcua-rebuild")
        try:
            c = _replay(client[db_name], share, **args)
        finally:
            client.close()
        send.send(("ok", (c.messages, c.rejected, c.dossiers, c.findings, c.read_s, c.replay_s)))
    except BaseException:   # noqa: BLE001 - reported to the parent, which raises
        send.send(("error", traceback.format_exc()))
    finally:
        send.close()


def _replay(db, partitions: list[int], *, settings: Settings, names: Names, ends: dict[int, int],
            now: datetime, ctx, engine, batch: int, deadline: float, chunk: int) -> _Counts:
    """Read these partitions up to `ends`, replay their dossiers, insert the results."""
    counts = _Counts()
    t0 = _time.perf_counter()
    groups = _read(settings, partitions, ends, batch, deadline, counts)
    counts.read_s = _time.perf_counter() - t0
    repo = MongoRepository(db, names)
    with _Inserter(chunk) as ins:
        for code, msgs in groups.items():
            result = replay_dossier(code, msgs, now, ctx, engine)
            counts.rejected += result[0]
            if result[1] is not None:
                ins.add(repo.dossiers, result[1])
                counts.dossiers += 1
            for f in result[2]:
                ins.add(repo.findings, f)
                counts.findings += 1
            if _time.monotonic() > deadline:
                raise TimeoutError("rebuild did not finish in time")
    counts.replay_s = _time.perf_counter() - t0 - counts.read_s
    return counts


def _read(settings, partitions, ends, batch, deadline, counts) -> dict[str, list[Incoming]]:
    """The messages of these partitions below the end offsets, grouped by dossier in log order
    (by key; a message without a key by the dossier_code it names)."""
    from kafka import TopicPartition

    groups: dict[str, list[Incoming]] = {}
    consumer = _consumer(settings)
    try:
        tps = [TopicPartition(settings.topic_events, p) for p in partitions]
        consumer.assign(tps)
        consumer.seek_to_beginning(*tps)
        remaining = {tp for tp in tps if ends[tp.partition] > consumer.position(tp)}
        while remaining:
            if _time.monotonic() > deadline:
                raise TimeoutError("rebuild did not reach the end offsets in time")
            for tp, rs in consumer.poll(timeout_ms=1000, max_records=batch).items():
                end = ends[tp.partition]
                for r in rs:
                    if r.offset >= end:
                        continue
                    counts.messages += 1
                    item = Incoming(r.key, r.value, r.partition, Origin(r.topic, r.partition, r.offset))
                    key = r.key if r.key is not None else _code_of(r.value)
                    groups.setdefault(key, []).append(item)
            remaining = {tp for tp in remaining if consumer.position(tp) < ends[tp.partition]}
    finally:
        consumer.close()
    return groups


def _code_of(raw: bytes) -> str:
    try:
        return str(decode(raw)["dossier_code"])
    except Exception:   # noqa: BLE001 - rejected with the precise reason when replayed
        return ""


def replay_dossier(code: str, items: list[Incoming], now: datetime, ctx, engine):
    """One dossier's timeline: (messages rejected, final dossier document or None, its findings)."""
    rejected = 0
    state = None
    prev: dict[str, dict] = {}          # finding id -> stored document (latest revision)
    agencies: set[str] = set()
    summary: dict = {}
    partition = None
    next_check = None
    clock: datetime | None = None
    last = None

    def evaluate(t: datetime) -> None:
        nonlocal next_check, summary, last
        next_check, summary, writes = evaluate_dossier(engine, ctx, code, state, t, prev,
                                                       partition, summary)
        for w in writes:
            prev[w.finding_id] = finding_doc(w, t)
        last = t

    def checks_until(t: datetime) -> None:
        nonlocal clock
        while state is not None and next_check is not None and next_check <= t:
            clock = max(next_check, clock) if clock else next_check
            evaluate(clock)

    for item in items:
        event = parse_item(item)
        if isinstance(event, Rejected):
            rejected += 1
            continue
        at = event["recorded_at"]
        at = max(at, clock) if clock else at
        checks_until(at)
        clock = at
        try:
            new = engine.apply(state if state is not None else engine.new_state(event["dossier_code"]),
                               event, ctx)
        except Exception:   # noqa: BLE001 - the live worker dead-lettered it too
            rejected += 1
            continue
        state = new
        if item.partition is not None:
            partition = item.partition
        agencies.update(event_agencies(event))
        update_summary(summary, event)
        evaluate(at)
    if state is None:
        return rejected, None, []
    checks_until(now)
    doc = dossier_doc(DossierWrite(code, state.to_doc(), partition, next_check, 0,
                                   agencies=sorted(agencies), summary=summary,
                                   finding_ids=sorted(prev)), last or now)
    # the live worker published these changes already; the rebuilt copies are not news
    findings = [dict(d, pending=False, published_revision=d["revision"]) for d in prev.values()]
    return rejected, doc, findings


class _Inserter:
    """insert_many in chunks on a background thread, so the replay goes on while MongoDB writes."""

    def __init__(self, chunk: int):
        self.chunk = chunk
        self.buffers: dict[str, tuple] = {}
        self.q: queue.Queue = queue.Queue(maxsize=4)
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, daemon=True, name="rebuild-insert")

    def __enter__(self):
        self.thread.start()
        return self

    def add(self, coll, doc: dict) -> None:
        buf = self.buffers.setdefault(coll.name, (coll, []))[1]
        buf.append(doc)
        if len(buf) >= self.chunk:
            self._put(coll, buf[:])
            buf.clear()

    def _put(self, coll, docs) -> None:
        while True:
            if self.error is not None:
                raise RuntimeError("insert failed") from self.error
            try:
                self.q.put((coll, docs), timeout=1)
                return
            except queue.Full:
                continue

    def _run(self) -> None:
        while True:
            job = self.q.get()
            if job is None:
                return
            if self.error is None:
                try:
                    job[0].insert_many(job[1], ordered=False)
                except BaseException as exc:   # noqa: BLE001 - raised in the replaying thread
                    self.error = exc

    def __exit__(self, exc_type, exc, tb):
        try:
            if exc_type is None:
                for coll, buf in self.buffers.values():
                    if buf:
                        self._put(coll, buf)
        finally:
            self.q.put(None)
            self.thread.join()
        if exc_type is None and self.error is not None:
            raise RuntimeError("insert failed") from self.error
        return False
