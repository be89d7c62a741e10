"""Wiring of the sla worker: the one place where real adapters are built (nothing at import)."""
from __future__ import annotations

import logging
from dataclasses import dataclass

from shared.platform import runtime
from shared.platform.clock import Clock
from shared.platform.config import Settings
from shared.platform.messaging import KafkaPublisher, ensure_topics, kafka_consumer
from shared.platform.runtime import serve_until_signalled

from .alarms import OpsAlerts
from .bootstrap import bootstrap
from .dlq import DeadLetters
from .handlers import SlaHandler
from .loop import ConsumerLoop
from .metrics import SlaMetrics
from .repository import MongoRepository, Names

log = logging.getLogger("motcua.sla.worker")

GROUP_ID = "sla"


def ensure_sla_topics(settings: Settings) -> None:
    """The system's topics, as every path creates them (TOPIC_PARTITIONS)."""
    ensure_topics(settings.kafka_bootstrap_servers, settings.topics())


@dataclass
class Worker(runtime.Worker):
    loop: ConsumerLoop
    handler: SlaHandler
    repo: MongoRepository
    publisher: KafkaPublisher
    metrics: SlaMetrics


def build_worker(settings: Settings, clock: Clock | None = None, *, ctx=None, engine=None,
                 db=None, names: Names | None = None, group_id: str = GROUP_ID,
                 consumer_config: dict | None = None, poll_timeout: float = 0.5,
                 check_interval: float = 0.5, max_dead_letters_in_a_row: int = 1000,
                 pipeline: bool = True, max_records: int = 500, write_batch: int = 100) -> Worker:
    """Build a worker on real Kafka and MongoDB; `run()` consumes until `stop()`. `pipeline`:
    a batch's store write overlaps the preparation of the next (loop.py)."""
    sla = bootstrap(settings, clock=clock, db=db, ctx=ctx)
    clock = sla.clock
    ensure_sla_topics(settings)
    db = sla.db()
    repo = MongoRepository(db, names) if names else MongoRepository.live(db)
    repo.ensure_indexes()
    metrics = SlaMetrics()
    publisher = KafkaPublisher(settings.kafka_bootstrap_servers, client_id="motcua-sla")
    handler = SlaHandler(repo, publisher, settings.topic_findings, clock, sla.ctx(), engine=engine,
                         metrics=metrics, defer_marks=True, ops_alerts=OpsAlerts(db))
    consumer = kafka_consumer(settings.kafka_bootstrap_servers, [settings.topic_events], group_id,
                              client_id="motcua-sla", **(consumer_config or {}))
    dead = DeadLetters(publisher, settings.topic_events_dlq, clock, metrics,
                       max_in_a_row=max_dead_letters_in_a_row)
    loop = ConsumerLoop(consumer, handler, dead, poll_timeout=poll_timeout,
                        check_interval=check_interval, pipeline=pipeline, max_records=max_records,
                        write_batch=write_batch, freeze_gc=True)
    consumer.subscribe([settings.topic_events], listener=loop.listener())   # before the first poll
    return Worker(loop, handler, repo, publisher, metrics)


def run_worker(settings: Settings | None = None, metrics_port: int | None = None,
               group_id: str = GROUP_ID) -> int:
    """`python -m services.sla worker`: run until SIGTERM/SIGINT."""
    from shared.platform.httpapi import configure_json_logging

    configure_json_logging()
    settings = settings or Settings.from_env()
    worker = build_worker(settings, group_id=group_id)
    return serve_until_signalled(worker, name="sla", metrics_port=metrics_port,
                                 registry=worker.metrics.registry,
                                 fields={"topic": settings.topic_events, "group": group_id})
