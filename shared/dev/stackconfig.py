"""The definition of a local stack (DESIGN.md §11): which Kafka and FerretDB it runs, where its
state lives and which ports it uses.

One stack = one state directory `<MOTCUA_LOCAL_DIR>/<name>/` holding `pids/`, `logs/`, `data/`,
`mail/` and `config/`; several stacks run side by side on different ports (the test session
starts its own). The binaries are shared by every stack, in the cache directory.
"""
from __future__ import annotations

import os
import sys
from dataclasses import dataclass, field
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
KAFKA_VERSION = "4.3.1"
FERRETDB_VERSION = "v1.24.2"
FERRETDB_MODULE = "github.com/FerretDB/FerretDB"
# the local build carries source patches (shared/dev/provision.py FERRETDB_PATCHES,
# docs/ferretdb.md); the tag names the build so a cached binary of other patches is never reused
FERRETDB_BUILD = f"{FERRETDB_VERSION}-idfilter"

# env var -> (attribute, default); documented in shared.platform.config.ENV_VARS and docs/operations.md
PORT_VARS = {
    "MOTCUA_KAFKA_PORT": ("kafka_port", 19092),
    "MOTCUA_KAFKA_CONTROLLER_PORT": ("kafka_controller_port", 0),   # 0: kafka port + 1
    "MOTCUA_FERRETDB_PORT": ("mongo_port", 27027),
    "MOTCUA_FERRETDB_DEBUG_PORT": ("mongo_debug_port", 0),          # 0: ferretdb port + 1
    "MOTCUA_SMTP_PORT": ("smtp_port", 1025),
    "MOTCUA_INTAKE_PORT": ("intake_port", 8001),
    "MOTCUA_SLA_PORT": ("sla_port", 8002),
    "MOTCUA_NOTIFY_PORT": ("notify_port", 8003),
    "MOTCUA_DASHBOARD_PORT": ("dashboard_port", 8004),
    "MOTCUA_SLA_METRICS_PORT": ("sla_metrics_port", 9101),
    "MOTCUA_NOTIFY_METRICS_PORT": ("notify_metrics_port", 9102),
}


class StackError(Exception):
    """A stack operation failed; the message says what and where to look."""


def progress(msg: str) -> None:
    """A line on stderr about what a slow step is doing."""
    print(f"[local] {msg}", file=sys.stderr, flush=True)


def tail(path: Path, lines: int = 15) -> str:
    """The last lines of a log, for an error message."""
    try:
        text = path.read_text(encoding="utf-8", errors="replace").splitlines()
    except OSError:
        return "(no log)"
    return "\n".join(text[-lines:])


@dataclass
class StackConfig:
    """Where a stack lives and which ports it uses."""
    name: str = "dev"
    local_dir: Path = REPO_ROOT / ".local"
    cache_dir: Path = REPO_ROOT / "deploy" / "local" / ".cache"
    kafka_port: int = 19092
    kafka_controller_port: int = 0
    mongo_port: int = 27027
    mongo_debug_port: int = 0
    smtp_port: int = 1025
    intake_port: int = 8001
    sla_port: int = 8002
    notify_port: int = 8003
    dashboard_port: int = 8004
    sla_metrics_port: int = 9101       # the workers' Prometheus endpoints (`--metrics-port`)
    notify_metrics_port: int = 9102
    host: str = "127.0.0.1"
    extra_env: dict = field(default_factory=dict)

    def __post_init__(self):
        self.local_dir = Path(self.local_dir)
        self.cache_dir = Path(self.cache_dir)
        if not self.kafka_controller_port:
            self.kafka_controller_port = self.kafka_port + 1
        if not self.mongo_debug_port:
            self.mongo_debug_port = self.mongo_port + 1
        if not self.name or not all(c.isalnum() or c in "-_." for c in self.name):
            raise StackError(f"invalid stack name {self.name!r}: use letters, digits, '-', '_' or '.'")

    @classmethod
    def from_env(cls, environ=None, **overrides) -> "StackConfig":
        """Ports and directories from MOTCUA_* variables (see PORT_VARS), then overrides."""
        env = os.environ if environ is None else environ
        values: dict = {}
        for var, (attr, _default) in PORT_VARS.items():
            raw = env.get(var)
            if raw:
                try:
                    port = int(raw)
                except ValueError:
                    raise StackError(f"{var}={raw!r} is not a port number") from None
                if not 0 < port < 65536:
                    raise StackError(f"{var}={raw!r} is outside 1..65535")
                values[attr] = port
        if env.get("MOTCUA_LOCAL_NAME"):
            values["name"] = env["MOTCUA_LOCAL_NAME"]
        if env.get("MOTCUA_LOCAL_DIR"):
            values["local_dir"] = Path(env["MOTCUA_LOCAL_DIR"])
        if env.get("MOTCUA_CACHE_DIR"):
            values["cache_dir"] = Path(env["MOTCUA_CACHE_DIR"])
        values.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**values)

    # directories
    @property
    def state_dir(self) -> Path:
        return self.local_dir / self.name

    @property
    def pid_dir(self) -> Path:
        return self.state_dir / "pids"

    @property
    def log_dir(self) -> Path:
        return self.state_dir / "logs"

    @property
    def data_dir(self) -> Path:
        return self.state_dir / "data"

    @property
    def mail_dir(self) -> Path:
        return self.state_dir / "mail"

    @property
    def config_dir(self) -> Path:
        return self.state_dir / "config"

    @property
    def env_file(self) -> Path:
        return self.local_dir / f"{self.name}.env"

    @property
    def kafka_libs(self) -> Path:
        return self.cache_dir / f"kafka-{KAFKA_VERSION}" / "libs"

    @property
    def ferretdb_bin(self) -> Path:
        return self.cache_dir / "bin" / f"ferretdb-{FERRETDB_BUILD}"

    # addresses
    @property
    def kafka_bootstrap(self) -> str:
        return f"{self.host}:{self.kafka_port}"

    @property
    def mongo_uri(self) -> str:
        return f"mongodb://{self.host}:{self.mongo_port}/"

    def url(self, port: int) -> str:
        return f"http://{self.host}:{port}"

    def env(self) -> dict[str, str]:
        """The variables a client (or a service) of this stack needs."""
        return {
            "KAFKA_BOOTSTRAP_SERVERS": self.kafka_bootstrap,
            "MONGO_URI": self.mongo_uri,
            "SMTP_HOST": self.host,
            "SMTP_PORT": str(self.smtp_port),
            "INTAKE_URL": self.url(self.intake_port),
            "SLA_URL": self.url(self.sla_port),
            "NOTIFY_URL": self.url(self.notify_port),
            "DASHBOARD_URL": self.url(self.dashboard_port),
            "MAIL_DIR": str(self.mail_dir),
        }
