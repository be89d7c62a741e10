"""Shared fixtures.

Infrastructure (`kafka_bootstrap`, `mongo_uri`, and everything built on them) is lazy: a test that
does not ask for it starts nothing, so `tests/unit` never touches Kafka or MongoDB. Where the
infrastructure comes from, in order:

1. `KAFKA_BOOTSTRAP_SERVERS` / `MONGO_URI` from the environment (`source .local/dev.env` to use
   the shared dev stack of `motcua local up`);
2. testcontainers when a Docker engine answers and an image can be had: the official
   apache/kafka:4.3.1 / mongo:7.0, or the local stand-ins built by `bash deploy/compose/images.sh`
   (motcua-local/kafka, motcua-local/ferretdb) on machines with no image registry;
   MOTCUA_TEST_KAFKA_IMAGE / MOTCUA_TEST_MONGO_IMAGE name another image;
   MOTCUA_TEST_INFRA=local skips this step, MOTCUA_TEST_INFRA=docker makes it the only one;
3. otherwise a private local stack (deploy/local: Kafka jars + FerretDB) started for this test
   session on free ports, in its own state directory, stopped and deleted at the end.

The choice and its reason are the first lines of pytest's header ("infrastructure kafka: …").
If the chosen source fails, the tests that need it ERROR with the reason; nothing is skipped
silently. Tests under tests/compose (marker `compose`) run only when selected: `-m compose`.
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
from pathlib import Path

import pytest

from shared.platform.clock import VirtualClock

# `settings` and `db` of the sla tests on the real broker and store (helpers shared between test
# modules live in tests/helpers/, never in another test module)
from helpers.sla_stack import db, settings  # noqa: F401

from helpers.clock import VIRTUAL_START  # noqa: E402,F401  (fixtures below use it)
from helpers.net import delete_topics  # noqa: E402


def pytest_configure(config):
    config.addinivalue_line("markers", "compose: drives the docker compose stack (tests/compose); "
                                       "runs only when selected: -m compose, or a path under tests/compose")


def _compose_selected(config) -> bool:
    markexpr = config.getoption("markexpr") or ""
    if re.search(r"(?<!not )\bcompose\b", markexpr):
        return True
    return any(_repo_parts(config, Path(str(arg).split("::")[0]))[:2] == ("tests", "compose")
               for arg in config.args)


def _repo_parts(config, path: Path) -> tuple[str, ...]:
    """The path's parts below the repository root (the checkout's own folder names do not count)."""
    path = path if path.is_absolute() else Path(config.invocation_params.dir) / path
    try:
        return path.resolve().relative_to(config.rootpath.resolve()).parts
    except ValueError:
        return path.parts


def pytest_collection_modifyitems(config, items):
    """Mark tests by folder so `-m integration` / `-m e2e` / `-m "not integration"` select them;
    tests/compose (a Docker engine, minutes of work) only when asked for."""
    compose, kept = [], []
    parts_of: dict[str, tuple[str, ...]] = {}      # one path resolution per file, not per test
    for item in items:
        path = str(item.fspath)
        if path not in parts_of:
            parts_of[path] = _repo_parts(config, Path(path))
        parts = parts_of[path]
        if "integration" in parts:
            item.add_marker(pytest.mark.integration)
        elif "e2e" in parts:
            item.add_marker(pytest.mark.e2e)
        elif "compose" in parts:
            item.add_marker(pytest.mark.compose)
            compose.append(item)
            continue
        kept.append(item)
    if compose and not _compose_selected(config):
        config.hook.pytest_deselected(items=compose)
        items[:] = kept


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

# Images tried for testcontainers, in order: an image already on the engine is used first, then one
# the engine can pull. The official images for a Docker host with internet; the local stand-ins
# (deploy/compose/images.sh) for machines with no registry. MOTCUA_TEST_KAFKA_IMAGE /
# MOTCUA_TEST_MONGO_IMAGE name the one image to use instead.
KAFKA_IMAGES = ("apache/kafka:4.3.1", "motcua-local/kafka:4.3.1")
MONGO_IMAGES = ("mongo:7.0", "motcua-local/ferretdb:1.24.2-idfilter")
CONTAINER_LABEL = "motcua.tests.pid"


def _docker_client():
    """A client of the Docker engine when one answers within a few seconds, else None."""
    try:
        import docker

        client = docker.from_env(timeout=5)
        try:
            if client.ping():
                return client
        except Exception:   # noqa: BLE001
            pass
        client.close()
    except Exception:   # noqa: BLE001 - no docker package, no socket, no permission, timeout…
        pass
    return None


def _first_error_line(exc: BaseException) -> str:
    # docker's APIError carries the engine's own words apart from the HTTP wrapping
    text = str(getattr(exc, "explanation", None) or exc).strip().splitlines()
    return (text[0] if text else type(exc).__name__)[:160]


def _image_source(client, candidates: tuple[str, ...]) -> tuple[str | None, str]:
    """(image, how) for the first candidate on the engine, else the first its registry serves
    (checked without pulling), else (None, why none can be had)."""
    import docker.errors

    for image in candidates:
        try:
            client.images.get(image)
            return image, "present on the engine"
        except docker.errors.ImageNotFound:
            continue
        except Exception as exc:   # noqa: BLE001
            return None, f"the engine could not be asked for {image}: {_first_error_line(exc)}"
    errors = []
    for image in candidates:
        try:
            client.api.inspect_distribution(image)
            return image, "to be pulled"
        except Exception as exc:   # noqa: BLE001 - no registry, unknown image, auth…
            errors.append(f"{image}: {_first_error_line(exc)}")
    return None, "not on the engine and not pullable (" + "; ".join(errors) + ")"


@dataclass(frozen=True)
class InfraPlan:
    """Where Kafka and MongoDB come from in this session: 'environment', 'testcontainers' (with
    `image`) or 'local stack', and why. Decided once, without starting or pulling anything."""
    kafka: str
    kafka_image: str | None
    kafka_why: str
    mongo: str
    mongo_image: str | None
    mongo_why: str

    def header(self) -> list[str]:
        def line(part, source, image, why):
            what = f"testcontainers {image}" if source == "testcontainers" else source
            return f"infrastructure {part}: {what} ({why})"
        return [line("kafka", self.kafka, self.kafka_image, self.kafka_why),
                line("mongo", self.mongo, self.mongo_image, self.mongo_why)]


def plan_infra(environ=None, client_factory=_docker_client) -> InfraPlan:
    env = os.environ if environ is None else environ
    mode = env.get("MOTCUA_TEST_INFRA", "auto") or "auto"
    if mode not in ("auto", "local", "docker"):
        raise pytest.UsageError(f"MOTCUA_TEST_INFRA={mode!r}: expected auto, local or docker")
    parts = {}
    need = []
    for part, var, test_var, images in (
            ("kafka", "KAFKA_BOOTSTRAP_SERVERS", "MOTCUA_TEST_KAFKA_IMAGE", KAFKA_IMAGES),
            ("mongo", "MONGO_URI", "MOTCUA_TEST_MONGO_IMAGE", MONGO_IMAGES)):
        if env.get(var):
            parts[part] = ("environment", None, f"{var}={env[var]}")
        else:
            wanted = (env[test_var],) if env.get(test_var) else images
            need.append((part, test_var, wanted))
    if need and mode == "local":
        for part, _test_var, _wanted in need:
            parts[part] = ("local stack", None, "MOTCUA_TEST_INFRA=local: deploy/local processes")
        need = []
    if need:
        client = client_factory()
        for part, test_var, wanted in need:
            if mode == "docker" and client is None:
                raise pytest.UsageError("MOTCUA_TEST_INFRA=docker but no Docker engine answers")
            if client is None:
                parts[part] = ("local stack", None, "no Docker engine answers: deploy/local processes")
                continue
            image, how = _image_source(client, wanted)
            if image is None and mode == "docker":
                raise pytest.UsageError(f"MOTCUA_TEST_INFRA=docker but for {part} {how}")
            if image is None:
                parts[part] = ("local stack", None,
                               f"a Docker engine answers but {how}: deploy/local processes instead; "
                               f"build the stand-ins with `bash deploy/compose/images.sh` or set {test_var}")
            else:
                parts[part] = ("testcontainers", image, how)
        if client is not None:
            client.close()
    k, m = parts["kafka"], parts["mongo"]
    return InfraPlan(k[0], k[1], k[2], m[0], m[1], m[2])


_PLAN: InfraPlan | None = None


def session_plan() -> InfraPlan:
    global _PLAN
    if _PLAN is None:
        _PLAN = plan_infra()
    return _PLAN


def pytest_report_header(config):
    return session_plan().header()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _remove_stale_containers(client) -> None:
    """Containers of test sessions that died without stopping them (a killed run)."""
    try:
        containers = client.containers.list(all=True, filters={"label": CONTAINER_LABEL})
    except Exception:   # noqa: BLE001
        return
    for container in containers:
        try:
            pid = int(container.labels.get(CONTAINER_LABEL, "0"))
            os.kill(pid, 0)
            continue            # that session still runs
        except (ValueError, ProcessLookupError):
            pass
        except PermissionError:
            continue
        try:
            container.remove(force=True, v=True)
        except Exception:   # noqa: BLE001
            pass


def _labelled(container):
    from testcontainers.core.config import testcontainers_config

    # Ryuk (testcontainers' reaper) is an image of its own that machines with no registry cannot
    # pull: this session stops its containers itself, and the next removes those of a killed run
    testcontainers_config.ryuk_disabled = True
    return container.with_kwargs(labels={CONTAINER_LABEL: str(os.getpid())})


def start_kafka_container(image: str, timeout: float = 120.0):
    """A single-node KRaft broker of the official apache/kafka image (or of the stand-in, which
    reads the same KAFKA_* variables), reachable at 127.0.0.1:<free port>. Returns (container,
    bootstrap)."""
    from testcontainers.core.container import DockerContainer
    from testcontainers.core.wait_strategies import LogMessageWaitStrategy

    from shared.dev.health import kafka_healthy

    port = _free_port()
    container = DockerContainer(image).with_envs(
        KAFKA_NODE_ID="1",
        KAFKA_PROCESS_ROLES="broker,controller",
        KAFKA_LISTENERS="PLAINTEXT://:9092,CONTROLLER://:9093",
        # clients outside the container reach the broker through the published port
        KAFKA_ADVERTISED_LISTENERS=f"PLAINTEXT://127.0.0.1:{port}",
        KAFKA_CONTROLLER_LISTENER_NAMES="CONTROLLER",
        KAFKA_LISTENER_SECURITY_PROTOCOL_MAP="CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT",
        KAFKA_CONTROLLER_QUORUM_VOTERS="1@localhost:9093",
        KAFKA_OFFSETS_TOPIC_REPLICATION_FACTOR="1",
        KAFKA_OFFSETS_TOPIC_NUM_PARTITIONS="1",
        KAFKA_TRANSACTION_STATE_LOG_REPLICATION_FACTOR="1",
        KAFKA_TRANSACTION_STATE_LOG_MIN_ISR="1",
        KAFKA_GROUP_INITIAL_REBALANCE_DELAY_MS="0",
        KAFKA_HEAP_OPTS="-Xmx512m -Xms256m",
    )
    # published on 127.0.0.1 only, at the port the broker advertises
    container.ports["9092/tcp"] = ("127.0.0.1", port)
    container.waiting_for(LogMessageWaitStrategy("Kafka Server started").with_startup_timeout(timeout))
    _labelled(container).start()
    bootstrap = f"127.0.0.1:{port}"
    _wait(lambda: kafka_healthy(bootstrap, timeout=5), timeout, f"Kafka in {image} at {bootstrap}")
    return container, bootstrap


def start_mongo_container(image: str, timeout: float = 60.0):
    """The official mongo image (or the FerretDB stand-in, same port), reachable at
    127.0.0.1:<free port>. Returns (container, uri)."""
    from testcontainers.core.container import DockerContainer

    from shared.dev.health import mongo_healthy

    port = _free_port()
    container = DockerContainer(image)
    container.ports["27017/tcp"] = ("127.0.0.1", port)
    _labelled(container).start()
    uri = f"mongodb://127.0.0.1:{port}/"
    _wait(lambda: mongo_healthy(uri, timeout=2), timeout, f"MongoDB in {image} at {uri}")
    return container, uri


def _wait(check, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    last: BaseException | None = None
    while time.monotonic() < deadline:
        try:
            if check():
                return
        except Exception as exc:   # noqa: BLE001
            last = exc
        time.sleep(0.5)
    raise RuntimeError(f"{what} not ready within {timeout:.0f}s" + (f": {last}" if last else ""))


class _Infra:
    """Session-wide provider following the session's plan; each part is started on first use."""

    def __init__(self, plan: InfraPlan | None = None):
        self.plan = plan or session_plan()
        self._lock = threading.Lock()
        self._containers: dict[str, object] = {}
        self._addresses: dict[str, str] = {}
        self._stack = None
        self._stack_error: BaseException | None = None
        self._cleaned = False
        self.sources: dict[str, str] = {}

    def local_stack(self):
        """A private deploy/local stack for this session (Kafka + FerretDB + SMTP catcher)."""
        with self._lock:
            if self._stack_error is not None:
                raise RuntimeError(f"the session's local stack could not start: {self._stack_error}")
            if self._stack is None:
                from shared.dev import localstack
                from shared.dev.stackconfig import StackConfig
                from shared.dev.supervisor import free_port_pair

                cfg = StackConfig.from_env(
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
                        "no KAFKA_BOOTSTRAP_SERVERS/MONGO_URI in the environment, no usable Docker "
                        f"image, and the local stack (deploy/local) failed to start: {exc}") from exc
                self._stack = cfg
            return self._stack

    def _container(self, part: str, image: str, start) -> str:
        with self._lock:
            if part not in self._addresses:
                client = _docker_client()
                if client is not None:
                    if not self._cleaned:
                        _remove_stale_containers(client)
                        self._cleaned = True
                    client.close()
                try:
                    container, address = start(image)
                except Exception as exc:
                    raise RuntimeError(f"testcontainers could not start {image}: {exc}") from exc
                self._containers[part] = container
                self._addresses[part] = address
            return self._addresses[part]

    def kafka(self) -> str:
        p = self.plan
        if p.kafka == "environment":
            self.sources["kafka"] = "environment"
            return os.environ["KAFKA_BOOTSTRAP_SERVERS"]
        if p.kafka == "testcontainers":
            self.sources["kafka"] = f"testcontainers {p.kafka_image}"
            return self._container("kafka", p.kafka_image, start_kafka_container)
        self.sources["kafka"] = "local stack (deploy/local)"
        return self.local_stack().kafka_bootstrap

    def mongo(self) -> str:
        p = self.plan
        if p.mongo == "environment":
            self.sources["mongo"] = "environment"
            return os.environ["MONGO_URI"]
        if p.mongo == "testcontainers":
            self.sources["mongo"] = f"testcontainers {p.mongo_image}"
            return self._container("mongo", p.mongo_image, start_mongo_container)
        self.sources["mongo"] = "local stack (deploy/local, FerretDB)"
        return self.local_stack().mongo_uri

    def close(self) -> None:
        for container in self._containers.values():
            try:
                container.stop()
            except Exception:   # noqa: BLE001
                pass
        self._containers.clear()
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
    from shared.dev.health import kafka_healthy

    try:
        kafka_healthy(bootstrap, timeout=10)
    except Exception as exc:   # noqa: BLE001
        raise RuntimeError(f"Kafka at {bootstrap} ({infra.sources.get('kafka')}) does not answer: {exc}") from exc
    return bootstrap


@pytest.fixture(scope="session")
def mongo_uri(infra) -> str:
    """URI of a real MongoDB-wire server (MongoDB or FerretDB)."""
    uri = infra.mongo()
    from shared.dev.health import mongo_healthy

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
    delete_topics(kafka_bootstrap, created)


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
