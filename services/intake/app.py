"""The intake service's app factory.

    gunicorn -c services/intake/gunicorn.conf.py 'services.intake.app:create_app()'

`create_app(config=None, *, publisher=None, clock=None, db=None)` connects to nothing: the MongoDB
client, the Kafka producer, the catalog and the directory are built on first use, in each gunicorn
worker after the fork. Tests pass an `InMemoryBus` as publisher, a `VirtualClock` and a database.

Configuration: the environment variables of `shared.config.ENV_VARS` (KAFKA_BOOTSTRAP_SERVERS,
MONGO_URI, MONGO_DB, TOPIC_EVENTS, CATALOG_FILE, DIRECTORY_FILE, INTAKE_*, MONGO_TIMEOUT_MS), each
overridable by the same key in `config`. `config` may also carry ready objects: `CATALOG`,
`DIRECTORY` (shared.catalog.Catalog / shared.directory.Directory), `RULESETS`
(shared.engine.RuleSets, for the receipt's due date) and `AUTH_LIMITER=False` to disable rate
limiting.
"""
from __future__ import annotations

import atexit
import logging
import threading

from flask import Flask

from shared.auth import KeyStore, RateLimiter, init_auth
from shared.clock import clock_from_env
from shared.config import env
from shared.httpapi import configure_json_logging, init_http, mongo_timeouts

from .service import Intake
from .store import IntakeStore

log = logging.getLogger("motcua.intake")

_KEYS = ("KAFKA_BOOTSTRAP_SERVERS", "MONGO_URI", "MONGO_DB", "TOPIC_EVENTS", "CATALOG_FILE",
         "DIRECTORY_FILE", "INTAKE_MAX_BATCH", "INTAKE_MAX_BODY_BYTES", "INTAKE_PUBLISH_TIMEOUT_S",
         "INTAKE_RATE_LIMIT", "INTAKE_RATE_WINDOW_S", "INTAKE_RATE_SYNC_S", "INTAKE_KEY_CACHE_S",
         "MONGO_TIMEOUT_MS")
_INTS = {"INTAKE_MAX_BATCH", "INTAKE_MAX_BODY_BYTES", "INTAKE_RATE_LIMIT", "INTAKE_RATE_WINDOW_S",
         "MONGO_TIMEOUT_MS"}
_FLOATS = {"INTAKE_PUBLISH_TIMEOUT_S", "INTAKE_KEY_CACHE_S", "INTAKE_RATE_SYNC_S"}


def load_config(overrides: dict | None = None) -> dict:
    """Environment + overrides, typed; ValueError naming the variable on a bad value."""
    cfg = {}
    overrides = dict(overrides or {})
    for k in _KEYS:
        raw = overrides.pop(k) if k in overrides else env(k)
        try:
            cfg[k] = int(raw) if k in _INTS else float(raw) if k in _FLOATS else str(raw)
        except (TypeError, ValueError):
            raise ValueError(f"{k}={raw!r} is not a valid number") from None
        if k in _INTS | _FLOATS and cfg[k] < 0:
            raise ValueError(f"{k} must not be negative")
    cfg.update(overrides)
    return cfg


class Resources:
    """Connections built lazily (after fork) and closed on shutdown. Thread-safe."""

    def __init__(self, cfg: dict, *, publisher=None, db=None):
        self.cfg = cfg
        self._publisher = publisher
        self._owns_publisher = publisher is None
        self._db = db
        self._client = None
        self._catalog = cfg.get("CATALOG")
        self._directory = cfg.get("DIRECTORY")
        self._engine_ctx = None
        self._lock = threading.Lock()

    def db(self):
        if self._db is None:
            with self._lock:
                if self._db is None:
                    from pymongo import MongoClient
                    self._client = MongoClient(self.cfg["MONGO_URI"], appname="motcua-intake",
                                               tz_aware=True,
                                               **mongo_timeouts(self.cfg["MONGO_TIMEOUT_MS"]))
                    self._db = self._client[self.cfg["MONGO_DB"]]
        return self._db

    def publisher(self):
        if self._publisher is None:
            with self._lock:
                if self._publisher is None:
                    from shared.messaging import KafkaPublisher
                    ms = int(self.cfg["INTAKE_PUBLISH_TIMEOUT_S"] * 1000)
                    self._publisher = KafkaPublisher(
                        self.cfg["KAFKA_BOOTSTRAP_SERVERS"], client_id="motcua-intake",
                        max_block_ms=ms, request_timeout_ms=ms, delivery_timeout_ms=ms + 1000,
                        bootstrap_timeout_ms=ms,
                        retry_backoff_ms=100, reconnect_backoff_max_ms=1000,
                        # kafka-python computes each record batch's CRC32C in pure Python: on
                        # gzip-compressed batches (zlib, in C) it has ≈ 5× fewer bytes to cover —
                        # a quarter less CPU per batch event; consumers decompress transparently
                        compression_type="gzip",
                        metrics_enabled=False)     # kafka-python's own sensors: CPU per send, never read
        return self._publisher

    def discard_publisher(self, failed) -> None:
        """Drop a producer that failed to publish: the next request builds a fresh one.
        A kafka-python producer can stay stuck after the broker was killed and restarted (every
        send times out in its accumulator; seen in test_intake_broker_outage.py), so a failed
        one is not trusted again. Injected publishers (tests) are kept."""
        if not self._owns_publisher:
            return
        with self._lock:
            if self._publisher is not failed:      # another thread replaced it already
                return
            self._publisher = None
        threading.Thread(target=_close_quietly, args=(failed,), daemon=True,
                         name="intake-discard-producer").start()

    def catalog(self):
        """The catalog imported into MongoDB (`motcua catalog import`), else CATALOG_FILE; read
        once per worker. A MongoDB error propagates (a 503 for the request) and is retried."""
        if self._catalog is None:
            from shared.catalog import CatalogStore
            self._catalog = CatalogStore.current_or_file(self.cfg["CATALOG_FILE"], self.db())
        return self._catalog

    def engine_ctx(self):
        """The legal engine's context over the same catalog and directory (and the shipped rule
        sets, or `RULESETS` of the config): what the sla service judges with."""
        if self._engine_ctx is None:
            from shared.engine import EngineContext, default_rulesets
            from shared.workcal import calendar_for
            self._engine_ctx = EngineContext(catalog=self.catalog(), calendars=calendar_for,
                                             rulesets=self.cfg.get("RULESETS") or default_rulesets(),
                                             directory=self.directory())
        return self._engine_ctx

    def directory(self):
        """The directory imported into MongoDB (`motcua directory import`), else DIRECTORY_FILE."""
        if self._directory is None:
            from shared.directory import DirectoryStore
            self._directory = DirectoryStore.current_or_file(self.cfg["DIRECTORY_FILE"], self.db())
        return self._directory

    def close(self) -> None:
        """Flush and close the producer (pending sends are delivered), close MongoDB."""
        with self._lock:
            if self._publisher is not None and self._owns_publisher:
                try:
                    self._publisher.close(timeout=self.cfg["INTAKE_PUBLISH_TIMEOUT_S"])
                except Exception:  # noqa: BLE001
                    log.exception("closing the Kafka producer failed")
                self._publisher = None
            if self._client is not None:
                self._client.close()
                self._client, self._db = None, None


def create_app(config: dict | None = None, *, publisher=None, clock=None, db=None) -> Flask:
    """Build the intake Flask app; see the module docstring."""
    from . import api, openapi

    cfg = load_config(config)
    app = Flask("services.intake")
    app.config["MAX_CONTENT_LENGTH"] = cfg["INTAKE_MAX_BODY_BYTES"]
    app.config["INTAKE"] = cfg
    if not cfg.get("TESTING"):
        configure_json_logging()
        logging.getLogger("kafka").setLevel(logging.WARNING)   # its INFO is per connection
    clock = clock or clock_from_env()
    res = Resources(cfg, publisher=publisher, db=db)

    state: dict = {}

    def store():
        if "store" not in state:
            s = IntakeStore(res.db())
            s.ensure_indexes()
            state["store"] = s
        return state["store"]

    def keystore():
        if "keys" not in state:
            state["keys"] = KeyStore(res.db(), clock, cache_seconds=cfg["INTAKE_KEY_CACHE_S"])
        return state["keys"]

    def limiter():
        if "limiter" not in state:
            state["limiter"] = RateLimiter(res.db(), cfg["INTAKE_RATE_LIMIT"],
                                           cfg["INTAKE_RATE_WINDOW_S"], clock,
                                           sync_seconds=cfg["INTAKE_RATE_SYNC_S"])
        return state["limiter"]

    def readiness() -> dict:
        checks = {}
        try:
            res.db().command("ping")
            checks["mongodb"] = None
        except Exception as exc:  # noqa: BLE001
            checks["mongodb"] = f"unreachable: {type(exc).__name__}"
        if publisher is not None:          # injected (tests): ask it if it can tell
            ready = getattr(publisher, "ready", None)
            checks["kafka"] = None if ready is None or ready() else "publisher not ready"
        else:
            checks["kafka"] = _kafka_reachable(cfg["KAFKA_BOOTSTRAP_SERVERS"])
        return checks

    m = init_http(app, "intake", readiness=readiness)

    class _M:
        rejected = m.counter("intake_events_rejected_total", "events rejected, by reason", ["reason"])
        accepted = m.counter("intake_events_accepted_total", "events published (new or replayed)",
                             ["replay"])
        publish = m.histogram("intake_publish_seconds", "time to publish and get acks, per request")

    intake = Intake(store=store, publisher=res.publisher, clock=clock, topic=cfg["TOPIC_EVENTS"],
                    catalog=res.catalog, directory=res.directory,
                    publish_timeout=cfg["INTAKE_PUBLISH_TIMEOUT_S"], metrics=_M,
                    on_publish_failure=res.discard_publisher, engine_ctx=res.engine_ctx)
    limiter_factory = None if cfg.get("AUTH_LIMITER") is False else limiter
    init_auth(app, keystore, limiter_factory)
    app.extensions["intake"] = {"service": intake, "resources": res, "store": store,
                                "metrics": _M, "config": cfg}
    app.register_blueprint(api.bp)
    app.register_blueprint(openapi.bp)
    atexit.register(res.close)
    return app


def _close_quietly(publisher) -> None:
    try:
        publisher.close(timeout=0)      # pending sends fail: their requests got (or get) a 503
    except Exception:  # noqa: BLE001
        log.warning("closing a failed Kafka producer raised", exc_info=True)


def _kafka_reachable(bootstrap: str, timeout: float = 1.0) -> str | None:
    """None when a TCP connection to one of the bootstrap servers succeeds, else why not.
    (The producer itself reconnects lazily; publishing has its own bounded timeout.)"""
    import socket
    for server in bootstrap.split(","):
        host, _, port = server.strip().rpartition(":")
        try:
            with socket.create_connection((host.strip("[]") or "127.0.0.1", int(port)), timeout=timeout):
                return None
        except (OSError, ValueError):
            continue
    return "no bootstrap server reachable"
