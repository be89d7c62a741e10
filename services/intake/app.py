"""The intake service's app factory.

    gunicorn -c services/intake/gunicorn.conf.py 'services.intake.app:create_app()'

`create_app(config=None, *, publisher=None, clock=None, db=None)` connects to nothing: the MongoDB
client, the Kafka producer, the catalog and the directory (`bootstrap.Resources`) are built on
first use, in each gunicorn worker after the fork. Tests pass an `InMemoryBus` as publisher, a
`VirtualClock` and a database.

Configuration: `shared.platform.config.Settings` from the environment variables of `ENV_VARS`
(KAFKA_BOOTSTRAP_SERVERS, MONGO_URI, MONGO_DB, TOPIC_EVENTS, CATALOG_FILE, DIRECTORY_FILE, INTAKE_*,
MONGO_TIMEOUT_MS), each overridable by the same key in `config`
(`Settings.from_config`). `config` may also carry ready objects: `CATALOG`,
`DIRECTORY` (shared.domain.catalog.Catalog / shared.domain.directory.Directory), `RULESETS`
(shared.domain.engine.RuleSets, for the receipt's due date) and `AUTH_LIMITER=False` to
disable rate limiting.
"""
from __future__ import annotations

import atexit
import logging

from flask import Flask

from shared.platform.auth import KeyStore, RateLimiter, init_auth
from shared.platform.clock import clock_from_env
from shared.platform.config import Settings
from shared.platform.httpapi import init_http
from shared.platform.mongo import ping_error

from .bootstrap import Resources
from .service import Intake
from .store import IntakeStore

log = logging.getLogger("motcua.intake")


def create_app(config: dict | None = None, *, publisher=None, clock=None, db=None) -> Flask:
    """Build the intake Flask app; see the module docstring."""
    from . import api, openapi

    config = dict(config or {})
    settings = Settings.from_config(config)
    app = Flask("services.intake")
    app.config["MAX_CONTENT_LENGTH"] = settings.intake_max_body_bytes
    app.config["INTAKE"] = settings
    clock = clock or clock_from_env()
    res = Resources(settings, publisher=publisher, db=db, catalog=config.get("CATALOG"),
                    directory=config.get("DIRECTORY"), rulesets=config.get("RULESETS"))

    state: dict = {}

    def store():
        if "store" not in state:
            s = IntakeStore(res.db())
            s.ensure_indexes()
            state["store"] = s
        return state["store"]

    def keystore():
        if "keys" not in state:
            state["keys"] = KeyStore(res.db(), clock, cache_seconds=settings.intake_key_cache_s)
        return state["keys"]

    def limiter():
        if "limiter" not in state:
            state["limiter"] = RateLimiter(res.db(), settings.intake_rate_limit,
                                           settings.intake_rate_window_s, clock,
                                           sync_seconds=settings.intake_rate_sync_s)
        return state["limiter"]

    def readiness() -> dict:
        error = ping_error(res.db)
        checks = {"mongodb": None if error is None else f"unreachable: {error}"}
        if publisher is not None:          # injected: it is built already, ask it
            checks["kafka"] = None if publisher.ready() else "publisher not ready"
        else:                              # built on first publish: the broker answers TCP
            checks["kafka"] = _kafka_reachable(settings.kafka_bootstrap_servers)
        return checks

    m = init_http(app, "intake", readiness=readiness, json_logs=not config.get("TESTING"))

    class _M:
        rejected = m.counter("intake_events_rejected_total", "events rejected, by reason", ["reason"])
        accepted = m.counter("intake_events_accepted_total", "events published (new or replayed)",
                             ["replay"])
        publish = m.histogram("intake_publish_seconds", "time to publish and get acks, per request")

    intake = Intake(store=store, publisher=res.publisher, clock=clock, topic=settings.topic_events,
                    catalog=res.catalog, directory=res.directory,
                    publish_timeout=settings.intake_publish_timeout_s, metrics=_M,
                    on_publish_failure=res.discard_publisher, engine_ctx=res.engine_ctx)
    limiter_factory = None if config.get("AUTH_LIMITER") is False else limiter
    init_auth(app, keystore, limiter_factory)
    app.extensions["intake"] = {"service": intake, "resources": res, "store": store,
                                "metrics": _M, "settings": settings}
    app.register_blueprint(api.bp)
    app.register_blueprint(openapi.bp)
    atexit.register(res.close)
    return app


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
