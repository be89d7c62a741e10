"""Rebuild the sla projections from the event log: replay `dossier.events` from the beginning into
fresh collections (`dossiers_<ts>`, `findings_<ts>`) and switch the live pointer to them.

The replay reads every partition up to the end offsets seen when it starts, through the same
handler as the worker (so the result is what the worker would have stored), evaluating at the
clock's current instant. Nothing is published: the rebuilt findings are marked published (they
were, when the live worker produced them). Run it with the `sla` workers stopped (the command
refuses while the consumer group has members unless `force`), then start them: they read the
pointer at start-up.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass

from shared.config import Settings
from shared.messaging import Published

from .handlers import Incoming, SlaHandler
from .dlq import Origin
from .repository import MongoRepository, Names, live_names, switch_live

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
        [desc] = admin.describe_consumer_groups([group_id])
        return len(desc.members)
    finally:
        admin.close()


def rebuild(settings: Settings, db, clock, ctx, *, engine=None, suffix: str | None = None,
            switch: bool = True, batch: int = 500, timeout_s: float = 600.0) -> RebuildResult:
    """Replay the topic into new collections and (by default) make them live."""
    from kafka import KafkaConsumer, TopicPartition

    suffix = suffix or clock.now().strftime("%Y%m%dT%H%M%S%fZ")
    names = Names(f"dossiers_{suffix}", f"findings_{suffix}")
    existing = set(db.list_collection_names())
    if names.dossiers in existing or names.findings in existing:
        raise ValueError(f"collections {names.dossiers}/{names.findings} already exist")
    repo = MongoRepository(db, names)
    repo.ensure_indexes()
    handler = SlaHandler(repo, _NoPublish(), settings.topic_findings, clock, ctx, engine=engine)
    consumer = KafkaConsumer(bootstrap_servers=settings.kafka_bootstrap_servers.split(","),
                             group_id=None, enable_auto_commit=False, client_id="motcua-rebuild",
                             key_deserializer=lambda b: b.decode("utf-8") if b is not None else None)
    messages = rejected = 0
    try:
        parts = consumer.partitions_for_topic(settings.topic_events) or set()
        tps = [TopicPartition(settings.topic_events, p) for p in sorted(parts)]
        consumer.assign(tps)
        consumer.seek_to_beginning(*tps)
        ends = consumer.end_offsets(tps)
        remaining = {tp for tp in tps if ends[tp] > consumer.position(tp)}
        import time as _time
        deadline = _time.monotonic() + timeout_s
        while remaining:
            if _time.monotonic() > deadline:
                raise TimeoutError("rebuild did not reach the end offsets in time")
            recs = consumer.poll(timeout_ms=1000, max_records=batch)
            items = []
            for tp, rs in recs.items():
                for r in rs:
                    if r.offset < ends[tp]:
                        items.append(Incoming(r.key, r.value, r.partition,
                                              Origin(r.topic, r.partition, r.offset)))
            if items:
                rejected += len(handler.handle(items))
                messages += len(items)
            remaining = {tp for tp in remaining if consumer.position(tp) < ends[tp]}
    finally:
        consumer.close()
    # the live worker published these changes already; the rebuilt copies are not news
    repo.mark_published([(d["_id"], d["revision"]) for d in repo.findings.find({}, {"revision": 1})])
    previous = live_names(db)
    if switch:
        switch_live(db, names, clock.now())
    return RebuildResult(names, previous, messages, rejected, repo.dossiers.count_documents({}),
                         repo.findings.count_documents({}), switch)
