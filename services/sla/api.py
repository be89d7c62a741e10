"""Read API of the sla service: dossier states, findings, deadline explanations, reports.

`gunicorn 'services.sla.api:create_app()'`. Same API keys and tenancy as intake
(`shared.auth`): a key reads only dossiers and findings of its agency subtree. Nothing connects
at import or in the factory: the Mongo client is built on first use in each (forked) worker.

Test configuration keys (`create_app(config)`): SETTINGS (a `Settings`), DIRECTORY
(a `shared.directory.Directory`), CATALOG (a `shared.catalog.Catalog`), ENGINE_CTX (the legal
engine's context), KEY_STORE (a `shared.auth.KeyStore`), RATE_LIMIT (requests per minute per key).
"""
from __future__ import annotations

from datetime import datetime, timezone

from shared.auth import KeyStore, RateLimiter, authenticate, init_auth
from shared.config import Settings
from shared.events import DOSSIER_CODE, redact
from shared.findings import SEVERITIES, STATES
from shared.httpapi import ApiError, init_http
from shared.mongo import ping_error
from shared.runtime import Lazy

from .bootstrap import bootstrap
from .repository import MongoRepository, finding_message, live_names, strip_dossier

MAX_PAGE = 500


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
    m.registry.register(_StoreCollector(repo, settings, app.config.get("CONSUMER_GROUP", "sla")))

    # -- helpers --------------------------------------------------------------------------------
    def principal():
        p = authenticate()
        p.require_role("agency", "supervisor", "admin")
        return p

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
        rows = [public_finding(d) for d in sorted(found.values(),
                                                   key=lambda d: (str(d.get("detected_at") or ""), d["_id"]))]
        return {"dossier_code": code, "findings": rows}

    @app.get("/v1/dossiers/<path:code>/deadline")
    def dossier_deadline(code):
        from shared import engine
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
        root = args.get("agency") or p.agency_code
        if not p.can_access(root, directory):
            raise ApiError.one(403, "forbidden_agency", "agency outside this key's subtree", field="agency")
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
            q["rule"] = args["rule"]
        procedures = None
        if "procedure" in args:
            procedures = {args["procedure"]}
        if "field" in args:
            in_field = {pr.code for pr in get_catalog() if pr.field == args["field"]}
            procedures = in_field if procedures is None else procedures & in_field
        if procedures is not None:
            q["procedure_code"] = {"$in": sorted(procedures)}
        limit_, offset = _int_arg(args, "limit", 50, 1, MAX_PAGE), _int_arg(args, "offset", 0, 0, 10**9)
        coll = repo().findings
        total = coll.count_documents(q)
        rows = list(coll.find(q).sort([("detected_at", 1), ("_id", 1)]).skip(offset).limit(limit_))
        return jsonable({"total": total, "offset": offset, "limit": limit_,
                         "findings": [public_finding(d) for d in rows]})

    # -- reports --------------------------------------------------------------------------------
    @app.get("/v1/reports/on-time")
    def on_time():
        from flask import Response, request
        from . import reports
        p = principal()
        args = request.args
        params = reports.parse_params(args, now=clock.now())
        directory = get_directory()
        root = params.agency or p.agency_code
        if not p.can_access(root, directory):
            raise ApiError.one(403, "forbidden_agency", "agency outside this key's subtree", field="agency")
        subtree = directory.subtree(root) if root in directory else {root}
        report = reports.on_time_report(repo().dossiers, subtree, params, get_catalog(), directory)
        if "text/csv" in request.headers.get("Accept", ""):
            return Response(reports.to_csv(report), mimetype="text/csv",
                            headers={"Content-Disposition": "attachment; filename=bao-cao-dung-han.csv"})
        return jsonable(report)

    return app


class _StoreCollector:
    """Scrape-time gauges read from the stores: open findings by rule and severity (MongoDB) and
    the lag of the sla consumer group per partition (Kafka committed vs end offsets). A store
    that does not answer yields no sample rather than a failed scrape."""

    def __init__(self, repo, settings: Settings, group: str):
        self.repo, self.settings, self.group = repo, settings, group

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
        try:
            for (topic, part), n in consumer_lag(self.settings, self.group).items():
                lag.add_metric([topic, str(part)], n)
        except Exception:   # noqa: BLE001
            pass
        yield lag


def consumer_lag(settings: Settings, group: str) -> dict[tuple[str, int], int]:
    """Lag of `group` on the events topic, per partition."""
    from kafka import KafkaConsumer, TopicPartition
    from kafka.admin import KafkaAdminClient

    servers = settings.kafka_bootstrap_servers.split(",")
    admin = KafkaAdminClient(bootstrap_servers=servers, client_id="motcua-sla-api",
                             request_timeout_ms=3000)
    try:
        committed = admin.list_group_offsets(group).get(group, {})   # kafka-python 3.x
    finally:
        admin.close()
    consumer = KafkaConsumer(bootstrap_servers=servers, group_id=None, request_timeout_ms=3000,
                             client_id="motcua-sla-api")
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


def public_finding(doc: dict) -> dict:
    out = finding_message(doc)
    out["published"] = not doc.get("pending", False)
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
