"""Shared fixtures.

Infrastructure (`kafka_bootstrap`, `mongo_uri`, and everything built on them) is lazy: a test that
does not ask for it starts nothing, so `tests/unit` never touches Kafka or MongoDB. Where the
infrastructure comes from, in order:

1. `KAFKA_BOOTSTRAP_SERVERS` / `MONGO_URI` from the environment (`source .local/dev.env` to use
   the shared dev stack of `motcua local up`);
2. testcontainers (apache/kafka:4.3.1, mongo:7.0) when a Docker engine answers;
3. otherwise a private local stack (deploy/local: Kafka jars + FerretDB) started for this test
   session on free ports, in its own state directory, stopped and deleted at the end.

If none works the tests that need it ERROR with the reason; nothing is skipped silently.
"""
from __future__ import annotations

import asyncio
import email
import email.policy
import os
import re
import socket
import threading
import time
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import pytest

from shared.platform.clock import VirtualClock

# `settings` and `db` of the sla tests on the real broker and store (helpers shared between test
# modules live in tests/helpers/, never in another test module)
from helpers.sla_stack import db, settings  # noqa: F401

KAFKA_IMAGE = "apache/kafka:4.3.1"
MONGO_IMAGE = "mongo:7.0"
# a Tuesday, 09:00 in Hà Nội: inside office hours, not a holiday
VIRTUAL_START = datetime(2024, 11, 5, 2, 0, tzinfo=timezone.utc)


def pytest_collection_modifyitems(config, items):
    """Mark tests by folder so `-m integration` / `-m e2e` / `-m "not integration"` select them."""
    for item in items:
        parts = Path(str(item.fspath)).parts
        if "integration" in parts:
            item.add_marker(pytest.mark.integration)
        elif "e2e" in parts:
            item.add_marker(pytest.mark.e2e)


def pytest_sessionfinish(session, exitstatus):
    """With MOTCUA_FAIL_ON_SKIP=1 (deploy/test.sh, hence CI) a skipped test fails the run: a test
    that skips because its infrastructure is missing proves nothing, and a green run must not
    hide it. (Benchmarks are deselected by `-m "not perf"`, not skipped.)"""
    if os.environ.get("MOTCUA_FAIL_ON_SKIP") != "1":
        return
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    skipped = reporter.stats.get("skipped", []) if reporter is not None else []
    if skipped and session.exitstatus == 0:
        reporter.write_line(f"MOTCUA_FAIL_ON_SKIP=1: {len(skipped)} test(s) skipped: "
                            + ", ".join(r.nodeid for r in skipped[:10]), red=True)
        session.exitstatus = 1


# --------------------------------------------------------------------------- where infra comes from

def _docker_available() -> bool:
    """True when a Docker engine answers within a second or two; never raises."""
    try:
        import docker

        client = docker.from_env(timeout=3)
        try:
            return bool(client.ping())
        finally:
            client.close()
    except Exception:   # noqa: BLE001 - no docker package, no socket, no permission, timeout…
        return False


class _Infra:
    """Session-wide provider; each part is started on first use only."""

    def __init__(self):
        self._lock = threading.Lock()
        self._docker: bool | None = None
        self._containers: dict[str, object] = {}
        self._stack = None
        self._stack_error: BaseException | None = None
        self.sources: dict[str, str] = {}

    def docker(self) -> bool:
        if self._docker is None:
            self._docker = _docker_available()
        return self._docker

    def local_stack(self):
        """A private deploy/local stack for this session (Kafka + FerretDB + SMTP catcher)."""
        with self._lock:
            if self._stack_error is not None:
                raise RuntimeError(f"the session's local stack could not start: {self._stack_error}")
            if self._stack is None:
                from shared.dev import localstack
                from shared.dev.localstack import free_port_pair

                cfg = localstack.StackConfig.from_env(
                    name=f"pytest-{os.getpid()}",
                    kafka_port=free_port_pair(), kafka_controller_port=0,
                    mongo_port=free_port_pair(), mongo_debug_port=0,
                    smtp_port=free_port_pair())
                try:
                    localstack.up(cfg, infra_only=True, timeout=180)
                except BaseException as exc:
                    self._stack_error = exc
                    localstack.down(cfg, wipe=True)
                    raise RuntimeError(
                        "no KAFKA_BOOTSTRAP_SERVERS/MONGO_URI in the environment, no Docker engine, "
                        f"and the local stack (deploy/local) failed to start: {exc}") from exc
                self._stack = cfg
            return self._stack

    def kafka(self) -> str:
        if os.environ.get("KAFKA_BOOTSTRAP_SERVERS"):
            self.sources["kafka"] = "environment"
            return os.environ["KAFKA_BOOTSTRAP_SERVERS"]
        if self.docker():
            if "kafka" not in self._containers:
                from testcontainers.kafka import KafkaContainer

                container = KafkaContainer(KAFKA_IMAGE).with_kraft()
                container.start()
                self._containers["kafka"] = container
            self.sources["kafka"] = f"testcontainers {KAFKA_IMAGE}"
            return self._containers["kafka"].get_bootstrap_server()
        self.sources["kafka"] = "local stack (deploy/local)"
        return self.local_stack().kafka_bootstrap

    def mongo(self) -> str:
        if os.environ.get("MONGO_URI"):
            self.sources["mongo"] = "environment"
            return os.environ["MONGO_URI"]
        if self.docker():
            if "mongo" not in self._containers:
                from testcontainers.mongodb import MongoDbContainer

                container = MongoDbContainer(MONGO_IMAGE)
                container.start()
                self._containers["mongo"] = container
            self.sources["mongo"] = f"testcontainers {MONGO_IMAGE}"
            return self._containers["mongo"].get_connection_url()
        self.sources["mongo"] = "local stack (deploy/local, FerretDB)"
        return self.local_stack().mongo_uri

    def close(self) -> None:
        for container in self._containers.values():
            try:
                container.stop()
            except Exception:   # noqa: BLE001
                pass
        if self._stack is not None:
            from shared.dev import localstack

            localstack.down(self._stack, wipe=True)


@pytest.fixture(scope="session")
def infra():
    """The session's infrastructure provider (lazy; see the module docstring)."""
    provider = _Infra()
    yield provider
    provider.close()


@pytest.fixture(scope="session")
def kafka_bootstrap(infra) -> str:
    """Bootstrap servers of a real Kafka broker (comma-separated host:port)."""
    bootstrap = infra.kafka()
    from shared.dev.localstack import kafka_healthy

    try:
        kafka_healthy(bootstrap, timeout=10)
    except Exception as exc:   # noqa: BLE001
        raise RuntimeError(f"Kafka at {bootstrap} ({infra.sources.get('kafka')}) does not answer: {exc}") from exc
    return bootstrap


@pytest.fixture(scope="session")
def mongo_uri(infra) -> str:
    """URI of a real MongoDB-wire server (MongoDB or FerretDB)."""
    uri = infra.mongo()
    from shared.dev.localstack import mongo_healthy

    try:
        mongo_healthy(uri, timeout=10)
    except Exception as exc:   # noqa: BLE001
        raise RuntimeError(f"MongoDB at {uri} ({infra.sources.get('mongo')}) does not answer: {exc}") from exc
    return uri


# --------------------------------------------------------------------------- unique names

def _slug(request) -> str:
    return re.sub(r"[^a-z0-9]+", "-", request.node.name.lower()).strip("-")[:40] or "test"


@pytest.fixture
def topic_name(request):
    """Factory of unique topic names for this test: `topic_name("events")`."""
    slug = _slug(request)

    def make(label: str = "t") -> str:
        return f"test.{slug}.{label}.{uuid.uuid4().hex[:10]}"
    return make


@pytest.fixture
def topics(kafka_bootstrap, topic_name):
    """Factory creating unique topics on the real broker: `topics("events", "findings",
    partitions=3)` returns {label: topic name}; the topics are deleted after the test."""
    from shared.platform.messaging import ensure_topics

    created: list[str] = []

    def make(*labels: str, partitions: int = 3) -> dict[str, str]:
        names = {label: topic_name(label) for label in (labels or ("t",))}
        ensure_topics(kafka_bootstrap, {name: partitions for name in names.values()})
        created.extend(names.values())
        return names
    yield make
    if created:
        from kafka.admin import KafkaAdminClient

        try:
            admin = KafkaAdminClient(bootstrap_servers=kafka_bootstrap.split(","), client_id="motcua-tests")
            try:
                admin.delete_topics(created)
            finally:
                admin.close()
        except Exception:   # noqa: BLE001 - cleanup is best effort; names are unique anyway
            pass


@pytest.fixture
def mongo_client(mongo_uri):
    from pymongo import MongoClient

    client = MongoClient(mongo_uri, serverSelectionTimeoutMS=10000, uuidRepresentation="standard",
                         tz_aware=True)
    yield client
    client.close()


@pytest.fixture
def mongo_db(mongo_client, request):
    """A fresh pymongo Database with a unique name, dropped after the test."""
    name = f"t_{_slug(request).replace('-', '_')[:30]}_{uuid.uuid4().hex[:10]}"
    db = mongo_client[name]
    yield db
    try:
        mongo_client.drop_database(name)
    except Exception:   # noqa: BLE001
        pass


# --------------------------------------------------------------------------- SMTP

@dataclass
class ReceivedMail:
    mail_from: str
    rcpt_tos: list[str]
    message: email.message.EmailMessage
    raw: bytes

    @property
    def subject(self) -> str:
        return str(self.message["Subject"] or "")

    def text(self) -> str:
        """All text parts, decoded (plain and HTML)."""
        parts = []
        for part in self.message.walk():
            if part.get_content_maintype() == "text":
                parts.append(part.get_content())
        return "\n".join(parts)


@dataclass
class SmtpServer:
    """An in-process SMTP server (aiosmtpd) collecting messages in memory."""
    host: str
    port: int
    messages: list[ReceivedMail] = field(default_factory=list)
    _cond: threading.Condition = field(default_factory=threading.Condition)

    def _add(self, mail: ReceivedMail) -> None:
        with self._cond:
            self.messages.append(mail)
            self._cond.notify_all()

    def wait_for(self, n: int = 1, timeout: float = 30.0) -> list[ReceivedMail]:
        """Block until at least `n` messages arrived; AssertionError after `timeout` seconds."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while len(self.messages) < n:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(f"expected {n} e-mail(s) within {timeout}s, got {len(self.messages)}")
                self._cond.wait(left)
            return list(self.messages)

    @property
    def env(self) -> dict[str, str]:
        return {"SMTP_HOST": self.host, "SMTP_PORT": str(self.port)}


@pytest.fixture
def smtp_server():
    """A real SMTP server on a free port; `smtp_server.wait_for(n)` returns the messages."""
    from aiosmtpd.controller import Controller

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = SmtpServer("127.0.0.1", port)

    class Handler:
        async def handle_DATA(self, _server, _session, envelope):
            raw = envelope.original_content or envelope.content
            if isinstance(raw, str):
                raw = raw.encode("utf-8")
            msg = email.message_from_bytes(raw, policy=email.policy.default)
            server._add(ReceivedMail(envelope.mail_from, list(envelope.rcpt_tos), msg, raw))
            return "250 OK"

    controller = Controller(Handler(), hostname="127.0.0.1", port=port, enable_SMTPUTF8=True,
                            loop=asyncio.new_event_loop())
    controller.start()
    yield server
    controller.stop()


# --------------------------------------------------------------------------- time

@pytest.fixture
def virtual_clock() -> VirtualClock:
    """A clock the test moves by hand, starting Tuesday 5 Nov 2024, 09:00 in Hà Nội (02:00 UTC)."""
    return VirtualClock(VIRTUAL_START)
