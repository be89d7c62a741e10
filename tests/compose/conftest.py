"""The compose stack for real (issue 14): docker-compose.yml with the local stand-in images on this
machine's Docker engine, driven from the host through the published ports (127.0.0.1) and
`docker compose exec` for what is only inside the network (the MongoDB-wire store).

One stack per session, project MOTCUA_COMPOSE_PROJECT (default motcua-ci) on free ports, with the
`monitoring` profile, started from nothing (`down -v` first: fresh volumes) and removed at the end
unless MOTCUA_COMPOSE_KEEP=1. Waits poll what they wait for (consumer groups and the store through
one long-lived probe process inside sla-api, Mailpit's search API) at short intervals, each with
a deadline that names what did not happen.
Figures (timings, throughput, fault lines) are collected in FIGURES and printed at the end of the
run under "compose figures".
"""
from __future__ import annotations

import json
import os
import queue
import secrets
import subprocess
import threading
import time
from pathlib import Path

import pytest
import requests

from helpers.compose import FIGURES, REPO, figure, run_script  # noqa: F401

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
        self._probe: Probe | None = None
        self.http = requests.Session()

    # -- docker compose ---------------------------------------------------------------------
    def dc_cmd(self, *args: str, profiles=("monitoring",)) -> list[str]:
        cmd = ["docker", "compose", "--project-directory", str(REPO), "-f", str(REPO / "docker-compose.yml"),
               "--env-file", str(CACHE / "local.env"), "-p", self.project]
        for p in profiles:
            cmd += ["--profile", p]
        return cmd + list(args)

    def dc(self, *args: str, check: bool = True, timeout: float = 900, profiles=("monitoring",),
           input: str | None = None) -> subprocess.CompletedProcess:
        res = subprocess.run(self.dc_cmd(*args, profiles=profiles), env=self.env, capture_output=True,
                             text=True, timeout=timeout, input=input)
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
            time.sleep(1)

    def probe(self, op: str, timeout: float = 60, **args) -> dict:
        """One request to the session's probe process in sla-api (tests/compose/probe_server.py),
        started on first use and again after it died; its error answers are returned as they are
        ({"error": ...}) for the caller's wait to ask again."""
        if self._probe is None:
            self._probe = Probe(self)
        return self._probe.ask({"op": op, **args}, timeout)

    def store(self, tag: str) -> dict:
        """What the store holds for the dossiers whose code contains `tag`."""
        out = self.probe("store", timeout=120, tag=tag)
        assert "error" not in out, f"store probe: {out['error']}"
        return out

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

    def group_state(self, group: str, topic: str) -> dict | None:
        """{assigned, lag, committed, members, state, partitions} of a consumer group on `topic`
        (lag: end minus committed offsets, summed over the partitions; committed: their sum), or
        None when Kafka did not answer."""
        out = self.probe("group", group=group, topic=topic)
        return None if "error" in out else out

    def wait_drained(self, timeout: float = 900) -> float:
        """Wait until the sla group has applied every event and the notify group has handled every
        finding (committed lag 0 on both for 2 s: a finding the sla workers publish last reaches
        the notify group's end offsets within that); returns the seconds it took."""
        t0 = time.monotonic()
        zero_since = None
        state = {}
        while True:
            state = {g: self.group_state(g, t) for g, t in (("sla", "dossier.events"), ("notify", "sla.findings"))}
            drained = all(s is not None and s["lag"] == 0 for s in state.values())
            now = time.monotonic()
            zero_since = (zero_since or now) if drained else None
            if zero_since is not None and now - zero_since >= 2:
                return now - t0
            if now - t0 > timeout:
                raise AssertionError(f"not drained within {timeout:.0f}s: {state}")
            time.sleep(0.5)

    def wait_sent(self, timeout: float = 600) -> float:
        """After `wait_drained`: wait until no notification is due within 150 s (a lease of a killed
        sender ends within 2 min: its notification is sent again then); returns the seconds."""
        t0 = time.monotonic()
        while True:
            out = self.probe("due", within_s=150)
            if out.get("due") == 0:
                return time.monotonic() - t0
            if time.monotonic() - t0 > timeout:
                raise AssertionError(f"notifications still due after {timeout:.0f}s: {out}")
            time.sleep(1)

    # -- Mailpit's HTTP API -----------------------------------------------------------------
    def mail(self, query: str | None = None) -> list[dict]:
        """Every message in Mailpit, or those its search finds (`subject:"…"`, Mailpit's syntax)."""
        out, start = [], 0
        path, params = ("/api/v1/search", {"query": query}) if query else ("/api/v1/messages", {})
        while True:
            page = self.http.get(f"{self.url('mailpit')}{path}",
                                 params={**params, "start": start, "limit": 1000}, timeout=30).json()
            out.extend(page["messages"])
            start += len(page["messages"])
            if not page["messages"] or start >= page["messages_count"]:
                return out

    def mail_about(self, text: str) -> list[dict]:
        """The messages whose subject contains `text` (a dossier code or a test's tag)."""
        return [m for m in self.mail(f'subject:"{text}"') if text in m["Subject"]]

    def wait_mail(self, text: str, timeout: float, also=lambda m: True) -> list[dict]:
        """Poll Mailpit's search every 0.5 s until a message about `text` (and `also`) is there."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                found = [m for m in self.mail_about(text) if also(m)]
            except requests.RequestException:   # Mailpit stopped on purpose
                found = []
            if found:
                return found
            if time.monotonic() > deadline:
                raise AssertionError(f"no message about {text!r} in Mailpit within {timeout:.0f} s")
            time.sleep(0.5)

    def wait_mail_count(self, text: str, n: int, timeout: float = 30) -> list[dict]:
        """The messages about `text` once there are at least `n` (the store says `n` were sent:
        Mailpit holds them a moment later at most), or those there are after `timeout`."""
        deadline = time.monotonic() + timeout
        while True:
            found = self.mail_about(text)
            if len(found) >= n or time.monotonic() > deadline:
                return found
            time.sleep(0.5)

    def mail_text(self, message_id: str) -> str:
        return self.http.get(f"{self.url('mailpit')}/api/v1/message/{message_id}", timeout=30).json()["Text"]

    def close(self) -> None:
        if self._probe is not None:
            self._probe.close()


class Probe:
    """tests/compose/probe_server.py running in sla-api through `docker compose exec`; its lines
    are read by a thread so that every request has a deadline."""

    SCRIPT = (Path(__file__).parent / "probe_server.py").read_text()

    def __init__(self, stack: Stack):
        self.stack = stack
        self.proc: subprocess.Popen | None = None
        self.lines: queue.Queue = queue.Queue()

    def _start(self) -> None:
        self.close()
        self.lines = queue.Queue()
        self.proc = subprocess.Popen(
            self.stack.dc_cmd("exec", "-T", "sla-api", "python", "-u", "-c", self.SCRIPT, profiles=()),
            env=self.stack.env, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL, text=True)
        threading.Thread(target=self._pump, args=(self.proc.stdout, self.lines),
                         name="compose-probe", daemon=True).start()
        self._read(120)   # {"ready": true}

    @staticmethod
    def _pump(out, lines: queue.Queue) -> None:
        for line in out:
            lines.put(line)
        lines.put(None)     # the process exited

    def _read(self, timeout: float) -> dict:
        try:
            line = self.lines.get(timeout=timeout)
        except queue.Empty:
            raise TimeoutError(f"the probe did not answer within {timeout:.0f} s") from None
        if line is None:
            raise EOFError("the probe exited")
        return json.loads(line)

    def ask(self, req: dict, timeout: float) -> dict:
        err: Exception | None = None
        for _ in range(2):     # a probe that died (or hung) is started again once
            try:
                if self.proc is None or self.proc.poll() is not None:
                    self._start()
                self.proc.stdin.write(json.dumps(req) + "\n")
                self.proc.stdin.flush()
                return self._read(timeout)
            except (OSError, EOFError, TimeoutError, ValueError) as exc:
                err = exc
                self.close()
        return {"error": f"probe: {err}"}

    def close(self) -> None:
        """End the probe: stdin closed ends its loop in the container (killing the compose client
        alone would leave it running there)."""
        if self.proc is not None:
            try:
                self.proc.stdin.close()
                self.proc.wait(5)
            except (OSError, subprocess.TimeoutExpired):
                self.proc.kill()
                self.proc.wait(30)
            self.proc = None


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
    s.dc("build", "intake", timeout=1200, profiles=())    # the image of the six app services
    build_s = time.monotonic() - t1
    s.up_seconds = s.up(wait=420)
    s.build_seconds = build_s
    figure(f"service image build: {build_s:.0f} s; up from fresh volumes to every container healthy: "
           f"{s.up_seconds:.0f} s")
    yield s
    s.close()
    if os.environ.get("MOTCUA_COMPOSE_KEEP") != "1":
        s.dc("down", "-v", "--remove-orphans", check=False, timeout=300)
