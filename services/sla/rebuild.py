"""Rebuild the sla projections from the event log: replay `dossier.events` from the beginning into
fresh collections (`dossiers_<ts>`, `findings_<ts>`) and switch the live pointer to them.

The replay reads every partition up to the end offsets seen when it starts and re-enacts the
live timeline through the worker's own handler (see `rebuild()`). Nothing is published: the rebuilt findings are marked published (they
were, when the live worker produced them). Run it with the `sla` workers stopped (the command
refuses while the consumer group has members unless `force`), then start them: they read the
pointer at start-up.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass

from shared.config import Settings
from shared.messaging import Published

import time as _time
from datetime import datetime

from shared.clock import VirtualClock, ensure_utc
from shared.messaging import decode

from .dlq import Origin
from .handlers import Incoming, SlaHandler
from .repository import (BULK_CHUNK, InMemoryRepository, MongoRepository, Names, live_names,
                         switch_live)

log = logging.getLogger("motcua.sla.rebuild")


class _NoPublish:
    """Rebuild publishes nothing; the handler's republish is a no-op marker."""

    def publish(self, topic, key, value, headers=None, timeout=10.0):
        return Published(topic, -1, -1)

    def close(self, timeout=10.0):
        pass


@dataclass
class RebuildResult:
    names: Names
    previous: Names
    messages: int
    rejected: int
    dossiers: int
    findings: int
    switched: bool


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


def _recorded_at(raw: bytes):
    try:
        value = decode(raw)
        return ensure_utc(datetime.fromisoformat(value["recorded_at"]))
    except Exception:   # noqa: BLE001 - the handler rejects it with the precise reason
        return None


def rebuild(settings: Settings, db, clock, ctx, *, engine=None, suffix: str | None = None,
            switch: bool = True, batch: int = 500, timeout_s: float = 600.0) -> RebuildResult:
    """Replay the topic into new collections and (by default) make them live.

    The replay re-enacts the live timeline: events in `recorded_at` order, each applied and
    evaluated at its `recorded_at`, and the scheduled checks that fell due in between evaluated at
    their `next_check_at`, then everything due up to `clock.now()`. So findings that opened and
    resolved in the past exist in the rebuilt collections as they do in the live ones. The
    simulation runs in memory (fine for 10^5 dossiers; the scheduler scan is linear per step).
    """
    from kafka import KafkaConsumer, TopicPartition

    now = clock.now()
    suffix = suffix or now.strftime("%Y%m%dT%H%M%S%fZ")
    names = Names(f"dossiers_{suffix}", f"findings_{suffix}")
    existing = set(db.list_collection_names())
    if names.dossiers in existing or names.findings in existing:
        raise ValueError(f"collections {names.dossiers}/{names.findings} already exist")
    consumer = KafkaConsumer(bootstrap_servers=settings.kafka_bootstrap_servers.split(","),
                             group_id=None, enable_auto_commit=False, client_id="motcua-rebuild",
                             key_deserializer=lambda b: b.decode("utf-8") if b is not None else None)
    items: list[tuple] = []
    try:
        parts = consumer.partitions_for_topic(settings.topic_events) or set()
        tps = [TopicPartition(settings.topic_events, p) for p in sorted(parts)]
        consumer.assign(tps)
        consumer.seek_to_beginning(*tps)
        ends = consumer.end_offsets(tps)
        remaining = {tp for tp in tps if ends[tp] > consumer.position(tp)}
        deadline = _time.monotonic() + timeout_s
        while remaining:
            if _time.monotonic() > deadline:
                raise TimeoutError("rebuild did not reach the end offsets in time")
            for tp, rs in consumer.poll(timeout_ms=1000, max_records=batch).items():
                for r in rs:
                    if r.offset < ends[tp]:
                        items.append((_recorded_at(r.value), len(items),
                                      Incoming(r.key, r.value, r.partition,
                                               Origin(r.topic, r.partition, r.offset))))
            remaining = {tp for tp in remaining if consumer.position(tp) < ends[tp]}
    finally:
        consumer.close()

    sim_clock = VirtualClock(min([t for t, _, _ in items if t is not None] + [now]))
    mem = InMemoryRepository()
    handler = SlaHandler(mem, _NoPublish(), settings.topic_findings, sim_clock, ctx, engine=engine)
    all_parts = list(range(max([it.partition for _, _, it in items] + [0]) + 1))

    def run_checks_until(t):
        while True:
            due = [d["next_check_at"] for d in mem.dossiers.values() if d.get("next_check_at") is not None]
            first = min(due) if due else None
            if first is None or first > t:
                return
            sim_clock.set(max(first, sim_clock.now()))
            handler.check_due(all_parts, limit=10**9)

    rejected = 0
    for t, _, item in sorted(items, key=lambda x: (x[0] or now, x[1])):
        at = max(t or now, sim_clock.now())
        run_checks_until(at)
        sim_clock.set(at)
        rejected += len(handler.handle([item]))
    run_checks_until(now)
    sim_clock.set(max(now, sim_clock.now()))

    repo = MongoRepository(db, names)
    repo.ensure_indexes()
    _copy(repo.dossiers, list(mem.dossiers.values()))
    findings = []
    for d in mem.findings.values():
        # the live worker published these changes already; the rebuilt copies are not news
        findings.append(dict(d, pending=False, published_revision=d["revision"]))
    _copy(repo.findings, findings)
    previous = live_names(db)
    if switch:
        switch_live(db, names, now)
    return RebuildResult(names, previous, len(items), rejected, len(mem.dossiers), len(findings), switch)


def _copy(coll, docs: list[dict]) -> None:
    for i in range(0, len(docs), BULK_CHUNK):
        coll.insert_many(docs[i:i + BULK_CHUNK], ordered=False)
