"""HTTP plumbing shared by the intake, sla and notify APIs.

```python
init_http(app, service="intake")   # JSON errors, request ids, JSON access logs, /metrics, /healthz
raise ApiError(422, [FieldError(...)] | [{"code","field","message"}], headers={...})
metrics(app).counter / .histogram                 # per-app Prometheus metrics
```

- Every error leaves as `{"errors": [{"code", "field", "message"}]}` (docs/api.md), including
  Werkzeug's (404, 405, 413, 415…) and unexpected exceptions (500, no internals leaked).
- Request id: the client's `X-Request-Id` when it is a sane token (≤ 64 chars of
  `[A-Za-z0-9._-]`), else a new UUID4; echoed in the response header and in every log line.
- Logs: one JSON object per line on stderr (`configure_json_logging()`, done by `init_http` for
  every API unless the app is TESTING); event-shaped data must go through
  `shared.contracts.events.redact()` before being logged. A 500 is logged with its traceback and request
  id, and its body quotes that id.
- Metrics: `http_requests_total{route,method,status}`, `http_request_duration_seconds{route}`.
  Metrics live in a per-app registry; under gunicorn with several workers set
  `PROMETHEUS_MULTIPROC_DIR` (an empty, writable directory) before the workers start: /metrics
  then aggregates every worker's files (prometheus_client multiprocess mode; gauges excluded).
"""
from __future__ import annotations

import json
import logging
import os
import re
import sys
import time
import uuid
from dataclasses import dataclass
from typing import Any, Iterable

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client import CONTENT_TYPE_LATEST

_RID = re.compile(r"^[A-Za-z0-9._-]{1,64}$")
log = logging.getLogger("motcua.http")

LATENCY_BUCKETS = (0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)


class ApiError(Exception):
    """An error response: status, a list of {code, field, message}, optional headers."""

    def __init__(self, status: int, errors: Iterable[Any], headers: dict[str, str] | None = None):
        self.status = status
        self.errors = [e.as_dict() if hasattr(e, "as_dict") else dict(e) for e in errors]
        self.headers = dict(headers or {})
        super().__init__(f"{status}: {self.errors}")

    @classmethod
    def one(cls, status: int, code: str, message: str, field: str = "$",
            headers: dict[str, str] | None = None) -> "ApiError":
        return cls(status, [{"code": code, "field": field, "message": message}], headers)


def error_response(status: int, errors: list[dict], headers: dict[str, str] | None = None):
    from flask import jsonify

    resp = jsonify({"errors": errors})
    resp.status_code = status
    for k, v in (headers or {}).items():
        resp.headers[k] = v
    return resp


def auth_error_response(exc):
    """The JSON answer to a shared.platform.auth.AuthError (401/403/429), the same in every API."""
    headers = {"Retry-After": str(exc.retry_after)} if exc.retry_after else {}
    if exc.status == 401:
        headers["WWW-Authenticate"] = 'Bearer realm="motcua"'
    return error_response(exc.status, [{"code": exc.code, "field": "Authorization",
                                        "message": exc.message}], headers)


_HTTP_CODES = {400: "bad_request", 401: "unauthenticated", 403: "forbidden", 404: "not_found",
               405: "method_not_allowed", 409: "conflict", 413: "payload_too_large",
               415: "unsupported_media_type", 422: "invalid", 429: "rate_limited",
               500: "internal_error", 503: "unavailable"}


class JsonFormatter(logging.Formatter):
    """One JSON object per log record, with the request id when inside a request."""

    def format(self, record: logging.LogRecord) -> str:
        out = {"ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
               + f".{int(record.msecs):03d}Z",
               "level": record.levelname.lower(), "logger": record.name, "msg": record.getMessage()}
        rid = getattr(record, "request_id", None) or _current_request_id()
        if rid:
            out["request_id"] = rid
        extra = getattr(record, "fields", None)
        if isinstance(extra, dict):
            out.update(extra)
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        return json.dumps(out, ensure_ascii=False, default=str)


def _current_request_id() -> str | None:
    try:
        from flask import g, has_request_context
        if has_request_context():
            return getattr(g, "request_id", None)
    except Exception:  # noqa: BLE001
        pass
    return None


def configure_json_logging(level: str | int = "INFO") -> None:
    """Make the root logger print JSON lines on the process's stderr (idempotent). The handler
    holds the original stream (`sys.__stderr__`): code that swaps `sys.stderr` to capture what
    it prints (a CLI run in-process, a test) does not catch log lines."""
    root = logging.getLogger()
    for h in root.handlers:
        if isinstance(h.formatter, JsonFormatter):
            return
    handler = logging.StreamHandler(sys.__stderr__ or sys.stderr)
    handler.setFormatter(JsonFormatter())
    root.addHandler(handler)
    root.setLevel(level)
    logging.getLogger("kafka").setLevel(logging.WARNING)   # its INFO is one line per connection


@dataclass
class Metrics:
    registry: CollectorRegistry
    requests: Counter
    latency: Histogram

    def counter(self, name: str, doc: str, labels: Iterable[str] = ()) -> Counter:
        return Counter(name, doc, list(labels), registry=self.registry)

    def histogram(self, name: str, doc: str, labels: Iterable[str] = (),
                  buckets=LATENCY_BUCKETS) -> Histogram:
        return Histogram(name, doc, list(labels), registry=self.registry, buckets=buckets)

    def exposition(self) -> bytes:
        if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
            from prometheus_client import multiprocess
            reg = CollectorRegistry()
            multiprocess.MultiProcessCollector(reg)
            return generate_latest(reg)
        return generate_latest(self.registry)


def store_unavailable_response(exc):
    """503 + Retry-After for a MongoDB error (store down, timed out, failed over): the request
    changed nothing it reports, a retry is safe."""
    log.warning("MongoDB error: %s", type(exc).__name__)
    return error_response(503, [{"code": "store_unavailable", "field": "$",
                                 "message": "the database is unavailable; retry later"}],
                          {"Retry-After": "5"})


def metrics(app) -> Metrics:
    return app.extensions["motcua.metrics"]


def init_http(app, service: str, readiness=None, *, json_logs: bool | None = None) -> Metrics:
    """Register JSON error handlers (ApiError, shared.platform.auth.AuthError, MongoDB errors → 503
    `store_unavailable`, HTTP errors, the unexpected), request ids, access logs, /healthz, /readyz and /metrics.

    `readiness` is a callable returning {check name: error message or None}; /readyz answers 503
    when any check has an error. `json_logs`: configure the process's JSON logging (default: unless
    the app's TESTING is set), so that every API's access lines and errors carry request ids.
    """
    from flask import Response, g, jsonify, request
    from pymongo.errors import PyMongoError
    from werkzeug.exceptions import HTTPException

    from shared.platform.auth import AuthError

    reg = CollectorRegistry()
    m = Metrics(
        registry=reg,
        requests=Counter("http_requests_total", "HTTP requests by route, method and status",
                         ["service", "route", "method", "status"], registry=reg),
        latency=Histogram("http_request_duration_seconds", "HTTP request latency by route",
                          ["service", "route"], registry=reg, buckets=LATENCY_BUCKETS),
    )
    app.extensions["motcua.metrics"] = m
    if json_logs if json_logs is not None else not app.config.get("TESTING"):
        configure_json_logging()
    access = logging.getLogger(f"motcua.{service}.access")

    @app.before_request
    def _start():
        rid = request.headers.get("X-Request-Id", "")
        g.request_id = rid if _RID.match(rid) else str(uuid.uuid4())
        g.t0 = time.perf_counter()

    @app.after_request
    def _finish(resp):
        rid = getattr(g, "request_id", None)
        if rid:
            resp.headers["X-Request-Id"] = rid
        route = request.url_rule.rule if request.url_rule is not None else "<unmatched>"
        elapsed = time.perf_counter() - getattr(g, "t0", time.perf_counter())
        m.requests.labels(service, route, request.method, str(resp.status_code)).inc()
        m.latency.labels(service, route).observe(elapsed)
        access.info("request", extra={"fields": {
            "method": request.method, "route": route, "status": resp.status_code,
            "duration_ms": round(elapsed * 1000, 2),
            "key_id": getattr(getattr(g, "principal", None), "key_id", None)}})
        return resp

    @app.errorhandler(ApiError)
    def _api_error(exc: ApiError):
        return error_response(exc.status, exc.errors, exc.headers)

    app.register_error_handler(AuthError, auth_error_response)
    app.register_error_handler(PyMongoError, store_unavailable_response)

    @app.errorhandler(HTTPException)
    def _http_error(exc: HTTPException):
        status = exc.code or 500
        code = _HTTP_CODES.get(status, "http_error")
        message = exc.description or exc.name
        return error_response(status, [{"code": code, "field": "$", "message": message}])

    @app.errorhandler(Exception)
    def _unexpected(exc: Exception):
        # the body quotes the request id; this line (with the traceback) is where ops find it
        if not getattr(g, "request_id", None):      # failed before _start ran
            g.request_id = str(uuid.uuid4())
        rid = g.request_id
        route = request.url_rule.rule if request.url_rule is not None else "<unmatched>"
        log.exception("unhandled error", extra={"fields": {
            "service": service, "method": request.method, "route": route,
            "error": type(exc).__name__}})
        return error_response(500, [{"code": "internal_error", "field": "$",
                                     "message": f"internal error; quote request id {rid} to ops"}])

    @app.get("/healthz")
    def healthz():
        return jsonify({"status": "ok", "service": service})

    @app.get("/readyz")
    def readyz():
        checks = readiness() if readiness else {}
        ok = all(v is None for v in checks.values())
        body = {"status": "ready" if ok else "not_ready",
                "checks": {k: ("ok" if v is None else v) for k, v in checks.items()}}
        resp = jsonify(body)
        resp.status_code = 200 if ok else 503
        if not ok:
            resp.headers["Retry-After"] = "5"
        return resp

    @app.get("/metrics")
    def metrics_view():
        return Response(m.exposition(), mimetype=CONTENT_TYPE_LATEST.split(";")[0],
                        headers={"Content-Type": CONTENT_TYPE_LATEST})

    return m
