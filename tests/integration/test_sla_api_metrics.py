"""The sla API's /metrics on a real broker: the consumer group's lag per partition is read in the
background (never on the scrape) and shows up in a later scrape."""
from __future__ import annotations

import time
import uuid

from shared.platform.clock import VirtualClock
from shared.platform.config import Settings
from shared.domain.directory import directory_from_records
from shared.platform.messaging import KafkaPublisher, kafka_consumer

from helpers.clock import VIRTUAL_START


def _lag_lines(text: str) -> dict[str, float]:
    return {line.split(" ")[0]: float(line.split(" ")[1]) for line in text.splitlines()
            if line.startswith("sla_consumer_group_lag{")}


def test_group_lag_appears_after_a_background_read(kafka_bootstrap, topics, mongo_db):
    from kafka import TopicPartition
    from kafka.structs import OffsetAndMetadata

    from services.sla.api import create_app

    events = topics("events", partitions=2)["events"]
    group = "g-" + uuid.uuid4().hex[:8]
    pub = KafkaPublisher(kafka_bootstrap)
    try:
        sent = [pub.publish(events, f"HS-{i}", {"i": i}) for i in range(6)]
    finally:
        pub.close()
    ends = {p: sum(1 for s in sent if s.partition == p) for p in (0, 1)}
    c = kafka_consumer(kafka_bootstrap, None, group)
    try:      # the group has read one record of partition 0
        c.assign([TopicPartition(events, 0)])
        c.commit({TopicPartition(events, 0): OffsetAndMetadata(1, "", -1)})
    finally:
        c.close()
    settings = Settings.from_env({"KAFKA_BOOTSTRAP_SERVERS": kafka_bootstrap, "TOPIC_EVENTS": events})
    app = create_app({"SETTINGS": settings, "DIRECTORY": directory_from_records([]), "CATALOG": [],
                      "CONSUMER_GROUP": group}, db=mongo_db, clock=VirtualClock(VIRTUAL_START))
    client = app.test_client()
    deadline = time.monotonic() + 30
    while True:
        t0 = time.perf_counter()
        r = client.get("/metrics")
        assert r.status_code == 200 and time.perf_counter() - t0 < 1.0
        lag = _lag_lines(r.data.decode())
        if lag:
            break
        assert time.monotonic() < deadline, "no lag sample after 30 s"
        time.sleep(0.1)
    assert lag == {f'sla_consumer_group_lag{{partition="0",topic="{events}"}}': ends[0] - 1,
                   f'sla_consumer_group_lag{{partition="1",topic="{events}"}}': ends[1]}
    assert "sla_consumer_group_lag_age_seconds " in r.data.decode()


def test_metrics_scrape_answers_at_once_when_kafka_is_unreachable():
    """The consumer-group lag is read in the background: a scrape never waits for Kafka, here a
    real client against a port nothing listens on (moved from tests/unit, which need no
    network; the unit test hangs the read instead)."""
    import threading

    import mongomock

    from services.sla.api import create_app
    from helpers.net import closed_port

    settings = Settings.from_env({"KAFKA_BOOTSTRAP_SERVERS": f"127.0.0.1:{closed_port()}"})
    app = create_app({"SETTINGS": settings, "DIRECTORY": directory_from_records([]), "CATALOG": []},
                     db=mongomock.MongoClient(tz_aware=True)["t"], clock=VirtualClock(VIRTUAL_START))
    client = app.test_client()
    for _ in range(2):
        t0 = time.perf_counter()
        r = client.get("/metrics")
        assert r.status_code == 200 and time.perf_counter() - t0 < 1.0
        assert "sla_consumer_group_lag{" not in r.data.decode()    # no read has succeeded
    # the background read gives up on its own (bounded); waited for so that its log lines stay
    # in this test's output
    for th in [t for t in threading.enumerate() if t.name == "sla-api-lag"]:
        th.join(15)
        assert not th.is_alive()
