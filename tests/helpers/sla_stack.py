"""Fixtures and helpers of the sla tests on a real broker and store: `settings` (the session's
Kafka and MongoDB-wire server with a test's own topics and database) and `db`, registered in
tests/conftest.py; `FAST` consumer timeouts; `consume` a topic until a condition holds."""
from __future__ import annotations

import threading
import time
import uuid

import pytest

from shared.platform.config import Settings
from services.sla.worker import build_worker

from helpers.net import delete_topics
from helpers.sla import FAKE_CTX, FakeEngine

FAST = {"session_timeout_ms": 6000, "heartbeat_interval_ms": 1000, "max_poll_interval_ms": 30000}


@pytest.fixture
def settings(kafka_bootstrap, mongo_uri):
    """Settings on the session's broker and store (tests/conftest.py: the environment, else
    testcontainers, else a private local stack), with this test's own topics and database."""
    tag = uuid.uuid4().hex[:10]
    s = Settings.from_env(kafka_bootstrap_servers=kafka_bootstrap, mongo_uri=mongo_uri,
                          topic_events=f"t{tag}.events", topic_findings=f"t{tag}.findings",
                          mongo_db=f"sla_{tag}")
    yield s
    from pymongo import MongoClient
    MongoClient(s.mongo_uri).drop_database(s.mongo_db)
    delete_topics(s.kafka_bootstrap_servers, [s.topic_events, s.topic_findings, s.topic_events_dlq])


@pytest.fixture
def db(settings):
    from pymongo import MongoClient
    return MongoClient(settings.mongo_uri, tz_aware=True)[settings.mongo_db]


def consume(settings, topic, until, timeout=60.0):
    """Records of `topic` from the beginning until `until(records)` is true."""
    from kafka import KafkaConsumer
    from shared.platform.messaging import decode
    c = KafkaConsumer(topic, bootstrap_servers=settings.kafka_bootstrap_servers.split(","),
                      group_id=None, auto_offset_reset="earliest", enable_auto_commit=False)
    out = []
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            for rs in c.poll(timeout_ms=300).values():
                out.extend((r, decode(r.value)) for r in rs)
            if until(out):
                return out
    finally:
        c.close()
    raise AssertionError(f"timed out on {topic}: {len(out)} records")


class Running:
    """A worker in a thread: on the fake engine and reference data, or with `fake=False` on the
    real ones."""

    def __init__(self, settings, clock, group, fake=True, **kw):
        if fake:
            kw = {"ctx": FAKE_CTX, "engine": FakeEngine, **kw}
        self.worker = build_worker(settings, clock, group_id=group, consumer_config=FAST, **kw)
        self.thread = threading.Thread(target=self.worker.run, daemon=True)
        self.thread.start()

    def stop(self):
        self.worker.stop()
        self.thread.join(20)
        assert not self.thread.is_alive()


def wait_for(pred, timeout=60.0, what="condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")
