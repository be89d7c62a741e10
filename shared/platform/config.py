"""Configuration from environment variables. Every variable the code reads is named here,
with its default for a local run; docker-compose.yml and docs/operations.md use the same names."""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from shared.domain import PACKAGE_DATA

# name -> (default, what it is)
ENV_VARS: dict[str, tuple[str, str]] = {
    "KAFKA_BOOTSTRAP_SERVERS": ("127.0.0.1:19092", "Kafka bootstrap servers, comma-separated"),
    "MONGO_URI": ("mongodb://127.0.0.1:27027/", "MongoDB (or FerretDB) connection URI"),
    "MONGO_DB": ("motcua", "database name"),
    "TOPIC_EVENTS": ("dossier.events", "topic of dossier events (key = dossier code)"),
    "TOPIC_FINDINGS": ("sla.findings", "topic of findings published by sla"),
    "TOPIC_PARTITIONS": ("6", "partitions of the events and findings topics, for every path that creates "
                              "them (workers, local stack, the broker's auto-create); dead-letter topics have 1"),
    "CATALOG_FILE": (str(PACKAGE_DATA / "catalog.yaml"), "procedure catalog (YAML/JSON)"),
    "DIRECTORY_FILE": (str(PACKAGE_DATA / "directory.yaml"), "agency directory (YAML/JSON)"),
    "SMTP_HOST": ("127.0.0.1", "SMTP server for alert e-mails"),
    "SMTP_PORT": ("1025", "SMTP port"),
    "SMTP_FROM": ("motcua@localhost", "sender address of alert e-mails"),
    "SMTP_USER": ("", "SMTP login user (empty: no AUTH)"),
    "SMTP_PASSWORD": ("", "SMTP login password"),
    "SMTP_STARTTLS": ("0", "1: upgrade the SMTP connection with STARTTLS"),
    "NOTIFY_URL": ("http://127.0.0.1:8003", "public base URL of the notify API (acknowledgement links)"),
    "NOTIFY_SECRET": ("", "HMAC secret signing acknowledgement links (required by notify)"),
    "NOTIFY_POLICY_FILE": ("", "notify routing policy (YAML/JSON); empty: shared/data/routing.yaml"),
    "DASHBOARD_URL": ("http://127.0.0.1:8004", "public base URL of the dashboard (dossier links in alerts)"),
    "DASHBOARD_SECRET": ("", "dashboard: key signing session cookies (random per process when empty)"),
    "DASHBOARD_COOKIE_SECURE": ("0", "dashboard: 1 marks the session cookie Secure (set it behind HTTPS)"),
    "DASHBOARD_FEED": ("1", "dashboard: 1 keeps its in-memory view current from Kafka; 0 reloads it by polling"),
    "DASHBOARD_REFRESH_S": ("30", "dashboard without the feed: seconds between reloads of its view"),
    "INTAKE_MAX_BATCH": ("500", "intake: most events in one POST /v1/events:batch"),
    "INTAKE_MAX_BODY_BYTES": ("4194304", "intake: largest request body accepted (413 above)"),
    "INTAKE_PUBLISH_TIMEOUT_S": ("5", "intake: bound on waiting for Kafka (metadata, then ack) before 503"),
    "INTAKE_RATE_LIMIT": ("1200", "intake: requests per key per window (429 above); a batch counts once"),
    "INTAKE_RATE_WINDOW_S": ("60", "intake: rate-limit window in seconds"),
    "INTAKE_RATE_SYNC_S": ("1", "intake: seconds between syncs of a worker's rate-limit counts to MongoDB (0: every request)"),
    "INTAKE_KEY_CACHE_S": ("5", "API keys: seconds a verified key is cached per process (revocation delay)"),
    "METRICS_BIND": ("127.0.0.1", "workers: address their /metrics (--metrics-port) listens on; 0.0.0.0 in a container"),
    "MONGO_TIMEOUT_MS": ("3000", "MongoDB server-selection/socket timeout before a 503"),
    "MONGO_WORKER_SOCKET_TIMEOUT_MS": ("120000", "workers, rebuild, CLI: longest wait for one MongoDB reply before the operation fails and is retried"),
    "MOTCUA_CLOCK_FILE": ("", "tests and rehearsals (docs/rehearsal.md): a file holding the current instant"),
    # clients of the running stack (`motcua local env`, `motcua demo`, e2e tests)
    "INTAKE_URL": ("http://127.0.0.1:8001", "base URL of the intake API"),
    "SLA_URL": ("http://127.0.0.1:8002", "base URL of the sla read API"),
    "MAIL_DIR": ("", "local stack: folder where the SMTP catcher stores each alert as an .eml file"),
    # the local stack of deploy/local (shared/dev/stackconfig.py)
    "MOTCUA_LOCAL_NAME": ("dev", "local stack: name; state goes to <MOTCUA_LOCAL_DIR>/<name>/"),
    "MOTCUA_LOCAL_DIR": (".local", "local stack: state root (pids, logs, data, mail), relative to the repo"),
    "MOTCUA_CACHE_DIR": ("deploy/local/.cache", "local stack: Kafka jars and FerretDB binary cache"),
    "MOTCUA_KAFKA_PORT": ("19092", "local stack: Kafka PLAINTEXT port"),
    "MOTCUA_KAFKA_CONTROLLER_PORT": ("19093", "local stack: Kafka KRaft controller port (default: Kafka port + 1)"),
    "MOTCUA_FERRETDB_PORT": ("27027", "local stack: FerretDB (MongoDB wire) port"),
    "MOTCUA_FERRETDB_DEBUG_PORT": ("27028", "local stack: FerretDB debug/metrics port (default: FerretDB port + 1)"),
    "MOTCUA_SMTP_PORT": ("1025", "local stack: SMTP catcher port"),
    "MOTCUA_INTAKE_PORT": ("8001", "local stack: intake API port"),
    "MOTCUA_SLA_PORT": ("8002", "local stack: sla API port"),
    "MOTCUA_NOTIFY_PORT": ("8003", "local stack: notify API port"),
    "MOTCUA_DASHBOARD_PORT": ("8004", "local stack: dashboard port"),
    "MOTCUA_SLA_METRICS_PORT": ("9101", "local stack: sla worker Prometheus /metrics port"),
    "MOTCUA_NOTIFY_METRICS_PORT": ("9102", "local stack: notify worker Prometheus /metrics port"),
    "MOTCUA_PERF": ("", "tests: 1 runs the benchmarks of tests/perf without `-m perf`"),
}


def env(name: str, environ: dict | None = None) -> str:
    """The value of a documented variable, or its default."""
    if name not in ENV_VARS:
        raise KeyError(f"undocumented environment variable {name}: add it to shared.platform.config.ENV_VARS")
    source = os.environ if environ is None else environ
    value = source.get(name)
    return value if value not in (None, "") else ENV_VARS[name][0]


def _int_env(name: str, environ: dict | None = None) -> int:
    return _number_env(name, environ, int, "a whole number")


def _float_env(name: str, environ: dict | None = None) -> float:
    return _number_env(name, environ, float, "a number")


def _number_env(name: str, environ, kind, what: str):
    raw = env(name, environ)
    try:
        value = kind(raw)
    except (TypeError, ValueError):
        raise ValueError(f"{name}={raw!r} is not {what}") from None
    if value < 0:
        raise ValueError(f"{name} must not be negative")
    return value


def _default(name: str, kind=str):
    """The typed default of a documented variable (one place for each default: ENV_VARS)."""
    return kind(ENV_VARS[name][0])


@dataclass(frozen=True)
class Settings:
    """The settings every service shares."""
    kafka_bootstrap_servers: str
    mongo_uri: str
    mongo_db: str
    topic_events: str
    topic_findings: str
    catalog_file: str
    directory_file: str
    extra: dict = field(default_factory=dict)
    mongo_timeout_ms: int = _default("MONGO_TIMEOUT_MS", int)   # the APIs answer 503 after it
    mongo_worker_socket_timeout_ms: int = _default("MONGO_WORKER_SOCKET_TIMEOUT_MS", int)
    # TOPIC_PARTITIONS: sla stores each dossier's partition and holds partitions in memory, so
    # every path that creates the topics must create the same number
    topic_partitions: int = 6
    # intake (INTAKE_*: see ENV_VARS)
    intake_max_batch: int = _default("INTAKE_MAX_BATCH", int)
    intake_max_body_bytes: int = _default("INTAKE_MAX_BODY_BYTES", int)
    intake_publish_timeout_s: float = _default("INTAKE_PUBLISH_TIMEOUT_S", float)
    intake_rate_limit: int = _default("INTAKE_RATE_LIMIT", int)
    intake_rate_window_s: int = _default("INTAKE_RATE_WINDOW_S", int)
    intake_rate_sync_s: float = _default("INTAKE_RATE_SYNC_S", float)
    intake_key_cache_s: float = _default("INTAKE_KEY_CACHE_S", float)

    @property
    def topic_events_dlq(self) -> str:
        return self.topic_events + ".dlq"

    @property
    def topic_findings_dlq(self) -> str:
        return self.topic_findings + ".dlq"

    @property
    def topic_findings_notify(self) -> str:
        """notify's changes of the findings it follows, read by the dashboard
        (services/notify/changes.py)."""
        return self.topic_findings + ".notify"

    def topics(self) -> dict[str, int]:
        """Every topic of the system with its partition count: what `ensure_topics` creates."""
        return {self.topic_events: self.topic_partitions, self.topic_findings: self.topic_partitions,
                self.topic_findings_notify: self.topic_partitions,
                self.topic_events_dlq: 1, self.topic_findings_dlq: 1}

    @classmethod
    def from_config(cls, config: dict | None = None, environ: dict | None = None) -> "Settings":
        """The settings of the environment with the documented variables that `config` names
        (`create_app(config)`: same names, values of any type) taking precedence; other keys of
        `config` (ready objects, TESTING…) are the app's own."""
        source = os.environ if environ is None else environ
        return cls.from_env({**source, **{k: v for k, v in (config or {}).items() if k in ENV_VARS}})

    @classmethod
    def from_env(cls, environ: dict | None = None, **overrides) -> "Settings":
        """The settings of `environ` (default: os.environ), each variable typed and checked
        (ValueError naming it), then `overrides` (field names)."""
        values = dict(
            kafka_bootstrap_servers=env("KAFKA_BOOTSTRAP_SERVERS", environ),
            mongo_uri=env("MONGO_URI", environ),
            mongo_db=env("MONGO_DB", environ),
            topic_events=env("TOPIC_EVENTS", environ),
            topic_findings=env("TOPIC_FINDINGS", environ),
            catalog_file=env("CATALOG_FILE", environ),
            directory_file=env("DIRECTORY_FILE", environ),
            mongo_timeout_ms=_int_env("MONGO_TIMEOUT_MS", environ),
            mongo_worker_socket_timeout_ms=_int_env("MONGO_WORKER_SOCKET_TIMEOUT_MS", environ),
            topic_partitions=_int_env("TOPIC_PARTITIONS", environ),
            intake_max_batch=_int_env("INTAKE_MAX_BATCH", environ),
            intake_max_body_bytes=_int_env("INTAKE_MAX_BODY_BYTES", environ),
            intake_publish_timeout_s=_float_env("INTAKE_PUBLISH_TIMEOUT_S", environ),
            intake_rate_limit=_int_env("INTAKE_RATE_LIMIT", environ),
            intake_rate_window_s=_int_env("INTAKE_RATE_WINDOW_S", environ),
            intake_rate_sync_s=_float_env("INTAKE_RATE_SYNC_S", environ),
            intake_key_cache_s=_float_env("INTAKE_KEY_CACHE_S", environ),
        )
        values.update(overrides)
        if values["topic_partitions"] < 1:
            raise ValueError(f"TOPIC_PARTITIONS must be at least 1 (got {values['topic_partitions']})")
        return cls(**values)
