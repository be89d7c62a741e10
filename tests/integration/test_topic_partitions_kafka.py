"""On the real broker: the local stack, the sla worker and the notify worker create the topics
with the same partition count (TOPIC_PARTITIONS), and an existing topic with another count is
kept and reported."""
from __future__ import annotations

import time
import uuid

from helpers.net import delete_topics
from shared.dev import infra
from shared.dev.stackconfig import StackConfig
from shared.platform.config import Settings
from shared.platform.messaging import ensure_topics


def _partitions(bootstrap: str, names, timeout: float = 20.0) -> dict[str, int]:
    """Partition counts of `names` once the broker's metadata shows them all (a metadata
    request for all topics: asking by name could auto-create a missing one)."""
    from kafka.admin import KafkaAdminClient

    admin = KafkaAdminClient(bootstrap_servers=bootstrap.split(","), client_id="motcua-tests")
    deadline = time.monotonic() + timeout
    try:
        while True:
            got = {t["name"]: len(t["partitions"]) for t in admin.describe_topics() if t["name"] in set(names)}
            if len(got) == len(set(names)) or time.monotonic() > deadline:
                return got
            time.sleep(0.1)
    finally:
        admin.close()


def _env(label: str) -> dict[str, str]:
    slug = f"test.partitions.{label}.{uuid.uuid4().hex[:8]}"
    return {"TOPIC_EVENTS": slug + ".events", "TOPIC_FINDINGS": slug + ".findings",
            "TOPIC_PARTITIONS": "4"}


def test_stack_and_workers_create_the_same_partition_count(kafka_bootstrap, mongo_db, monkeypatch):
    from services.notify.channels import FakeChannel
    from services.notify.worker import build_worker as notify_worker
    from services.sla.worker import build_worker as sla_worker

    monkeypatch.delenv("TOPIC_PARTITIONS", raising=False)
    host, _, port = kafka_bootstrap.partition(",")[0].rpartition(":")
    created: list[str] = []
    try:
        # the local stack's path (`motcua local up`)
        env = _env("stack")
        cfg = StackConfig(host=host, kafka_port=int(port), extra_env=env)
        infra.create_topics(cfg)
        stack = Settings.from_env(env).topics()
        created += stack
        # the workers' paths (each builds its adapters against the real broker and store)
        env_sla, env_notify = _env("sla"), _env("notify")
        sla_settings = Settings.from_env({**env_sla, "KAFKA_BOOTSTRAP_SERVERS": kafka_bootstrap},
                                         mongo_db=mongo_db.name)
        notify_settings = Settings.from_env({**env_notify, "KAFKA_BOOTSTRAP_SERVERS": kafka_bootstrap},
                                            mongo_db=mongo_db.name)
        created += list(sla_settings.topics()) + list(notify_settings.topics())
        w = sla_worker(sla_settings, db=mongo_db)
        w.publisher.close()
        w.loop.consumer.close()
        n = notify_worker(notify_settings, db=mongo_db, channels={"email": FakeChannel("email")},
                          environ={"NOTIFY_SECRET": "s" * 32})
        n.publisher.close()
        n.loop.consumer.close()

        got_stack = _partitions(kafka_bootstrap, stack)
        got_sla = _partitions(kafka_bootstrap, [sla_settings.topic_events, sla_settings.topic_findings])
        assert got_stack == {env["TOPIC_EVENTS"]: 4, env["TOPIC_FINDINGS"]: 4,
                             env["TOPIC_FINDINGS"] + ".notify": 4,
                             env["TOPIC_EVENTS"] + ".dlq": 1, env["TOPIC_FINDINGS"] + ".dlq": 1}
        got_notify = _partitions(kafka_bootstrap, [notify_settings.topic_findings,
                                                   notify_settings.topic_findings_notify])
        assert set(got_sla.values()) == {4} and set(got_notify.values()) == {4} and len(got_notify) == 2
    finally:
        delete_topics(kafka_bootstrap, created)


def test_an_existing_topic_with_another_count_is_kept_and_reported(kafka_bootstrap):
    name = f"test.partitions.existing.{uuid.uuid4().hex[:8]}"
    try:
        assert ensure_topics(kafka_bootstrap, {name: 3}) == {}
        assert _partitions(kafka_bootstrap, [name]) == {name: 3}      # visible in the metadata
        assert ensure_topics(kafka_bootstrap, {name: 6}) == {name: 3}
        assert _partitions(kafka_bootstrap, [name]) == {name: 3}
    finally:
        delete_topics(kafka_bootstrap, [name])
