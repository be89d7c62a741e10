"""The local stack without Docker (DESIGN.md §11): Kafka, FerretDB, an SMTP catcher writing
`.eml` files, and the services when their entry points exist — `up` (idempotent), `down` (stops
exactly the processes whose pid files it wrote), `status`, the clients' environment.

The parts: `stackconfig` (versions, directories, ports), `provision` (download and build into
the cache), `supervisor` (processes), `health`, `infra` (Kafka, FerretDB, SMTP), `mailcatcher`;
this module adds the services and the stack as a whole. `motcua local …` is its CLI;
`python -m shared.dev.localstack provision` downloads and builds without starting anything.
"""
from __future__ import annotations

import argparse
import os
import shutil
import sys
import uuid
from dataclasses import dataclass
from pathlib import Path

from shared.dev import supervisor
from shared.dev.health import http_healthy, kafka_healthy, mongo_healthy, smtp_healthy
from shared.dev.infra import create_topics, start_ferretdb, start_kafka, start_smtp
from shared.dev.provision import provision
from shared.dev.stackconfig import REPO_ROOT, StackConfig, StackError, tail


# --------------------------------------------------------------------------- services

@dataclass(frozen=True)
class ServiceSpec:
    name: str
    needs: tuple[str, ...]        # files (relative to the repo) that must exist
    argv: tuple[str, ...]         # after the python executable
    port_attr: str                # the port it serves: an API, or a worker's /metrics
    worker: bool = False          # a consumer: its port serves only Prometheus metrics


def _control_socket(cfg: StackConfig, service: str) -> tuple[str, ...]:
    """gunicorn >= 25.1 opens a control socket, by default one path ($HOME/.gunicorn/gunicorn.ctl)
    for every instance on the machine; each stack's API gets its own under `<state>/run/`
    (`gunicornc -s .local/dev/run/intake.ctl`), or none if that path is too long for a socket."""
    import gunicorn
    if tuple(getattr(gunicorn, "version_info", (0,))[:2]) < (25, 1):
        return ()
    path = cfg.state_dir / "run" / f"{service}.ctl"
    if len(str(path)) > 100:
        return ("--no-control-socket",)
    return ("--control-socket", str(path))


def service_specs(cfg: StackConfig) -> list[ServiceSpec]:
    def gunicorn(port_attr, target):
        port = getattr(cfg, port_attr)
        conf = REPO_ROOT / "services" / target.split(".")[1] / "gunicorn.conf.py"
        # a service's own gunicorn.conf.py (hooks, threads) when it has one; the command line
        # still decides the address and, on a small machine, a single worker
        extra = ("-c", str(conf)) if conf.exists() else ("--timeout", "60", "--graceful-timeout", "10")
        return ("-m", "gunicorn", *extra, *_control_socket(cfg, port_attr.split("_")[0]),
                "--bind", f"{cfg.host}:{port}", "--workers", "1", target)
    return [
        ServiceSpec("intake", ("services/intake/app.py",),
                    gunicorn("intake_port", "services.intake.app:create_app()"), "intake_port"),
        ServiceSpec("sla-worker", ("services/sla/__main__.py",),
                    ("-m", "services.sla", "worker", "--metrics-port", str(cfg.sla_metrics_port)),
                    "sla_metrics_port", worker=True),
        ServiceSpec("sla-api", ("services/sla/api.py",),
                    gunicorn("sla_port", "services.sla.api:create_app()"), "sla_port"),
        ServiceSpec("notify-worker", ("services/notify/__main__.py",),
                    ("-m", "services.notify", "worker", "--metrics-port", str(cfg.notify_metrics_port)),
                    "notify_metrics_port", worker=True),
        ServiceSpec("notify-api", ("services/notify/api.py",),
                    gunicorn("notify_port", "services.notify.api:create_app()"), "notify_port"),
        ServiceSpec("dashboard", ("services/dashboard/app.py",),
                    gunicorn("dashboard_port", "services.dashboard.app:create_app()"), "dashboard_port"),
    ]


def service_env(cfg: StackConfig) -> dict[str, str]:
    env = dict(os.environ)
    env.update(cfg.env())
    env.update({k: str(v) for k, v in cfg.extra_env.items()})
    env["PYTHONUNBUFFERED"] = "1"
    for var in ("NOTIFY_SECRET", "DASHBOARD_SECRET"):
        if env.get(var):
            continue
        # notify signs acknowledgement links, the dashboard its session cookies: a local stack
        # keeps one random secret each in its state
        secret_file = cfg.config_dir / var.lower()
        if not secret_file.exists():
            secret_file.parent.mkdir(parents=True, exist_ok=True)
            secret_file.write_text(uuid.uuid4().hex + uuid.uuid4().hex)
            secret_file.chmod(0o600)
        env[var] = secret_file.read_text().strip()
    env["PYTHONPATH"] = str(REPO_ROOT) + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    return env


def start_services(cfg: StackConfig, timeout: float = 60.0) -> dict[str, str]:
    """Start the services whose entry points exist; returns name -> what happened."""
    report: dict[str, str] = {}
    started: list[ServiceSpec] = []
    env = service_env(cfg)
    for spec in service_specs(cfg):
        missing = [p for p in spec.needs if not (REPO_ROOT / p).exists()]
        if missing:
            report[spec.name] = f"skipped: {', '.join(missing)} does not exist yet"
            continue
        if supervisor.read_pid(cfg, spec.name):
            report[spec.name] = "already running"
            continue
        if spec.port_attr:
            supervisor.check_port_free(cfg, spec.name, getattr(cfg, spec.port_attr))
        (cfg.state_dir / "run").mkdir(parents=True, exist_ok=True)     # gunicorn control sockets
        marker = " ".join(spec.argv[1:3]) if spec.worker else spec.argv[-1]
        supervisor.start(cfg, spec.name, [sys.executable, *spec.argv], env=env, marker=marker)
        started.append(spec)
    try:
        for spec in started:
            url = cfg.url(getattr(cfg, spec.port_attr))
            if spec.worker:
                # a worker serves only its metrics; it must answer there and still be alive
                supervisor.wait_healthy(cfg, spec.name, lambda u=url: http_healthy(u, path="/metrics"),
                                        timeout)
                if supervisor.read_pid(cfg, spec.name) is None:
                    raise StackError(f"{spec.name} exited; see {cfg.log_dir / (spec.name + '.log')}:\n"
                                     f"{tail(cfg.log_dir / (spec.name + '.log'))}")
                report[spec.name] = f"started (worker), {url}/metrics answers"
            else:
                supervisor.wait_healthy(cfg, spec.name, lambda u=url: http_healthy(u), timeout)
                report[spec.name] = f"started, {url}/healthz answers"
    except BaseException:
        for spec in started:      # nothing half-started stays behind
            supervisor.stop(cfg, spec.name)
        raise
    return report


# --------------------------------------------------------------------------- the stack

INFRA = ("kafka", "ferretdb", "smtp")


def up(cfg: StackConfig, infra_only: bool = False, timeout: float = 120.0) -> dict[str, str]:
    """Start what is not running, wait until every part answers, write `<name>.env`."""
    for d in (cfg.pid_dir, cfg.log_dir, cfg.data_dir, cfg.mail_dir, cfg.config_dir):
        d.mkdir(parents=True, exist_ok=True)
    report: dict[str, str] = {}
    # download/build first (slow only once), then start all three so they boot in parallel
    provision(cfg)
    started = {"kafka": start_kafka(cfg), "ferretdb": start_ferretdb(cfg), "smtp": start_smtp(cfg)}
    checks = {
        "kafka": lambda: kafka_healthy(cfg.kafka_bootstrap),
        "ferretdb": lambda: mongo_healthy(cfg.mongo_uri),
        "smtp": lambda: smtp_healthy(cfg.host, cfg.smtp_port),
    }
    try:
        for name in INFRA:
            supervisor.wait_healthy(cfg, name, checks[name], timeout)
            report[name] = "started" if started[name] else "already running"
        create_topics(cfg)
        if not infra_only:
            report.update(start_services(cfg))
    except Exception:
        # leave nothing half-started that we started in this call
        for name, fresh in started.items():
            if fresh:
                supervisor.stop(cfg, name)
        raise
    write_env_file(cfg)
    return report


def write_env_file(cfg: StackConfig) -> Path:
    cfg.env_file.parent.mkdir(parents=True, exist_ok=True)
    tmp = cfg.env_file.with_suffix(".tmp")
    tmp.write_text(env_text(cfg))
    tmp.replace(cfg.env_file)
    return cfg.env_file


def env_text(cfg: StackConfig) -> str:
    import shlex
    return "".join(f"export {k}={shlex.quote(v)}\n" for k, v in cfg.env().items())


def down(cfg: StackConfig, wipe: bool = False) -> dict[str, str]:
    """Stop the services, then the infra; with `wipe`, delete data, logs and mail as well."""
    report = {}
    for name in [s.name for s in reversed(service_specs(cfg))] + list(reversed(INFRA)):
        if supervisor.stop(cfg, name):
            report[name] = "stopped"
    if cfg.env_file.exists():
        cfg.env_file.unlink()
    if wipe and cfg.state_dir.exists():
        shutil.rmtree(cfg.state_dir)
        report["state"] = f"deleted {cfg.state_dir}"
    return report


def status(cfg: StackConfig) -> list[dict]:
    """One row per component: running or not, pid, address, health."""
    rows = []
    checks = {
        "kafka": (cfg.kafka_bootstrap, lambda: kafka_healthy(cfg.kafka_bootstrap, 2.0)),
        "ferretdb": (cfg.mongo_uri, lambda: mongo_healthy(cfg.mongo_uri, 1.0)),
        "smtp": (f"{cfg.host}:{cfg.smtp_port}", lambda: smtp_healthy(cfg.host, cfg.smtp_port, 1.0)),
    }
    for spec in service_specs(cfg):
        url = cfg.url(getattr(cfg, spec.port_attr))
        if spec.worker:
            checks[spec.name] = (url + "/metrics", lambda u=url: http_healthy(u, 1.0, path="/metrics"))
        else:
            checks[spec.name] = (url, lambda u=url: http_healthy(u, 1.0))
    for name, (addr, check) in checks.items():
        pid = supervisor.read_pid(cfg, name)
        health = "-"
        if pid:
            try:
                health = "alive" if check is None else "healthy" if check() else "unhealthy"
            except Exception as exc:   # noqa: BLE001
                health = f"unhealthy ({type(exc).__name__})"
        rows.append({"name": name, "state": "running" if pid else "stopped", "pid": pid or "",
                     "address": addr, "health": health})
    return rows



def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m shared.dev.localstack")
    sub = parser.add_subparsers(dest="cmd", required=True)
    sub.add_parser("provision", help="download the Kafka jars and build FerretDB, start nothing")
    parser.parse_args(argv)
    try:
        provision(StackConfig.from_env())
    except StackError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
