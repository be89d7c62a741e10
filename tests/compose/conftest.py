"""The compose stack for real (issue 14): docker-compose.yml with the local stand-in images on this
machine's Docker engine, driven from the host through the published ports (127.0.0.1) and
`docker compose exec` for what is only inside the network (the MongoDB-wire store).

One stack per session, project MOTCUA_COMPOSE_PROJECT (default motcua-ci) on free ports, with the
`monitoring` profile, started from nothing (`down -v` first: fresh volumes) and removed at the end
unless MOTCUA_COMPOSE_KEEP=1.
Figures (timings, throughput, fault lines) are collected in FIGURES and printed at the end of the
run under "compose figures".
"""
from __future__ import annotations

import json
import os
import secrets
import subprocess
import time
from pathlib import Path

import pytest
import requests

from helpers.compose import FIGURES, QUEUE_PROBE, REPO, STORE_PROBE, figure, run_script  # noqa: F401

CACHE = Path(os.environ.get("MOTCUA_COMPOSE_CACHE", REPO / "deploy" / "compose" / ".cache"))
ROOT_AGENCY = "000.00.00.H56"

# the tests tell a story in this order: up from nothing, scale out, faults, monitoring
ORDER = ["test_stack_up.py", "test_scale_out.py", "test_faults.py", "test_monitoring.py",
         "test_testcontainers.py"]


def pytest_collection_modifyitems(config, items):
    def rank(item):
        name = Path(str(item.fspath)).name
        return ORDER.index(name) if name in ORDER else len(ORDER)
    items.sort(key=rank)


def pytest_terminal_summary(terminalreporter):
    if FIGURES:
        terminalreporter.section("compose figures")
        for line in FIGURES:
            terminalreporter.write_line(line)


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Stack:
    """docker-compose.yml run as project `project` with the stand-in images."""

    def __init__(self, project: str):
        self.project = project
        self.ports = {name: _free_port() for name in
                      ("INTAKE_PORT", "SLA_PORT", "NOTIFY_PORT", "DASHBOARD_PORT", "MAILPIT_PORT",
                       "PROMETHEUS_PORT", "ALERTMANAGER_PORT")}
        self.env = {k: v for k, v in os.environ.items() if not k.startswith(("COMPOSE_", "DOCKER_HOST"))}
        self.env.update({k: str(v) for k, v in self.ports.items()})
        self.env.update(NOTIFY_SECRET=secrets.token_hex(32), MOTCUA_BIND="127.0.0.1",
                        NOTIFY_URL=f"http://127.0.0.1:{self.ports['NOTIFY_PORT']}")
        self._key: str | None = None
        self.http = requests.Session()

    # -- docker compose ---------------------------------------------------------------------
    def dc(self, *args: str, check: bool = True, timeout: float = 900, profiles=("monitoring",),
           input: str | None = None) -> subprocess.CompletedProcess:
        cmd = ["docker", "compose", "--project-directory", str(REPO), "-f", str(REPO / "docker-compose.yml"),
               "--env-file", str(CACHE / "local.env"), "-p", self.project]
        for p in profiles:
            cmd += ["--profile", p]
        res = subprocess.run(cmd + list(args), env=self.env, capture_output=True, text=True,
                             timeout=timeout, input=input)
        if check and res.returncode != 0:
            raise AssertionError(f"docker compose {' '.join(args)} failed ({res.returncode}):\n"
                                 f"{res.stdout[-3000:]}\n{res.stderr[-3000:]}")
        return res

    def up(self, *args: str, wait: float = 300, profiles=("monitoring",)) -> float:
        """`up -d --wait` (every started container healthy); returns the seconds it took."""
        t0 = time.monotonic()
        self.dc("up", "-d", "--wait", "--wait-timeout", str(int(wait)), *args, profiles=profiles,
                timeout=wait + 600)
        return time.monotonic() - t0

    def containers(self, service: str | None = None) -> list[dict]:
        out = self.dc("ps", "--all", "--format", "json", *([service] if service else [])).stdout
        rows = []
        for line in out.splitlines():
            line = line.strip()
            if not line:
                continue
            data = json.loads(line)
            rows.extend(data if isinstance(data, list) else [data])
        return rows

    def container_ids(self, service: str) -> list[str]:
        return [c["ID"] for c in self.containers(service) if c.get("State") == "running"]

    def docker(self, *args: str, check: bool = True, timeout: float = 120) -> subprocess.CompletedProcess:
        res = subprocess.run(["docker", *args], capture_output=True, text=True, timeout=timeout)
        if check and res.returncode != 0:
            raise AssertionError(f"docker {' '.join(args)} failed: {res.stderr[-2000:]}")
        return res

    def wait_healthy(self, timeout: float = 300) -> dict[str, str]:
        deadline = time.monotonic() + timeout
        while True:
            status = {c["Name"]: f"{c.get('State')}/{c.get('Health') or '-'}" for c in self.containers()}
            if status and all(s == "running/healthy" for s in status.values()):
                return status
            if time.monotonic() > deadline:
                raise AssertionError(f"not every container healthy within {timeout:.0f}s: {status}")
            time.sleep(2)

    def exec_python(self, service: str, code: str, *args: str, timeout: float = 300):
        """Run a Python script inside a service container (the store is only reachable there);
        the script prints one JSON document."""
        res = self.dc("exec", "-T", service, "python", "-", *args, input=code, timeout=timeout)
        return json.loads(res.stdout.strip().splitlines()[-1])

    # -- HTTP through the published ports ---------------------------------------------------
    def url(self, service: str) -> str:
        port = {"intake": "INTAKE_PORT", "sla-api": "SLA_PORT", "notify-api": "NOTIFY_PORT",
                "dashboard": "DASHBOARD_PORT",
                "mailpit": "MAILPIT_PORT", "prometheus": "PROMETHEUS_PORT",
                "alertmanager": "ALERTMANAGER_PORT"}[service]
        return f"http://127.0.0.1:{self.ports[port]}"

    @property
    def key(self) -> str:
        """An admin API key of the root agency (created once with the CLI inside intake)."""
        if self._key is None:
            out = self.dc("exec", "-T", "intake", "motcua", "keys", "create", "--agency", ROOT_AGENCY,
                          "--role", "admin", "--label", "compose tests").stdout
            self._key = out.strip().splitlines()[-1].strip()
        return self._key

    def post_batch(self, events: list[dict], timeout: float = 60) -> requests.Response:
        return self.http.post(f"{self.url('intake')}/v1/events:batch", json={"events": events},
                              headers={"Authorization": f"Bearer {self.key}"}, timeout=timeout)

    def post_all(self, events: list[dict], batch: int = 500, deadline_s: float = 600) -> dict[str, str]:
        """Post every event, retrying what was not accepted (503/429 honour Retry-After);
        returns event id -> recorded_at (intake's receipt instant)."""
        pending = list(events)
        recorded: dict[str, str] = {}
        deadline = time.monotonic() + deadline_s
        while pending:
            if time.monotonic() > deadline:
                raise AssertionError(f"{len(pending)} events still not accepted after {deadline_s:.0f}s")
            chunk, pending = pending[:batch], pending[batch:]
            try:
                resp = self.post_batch(chunk)
            except requests.RequestException:
                pending = chunk + pending
                time.sleep(1)
                continue
            if resp.status_code != 200:
                pending = chunk + pending
                time.sleep(float(resp.headers.get("Retry-After", "1")))
                continue
            results = resp.json()["results"]
            retry = [chunk[r["index"]] for r in results if r["status"] not in (200, 202)]
            bad = [r for r in results if r["status"] not in (200, 202, 429, 503)]
            assert not bad, f"events refused: {bad[:3]}"
            recorded.update((r["event_id"], r["recorded_at"]) for r in results if r["status"] in (200, 202))
            if retry:
                pending = retry + pending
                time.sleep(float(resp.headers.get("Retry-After", "1")))
        return recorded

    def metrics(self, service: str, timeout: float = 10) -> dict[str, float]:
        """A Prometheus text page as {sample name with labels: value}."""
        text = self.http.get(f"{self.url(service)}/metrics", timeout=timeout).text
        out = {}
        for line in text.splitlines():
            if line and not line.startswith("#"):
                name, _, value = line.rpartition(" ")
                try:
                    out[name] = float(value)
                except ValueError:
                    pass
        return out

    def group_state(self, group: str, topic: str) -> tuple[int, int, int]:
        """(partitions of `topic` with a consumer, lag summed over the committed offsets, members)
        of a consumer group, from Kafka's own tool in the kafka container: it costs the store
        nothing (a poll of the store would slow down the workers it waits for)."""
        res = self.dc("exec", "-T", "-e", "KAFKA_HEAP_OPTS=-Xmx64m",
                      "-e", "KAFKA_JVM_PERFORMANCE_OPTS=-XX:TieredStopAtLevel=1 -XX:+UseSerialGC",
                      "kafka", "/opt/kafka/bin/kafka-consumer-groups.sh", "--bootstrap-server",
                      "localhost:9092", "--describe", "--group", group, check=False, profiles=(), timeout=60)
        assigned, lag, members = 0, 0, set()
        for line in res.stdout.splitlines():
            cols = line.split()
            if len(cols) >= 7 and cols[1] == topic and cols[2].isdigit():
                if cols[6] != "-":
                    assigned += 1
                    members.add(cols[6])
                lag += int(cols[5]) if cols[5].isdigit() else 0
        return assigned, lag, len(members)

    def wait_drained(self, timeout: float = 900) -> float:
        """Wait until the sla group has applied every event and the notify group has handled every
        finding (committed lag 0 on both, twice in a row); returns the seconds it took."""
        t0 = time.monotonic()
        zero = 0
        while zero < 2:
            _, sla_lag, _ = self.group_state("sla", "dossier.events")
            _, notify_lag, _ = self.group_state("notify", "sla.findings")
            zero = zero + 1 if sla_lag == 0 and notify_lag == 0 else 0
            if time.monotonic() - t0 > timeout:
                raise AssertionError(f"not drained within {timeout:.0f}s: sla lag {sla_lag}, notify lag {notify_lag}")
            time.sleep(2)
        return time.monotonic() - t0

    def wait_sent(self, timeout: float = 600) -> float:
        """After `wait_drained`: wait until no notification is due within 150 s (a lease of a killed
        sender ends within 2 min: its notification is sent again then); returns the seconds."""
        t0 = time.monotonic()
        while self.exec_python("notify-api", QUEUE_PROBE) > 0:
            if time.monotonic() - t0 > timeout:
                raise AssertionError(f"notifications still due after {timeout:.0f}s")
            time.sleep(5)
        return time.monotonic() - t0

    def group_lag(self) -> float | None:
        """The sla consumer group's lag on the events topic (sla-api /metrics), None if unknown."""
        try:
            m = self.metrics("sla-api")
        except requests.RequestException:
            return None
        lags = [v for k, v in m.items() if k.startswith("sla_consumer_group_lag{")]
        return sum(lags) if lags else None

    # -- Mailpit's HTTP API -----------------------------------------------------------------
    def mail(self) -> list[dict]:
        out, start = [], 0
        while True:
            page = self.http.get(f"{self.url('mailpit')}/api/v1/messages",
                                 params={"start": start, "limit": 1000}, timeout=30).json()
            out.extend(page["messages"])
            start += len(page["messages"])
            if not page["messages"] or start >= page["messages_count"]:
                return out

    def mail_text(self, message_id: str) -> str:
        return self.http.get(f"{self.url('mailpit')}/api/v1/message/{message_id}", timeout=30).json()["Text"]


# a script run inside sla-api: what the store holds for dossiers whose code contains a tag
@pytest.fixture(scope="session")
def stack():
    """The compose stack of this session, started from nothing (fresh volumes)."""
    t0 = time.monotonic()
    run_script("engine.sh")
    run_script("images.sh", "--monitoring")
    figure(f"engine and stand-in images ready: {time.monotonic() - t0:.0f} s (cached after the first run)")
    s = Stack(os.environ.get("MOTCUA_COMPOSE_PROJECT", "motcua-ci"))
    s.dc("down", "-v", "--remove-orphans", timeout=300)
    t1 = time.monotonic()
    s.dc("build", timeout=1200, profiles=())
    build_s = time.monotonic() - t1
    s.up_seconds = s.up(wait=420)
    s.build_seconds = build_s
    figure(f"service image build: {build_s:.0f} s; up from fresh volumes to every container healthy: "
           f"{s.up_seconds:.0f} s")
    yield s
    if os.environ.get("MOTCUA_COMPOSE_KEEP") != "1":
        s.dc("down", "-v", "--remove-orphans", check=False, timeout=300)
