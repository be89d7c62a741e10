"""Read API of the sla service: dossier states, findings, deadline explanations, reports.

`gunicorn 'services.sla.api:create_app()'`. Same API keys and tenancy as intake
(`shared.platform.auth`): a key reads only dossiers and findings of its agency subtree. Nothing connects
at import or in the factory: the Mongo client is built on first use in each (forked) worker.

Test configuration keys (`create_app(config)`): SETTINGS (a `Settings`), DIRECTORY
(a `shared.domain.directory.Directory`), CATALOG (a `shared.domain.catalog.Catalog`), ENGINE_CTX (the legal
engine's context), KEY_STORE (a `shared.platform.auth.KeyStore`), RATE_LIMIT (requests per minute per key).
"""
from __future__ import annotations

import logging
import threading
import time
from datetime import datetime, timezone

from shared.platform.auth import KeyStore, RateLimiter, authenticate, init_auth
from shared.platform.config import Settings
from shared.domain.engine.ruledata import RULE_CODES
from shared.contracts.events import DOSSIER_CODE, redact
from shared.contracts.findings import SEVERITIES, STATES
from shared.platform.httpapi import ApiError, init_http
from shared.platform.mongo import ping_error
from shared.platform.runtime import Lazy
from shared.contracts.alerting import alerting_for

from .bootstrap import bootstrap
from .repository import MongoRepository, finding_message, live_names, strip_dossier

MAX_PAGE = 500
LAG_REFRESH_S = 15.0      # a scrape starts a background read of the group lag at most this often
LAG_MAX_AGE_S = 120.0     # an older read is not reported (no sample rather than a stale one)
LAG_TIMEOUT_MS = 3000     # bound on each Kafka step of one read

log = logging.getLogger("motcua.sla.api")


def create_app(config: dict | None = None, *, db=None, clock=None):
    """Build the sla read API (Flask)."""
    from flask import Flask

    app = Flask("motcua.sla")
    app.config.update(config or {})
    sla = bootstrap(app.config.get("SETTINGS"), clock=clock, db=db, ctx=app.config.get("ENGINE_CTX"),
                    directory=app.config.get("DIRECTORY"), catalog=app.config.get("CATALOG"),
                    appname="motcua-sla-api", for_requests=True)
    settings, clock = sla.settings, sla.clock
    get_db, get_directory, get_catalog, get_ctx = sla.db, sla.directory, sla.catalog, sla.ctx
    store = app.config.get("KEY_STORE") or Lazy(lambda: KeyStore(get_db(), clock, cache_seconds=5))
    limit = app.config.get("RATE_LIMIT")
    limiter = Lazy(lambda: RateLimiter(get_db(), int(limit), 60, clock)) if limit else None
    init_auth(app, store, limiter)

    def repo() -> MongoRepository:
        # the pointer document is re-read per request so that a rebuild switch-over is seen
        return MongoRepository(get_db(), live_names(get_db()))

    m = init_http(app, "sla", readiness=lambda: {"mongo": ping_error(get_db)})
    from shared.platform.apidoc import blueprint
    from .openapi import build_spec
    app.register_blueprint(blueprint("sla_openapi", build_spec))
    group = app.config.get("CONSUMER_GROUP", "sla")
    m.registry.register(_StoreCollector(repo, GroupLag(lambda: consumer_lag(settings, group))))

    # -- helpers --------------------------------------------------------------------------------
    def principal():
        p = authenticate()
        p.require_role("agency", "supervisor", "admin")
        return p

    def scope_root(p, agency: str | None) -> str:
        """The agency whose subtree a list covers: `agency` when given (it must be known and
        inside the key's subtree), else the key's own agency."""
        directory = get_directory()
        if agency is None:
            return p.agency_code
        if agency not in directory:
            # the directory is public: saying the code is unknown leaks nothing, and a 403
            # would send even the root admin looking for a permission problem
            raise ApiError.one(422, "unknown_agency", f"unknown agency {_shown(agency)}", field="agency")
        if not p.can_access(agency, directory):
            raise ApiError.one(403, "forbidden_agency", "agency outside this key's subtree", field="agency")
        return agency

    def visible_dossier(code: str) -> dict:
        if not DOSSIER_CODE.match(code):
            raise ApiError.one(400, "invalid", "not a valid dossier code", field="code")
        p = principal()
        doc = repo().get_dossier(code)
        # a dossier outside the key's subtree is reported as absent (no existence oracle)
        if doc is None or not any(p.can_access(a, get_directory()) for a in doc.get("agencies", ())):
            raise ApiError.one(404, "not_found", f"no dossier {code} visible to this key", field="code")
        return doc

    # -- dossiers -------------------------------------------------------------------------------
    @app.get("/v1/dossiers/<path:code>/findings")
    def dossier_findings(code):
        doc = visible_dossier(code)
        found = repo().load_findings(doc.get("finding_ids", ()))     # by _id: no collection scan
        views = alerting_for(get_db(), found)
        rows = [public_finding(d, views) for d in sorted(found.values(),
                                                          key=lambda d: (str(d.get("detected_at") or ""), d["_id"]))]
        return {"dossier_code": code, "findings": rows}

    @app.get("/v1/dossiers/<path:code>/deadline")
    def dossier_deadline(code):
        from shared.domain import engine
        doc = visible_dossier(code)
        state = engine.DossierState.from_doc(strip_dossier(doc))
        try:
            explained = engine.explain_deadline(state, get_ctx())
        except ValueError as exc:   # not received yet, or procedure unknown: no legal due date
            raise ApiError.one(409, "no_deadline", str(exc), field="code") from None
        return {"dossier_code": code, "deadline": jsonable(explained)}

    @app.get("/v1/dossiers/<path:code>")
    def dossier(code):
        doc = visible_dossier(code)
        state = redact(strip_dossier(doc))
        state.pop("applicant_name", None)    # for the forms attached to alerts only (docs/law.md)
        return jsonable({"dossier_code": code, "state": state,
                         "timeline": state.get("timeline", state.get("events", [])),
                         "agencies": doc.get("agencies", []),
                         "next_check_at": doc.get("next_check_at"),
                         "updated_at": doc.get("updated_at")})

    # -- findings -------------------------------------------------------------------------------
    @app.get("/v1/findings")
    def findings():
        from flask import request
        p = principal()
        args = request.args
        allowed = {"agency", "rule", "severity", "field", "procedure", "state", "limit", "offset"}
        unknown = sorted(set(args) - allowed)
        if unknown:
            raise ApiError(400, [{"code": "unknown_field", "field": u,
                                  "message": f"unknown query parameter (allowed: {', '.join(sorted(allowed))})"}
                                 for u in unknown])
        directory = get_directory()
        root = scope_root(p, args.get("agency") or None)
        subtree = sorted(directory.subtree(root)) if root in directory else [root]
        q: dict = {"agency_code": {"$in": subtree}}
        states = args.get("state", "open,escalated").split(",")
        if any(s not in STATES for s in states):
            raise ApiError.one(400, "invalid", f"state must be among {', '.join(STATES)}", field="state")
        q["state"] = {"$in": states}
        if "severity" in args:
            if args["severity"] not in SEVERITIES:
                raise ApiError.one(400, "invalid", f"severity must be one of {', '.join(SEVERITIES)}",
                                   field="severity")
            q["severity"] = args["severity"]
        if "rule" in args:
            if args["rule"] not in RULE_CODES:
                raise ApiError.one(422, "unknown_rule", f"unknown rule {_shown(args['rule'])} "
                                   f"(known: {', '.join(RULE_CODES)})", field="rule")
            q["rule"] = args["rule"]
        procedures = None
        if "procedure" in args:
            if args["procedure"] not in get_catalog():
                raise ApiError.one(422, "unknown_procedure", f"unknown procedure {_shown(args['procedure'])} "
                                   "(not in the procedure catalog)", field="procedure")
            procedures = {args["procedure"]}
        if "field" in args:
            in_field = {pr.code for pr in get_catalog() if pr.field == args["field"]}
            if not in_field:
                raise ApiError.one(422, "unknown_procedure_field", f"unknown field {_shown(args['field'])} "
                                   "(no procedure of the catalog is in it)", field="field")
            procedures = in_field if procedures is None else procedures & in_field
        if procedures is not None:
            q["procedure_code"] = {"$in": sorted(procedures)}
        limit_, offset = _int_arg(args, "limit", 50, 1, MAX_PAGE), _int_arg(args, "offset", 0, 0, 10**9)
        coll = repo().findings
        total = coll.count_documents(q)
        rows = list(coll.find(q).sort([("detected_at", 1), ("_id", 1)]).skip(offset).limit(limit_))
        views = alerting_for(get_db(), [d["_id"] for d in rows])
        return jsonable({"total": total, "offset": offset, "limit": limit_,
                         "findings": [public_finding(d, views) for d in rows]})

    # -- reports --------------------------------------------------------------------------------
    @app.get("/v1/reports/on-time")
    def on_time():
        from flask import Response, request
        from . import reports
        p = principal()
        args = request.args
        params = reports.parse_params(args, now=clock.now())
        directory = get_directory()
        root = scope_root(p, params.agency or None)
        subtree = directory.subtree(root) if root in directory else {root}
        report = reports.on_time_report(repo().dossiers, subtree, params, get_catalog(), directory)
        if "text/csv" in request.headers.get("Accept", ""):
            return Response(reports.to_csv(report), mimetype="text/csv",
                            headers={"Content-Disposition": "attachment; filename=bao-cao-dung-han.csv"})
        return jsonable(report)

    return app


class GroupLag:
    """The lag of the sla consumer group per partition, read off the scrape path.

    `snapshot()` never waits for Kafka: it returns the last successful read (with its age) unless
    it is older than `max_age_s`, and starts one background read when the last attempt is at
    least `refresh_s` old and none is running. A read against an unreachable broker ends after
    its own timeouts, in its thread. `monotonic` (cache ages) and `start` (runs a read; a thread
    by default) are injectable for tests."""

    def __init__(self, read, *, refresh_s: float = LAG_REFRESH_S, max_age_s: float = LAG_MAX_AGE_S,
                 monotonic=time.monotonic, start=None):
        self._read = read
        self.refresh_s, self.max_age_s = refresh_s, max_age_s
        self._now = monotonic
        self._start = start or _start_daemon
        self._lock = threading.Lock()
        self._values: dict | None = None
        self._read_at: float | None = None       # end of the last successful read; None: never
        self._attempt_at: float | None = None    # start of the last read; None: never
        self._running = False

    def snapshot(self) -> tuple[dict, float] | None:
        """(lag by (topic, partition), seconds since it was read), or None when nothing fresh."""
        now = self._now()
        with self._lock:
            due = not self._running and (self._attempt_at is None
                                         or now - self._attempt_at >= self.refresh_s)
            if due:
                self._running, self._attempt_at = True, now
            fresh = self._read_at is not None and now - self._read_at <= self.max_age_s
            out = (dict(self._values), max(0.0, now - self._read_at)) if fresh else None
        if due:
            try:
                self._start(self._refresh)
            except Exception:   # noqa: BLE001 - no thread: try again at the next refresh
                log.warning("consumer lag read not started", exc_info=True)
                with self._lock:
                    self._running = False
        return out

    def _refresh(self) -> None:
        values = None
        try:
            values = self._read()
        except Exception as exc:   # noqa: BLE001 - Kafka down: no lag sample, the scrape goes on
            log.info("consumer lag not read: %s", type(exc).__name__)
        with self._lock:
            self._running = False
            if values is not None:
                self._values, self._read_at = values, self._now()


def _start_daemon(fn) -> None:
    threading.Thread(target=fn, name="sla-api-lag", daemon=True).start()


class _StoreCollector:
    """Scrape-time gauges: open findings by rule and severity (read from MongoDB) and the lag of
    the sla consumer group per partition (Kafka committed vs end offsets, from `GroupLag`: the
    last background read, never a Kafka call on the scrape). A store that does not answer
    yields no sample rather than a failed scrape."""

    def __init__(self, repo, lag: GroupLag):
        self.repo, self.lag = repo, lag

    def collect(self):
        from prometheus_client.core import GaugeMetricFamily

        open_f = GaugeMetricFamily("sla_open_findings", "open or escalated findings",
                                   labels=["rule", "severity"])
        try:
            counts: dict = {}
            for d in self.repo().findings.find({"state": {"$in": ["open", "escalated"]}},
                                               {"rule": 1, "severity": 1}):
                k = (d.get("rule", "?"), d.get("severity", "?"))
                counts[k] = counts.get(k, 0) + 1
            for (rule, sev), n in sorted(counts.items()):
                open_f.add_metric([rule, sev], n)
        except Exception:   # noqa: BLE001 - see the class docstring
            pass
        yield open_f
        lag = GaugeMetricFamily("sla_consumer_group_lag", "end offset - committed offset",
                                labels=["topic", "partition"])
        age = GaugeMetricFamily("sla_consumer_group_lag_age_seconds",
                                "seconds since sla_consumer_group_lag was read from Kafka")
        snap = self.lag.snapshot()
        if snap is not None:
            values, seconds = snap
            for (topic, part), n in sorted(values.items()):
                lag.add_metric([topic, str(part)], n)
            age.add_metric([], round(seconds, 3))
        yield lag
        yield age


def consumer_lag(settings: Settings, group: str) -> dict[tuple[str, int], int]:
    """Lag of `group` on the events topic, per partition (each Kafka step bounded by
    LAG_TIMEOUT_MS)."""
    from kafka import KafkaConsumer, TopicPartition
    from kafka.admin import KafkaAdminClient

    servers = settings.kafka_bootstrap_servers.split(",")
    bounded = dict(request_timeout_ms=LAG_TIMEOUT_MS, bootstrap_timeout_ms=LAG_TIMEOUT_MS,
                   client_id="motcua-sla-api")
    admin = KafkaAdminClient(bootstrap_servers=servers, **bounded)
    try:
        committed = admin.list_group_offsets(group).get(group, {})   # kafka-python 3.x
    finally:
        admin.close()
    consumer = KafkaConsumer(bootstrap_servers=servers, group_id=None, **bounded)
    try:
        parts = consumer.partitions_for_topic(settings.topic_events) or set()
        tps = [TopicPartition(settings.topic_events, p) for p in sorted(parts)]
        ends = consumer.end_offsets(tps)
    finally:
        consumer.close()
    out = {}
    for tp in tps:
        c = committed.get(tp)
        done = c.offset if c is not None and c.offset >= 0 else 0
        out[(tp.topic, tp.partition)] = max(0, ends[tp] - done)
    return out


def _shown(value: str) -> str:
    """A query value quoted for an error message, cut short (it comes from the client)."""
    return repr(value if len(value) <= 64 else value[:64] + "…")


def _int_arg(args, name, default, lo, hi) -> int:
    raw = args.get(name)
    if raw is None:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ApiError.one(400, "invalid", f"{name} must be an integer", field=name) from None
    if not lo <= value <= hi:
        raise ApiError.one(400, "invalid", f"{name} must be between {lo} and {hi}", field=name)
    return value


def public_finding(doc: dict, views: dict | None = None) -> dict:
    """A finding as sla holds it, with how it stands with its recipients (`alerting`: the
    acknowledgement and escalation notify recorded, None before notify has seen it)."""
    out = finding_message(doc)
    out.pop("form_data", None)           # the applicant's name: for the attached form only
    out["published"] = not doc.get("pending", False)
    out["alerting"] = (views or {}).get(doc["_id"])
    return jsonable(out)


def jsonable(obj):
    """Datetimes as ISO 8601 UTC (`Z`-less, with +00:00) for JSON responses."""
    if isinstance(obj, datetime):
        return obj.astimezone(timezone.utc).isoformat()
    if isinstance(obj, dict):
        return {k: jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [jsonable(v) for v in obj]
    return obj
