"""The messaging port: publish JSON messages keyed by dossier code, and consume them.

`KafkaPublisher` is the real adapter (kafka-python, idempotent producer, acks=all);
`InMemoryBus` is the fake for unit tests. Nothing connects at import time.
"""
from __future__ import annotations

import json
import logging
import threading
from collections import defaultdict
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any, Protocol

log = logging.getLogger("motcua.messaging")


def _default(o: Any):
    if isinstance(o, (datetime, date)):
        return o.isoformat()
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


def encode(value: Any) -> bytes:
    """JSON-encode a message value (UTF-8, Vietnamese kept as is, datetimes as ISO 8601)."""
    return json.dumps(value, ensure_ascii=False, default=_default, separators=(",", ":")).encode("utf-8")


def decode(raw: bytes) -> Any:
    return json.loads(raw.decode("utf-8"))


@dataclass(frozen=True)
class Published:
    topic: str
    partition: int
    offset: int


class Delivery(Protocol):
    """The future of one sent message (kafka-python's FutureRecordMetadata has this shape)."""
    is_done: bool

    def get(self, timeout: float | None = None):
        """Wait for the broker's ack: the record's metadata (topic, partition, offset), or raise."""


class Publisher(Protocol):
    """The messaging port: `KafkaPublisher` in production, `InMemoryBus` in unit tests."""

    def send(self, topic: str, key: str, value: Any, headers: dict[str, str] | None = None) -> Delivery:
        """Send without waiting for the ack. `value` is JSON-encoded unless it is `bytes`."""

    def publish(self, topic: str, key: str, value: Any, headers: dict[str, str] | None = None,
                timeout: float = 10.0) -> Published:
        """Publish and wait until the broker acknowledged it (acks=all); raise on failure."""

    def ready(self) -> bool:
        """Whether the publisher is connected to its broker."""

    def close(self, timeout: float = 10.0) -> None: ...


class KafkaPublisher:
    """kafka-python producer with acks=all and idempotence; publish() blocks until acknowledged."""

    def __init__(self, bootstrap_servers: str, **config):
        from kafka import KafkaProducer

        params = dict(
            bootstrap_servers=bootstrap_servers.split(","),
            acks="all",
            enable_idempotence=True,
            linger_ms=0,
            max_block_ms=5000,
            request_timeout_ms=10000,
            client_id="motcua",
        )
        params.update(config)
        self._producer = KafkaProducer(**params)

    def send(self, topic: str, key: str, value: Any, headers: dict[str, str] | None = None):
        """Send without waiting; returns kafka-python's future. `value` is JSON-encoded, unless
        it is `bytes` already (a message the caller encoded)."""
        hdrs = [(k, v.encode("utf-8")) for k, v in (headers or {}).items()]
        raw = value if isinstance(value, bytes) else encode(value)
        return self._producer.send(topic, key=key.encode("utf-8"), value=raw, headers=hdrs)

    def publish(self, topic, key, value, headers=None, timeout=10.0) -> Published:
        md = self.send(topic, key, value, headers).get(timeout=timeout)
        return Published(md.topic, md.partition, md.offset)

    def ready(self) -> bool:
        return self._producer.bootstrap_connected()

    def flush(self, timeout: float = 10.0) -> None:
        self._producer.flush(timeout=timeout)

    def close(self, timeout: float = 10.0) -> None:
        self._producer.close(timeout=timeout)


@dataclass
class Message:
    topic: str
    partition: int
    offset: int
    key: str | None
    value: Any
    headers: dict[str, str]


@dataclass(frozen=True)
class _Acked:
    """A `Delivery` that is already over: acknowledged (`published`) or failed (`error`)."""
    published: Published | None = None
    error: Exception | None = None
    is_done: bool = True

    def get(self, timeout: float | None = None) -> Published:
        if self.error is not None:
            raise self.error
        return self.published


class InMemoryBus:
    """Fake broker for unit tests, with the `Publisher` port of `KafkaPublisher`: one partition
    per topic, messages kept in order, each acknowledged at once. While `fail_with` is set the
    broker is down: nothing is stored and every delivery fails with it."""

    def __init__(self):
        self.topics: dict[str, list[Message]] = defaultdict(list)
        self._lock = threading.Lock()
        self.fail_with: Exception | None = None

    def send(self, topic, key, value, headers=None) -> _Acked:
        if self.fail_with is not None:
            return _Acked(error=self.fail_with)
        with self._lock:
            log = self.topics[topic]
            raw = value if isinstance(value, bytes) else encode(value)
            msg = Message(topic, 0, len(log), key, decode(raw), dict(headers or {}))
            log.append(msg)
            return _Acked(Published(topic, 0, msg.offset))

    def publish(self, topic, key, value, headers=None, timeout=10.0) -> Published:
        return self.send(topic, key, value, headers).get(timeout)

    def ready(self) -> bool:
        return self.fail_with is None

    def messages(self, topic: str) -> list[Message]:
        return list(self.topics[topic])

    def close(self, timeout: float = 10.0) -> None:
        pass


def _key_deserializer():
    from kafka.serializer import Deserializer

    class KeyDeserializer(Deserializer):
        """Message keys are dossier codes (UTF-8 text)."""

        def deserialize(self, topic, bytes_):
            return bytes_.decode("utf-8", errors="replace") if bytes_ is not None else None

    return KeyDeserializer()


def kafka_consumer(bootstrap_servers: str, topics: list[str] | None, group_id: str | None, **config):
    """A kafka-python consumer with manual commits (commit after the effect is stored).

    Values stay raw bytes: a poison message must reach the dead-letter topic, not crash the loop.
    `topics=None` leaves subscription/assignment to the caller.
    """
    from kafka import KafkaConsumer

    params = dict(
        bootstrap_servers=bootstrap_servers.split(","),
        group_id=group_id,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        key_deserializer=_key_deserializer(),
        max_poll_records=500,
    )
    params.update(config)
    consumer = KafkaConsumer(**params)
    if topics:
        consumer.subscribe(topics)
    return consumer


def ensure_topics(bootstrap_servers: str, topics: dict[str, int], replication: int = 1) -> dict[str, int]:
    """Create topics (name -> partitions) that do not exist yet (`Settings.topics()`: one
    partition count for every path that creates them). An existing topic is kept as it is;
    one whose partition count differs is logged and returned (name -> its partitions)."""
    from kafka.admin import KafkaAdminClient, NewTopic
    from kafka.errors import TopicAlreadyExistsError

    admin = KafkaAdminClient(bootstrap_servers=bootstrap_servers.split(","), client_id="motcua-admin")
    try:
        existing = {t["name"]: len(t["partitions"]) for t in admin.describe_topics()
                    if not t.get("error_code")}
        new = [NewTopic(name, n, replication) for name, n in topics.items() if name not in existing]
        if new:
            try:
                admin.create_topics(new)
            except TopicAlreadyExistsError:
                pass
    finally:
        admin.close()
    differ = {name: existing[name] for name, n in topics.items()
              if name in existing and existing[name] != n}
    for name, has in differ.items():
        log.warning("topic %s has %d partitions, not %d (TOPIC_PARTITIONS): kept as it is; "
                    "sla holds and stores partitions by number, recreate the topic to change it",
                    name, has, topics[name])
    return differ
