"""HTTP API of the notify service: delivery log, notifications, acknowledgements, health, metrics.

`gunicorn 'services.notify.api:create_app()'`. Nothing connects at import or in the factory.

- `GET /v1/deliveries` (API key): every send attempt of the key's agency subtree; filters
  `finding_id`, `dossier_code`, `agency_code`, `channel`, `outcome` (sent/error/failed), `limit`, `offset`.
- `GET /v1/notifications` (API key): notifications with their status (pending/sent/failed/
  cancelled), e.g. `?status=failed` lists the deliveries that failed for good.
- `GET /v1/ack/<token>`: the signed link of an alert. Shows the alert and a confirmation button
  (a GET never acknowledges: mail scanners prefetch links); JSON with `Accept: application/json`.
- `POST /v1/ack/<token>`: acknowledges (the token names the finding and the recipient).
- `POST /v1/findings/<finding_id>/ack` (API key, role agency/supervisor/admin, finding in the key's
  subtree): acknowledges on behalf of the key. Both stop repeats and the escalation for lack of
  acknowledgement (not the escalation by lateness: docs/alerts.md); a resolved finding is not
  acknowledged (`already_resolved`).
- `GET /v1/findings/<finding_id>` (API key, finding in the key's subtree): the finding as notify
  holds it, with `alerting` (acknowledgement, escalation level, repeats) — the same view the sla
  API shows (`shared/contracts/alerting.py`).
- `GET /openapi.json`: the OpenAPI document (`services/notify/openapi.py`).
- `/healthz`, `/readyz` (MongoDB ping), `/metrics` (HTTP metrics, and from the store: sent and
  failed by channel, pending/deferred queue, delivery latency histogram).

Test configuration (`create_app(config)`): SETTINGS, DIRECTORY, POLICY, KEY_STORE, ENV (a mapping
overriding environment variables such as NOTIFY_SECRET).
"""
from __future__ import annotations

import os
from datetime import datetime, timezone

from shared.contracts.alerting import alerting
from shared.platform.auth import KeyStore, authenticate, init_auth
from shared.platform.httpapi import ApiError, init_http
from shared.platform.mongo import ping_error
from shared.platform.runtime import Lazy

from .bootstrap import bootstrap
from .service import NotifyService
from .templates import SEVERITY_TEXT, local_text
from .tokens import TokenError, verify_ack

MAX_PAGE = 500
OUTCOMES = ("sent", "error", "failed")
STATUSES = ("pending", "sent", "failed", "cancelled")
ALREADY_RESOLVED = ("Vi phạm này đã được khắc phục (hồ sơ không còn ở tình trạng vi phạm); "
                    "không cần xác nhận và không còn cảnh báo nào về vi phạm này.")
STOPPED_TAIL = ("; nếu hồ sơ tiếp tục quá hạn đến mức phải báo cáo cấp trên, "
                "Thủ trưởng cơ quan cấp trên vẫn được thông báo theo quy chế.")


def _json_safe(doc: dict) -> dict:
    out = {}
    for k, v in doc.items():
        if k == "_id":
            out["id"] = str(v)
        elif k == "notification_id":
            out[k] = str(v)
        elif isinstance(v, datetime):
            out[k] = (v if v.tzinfo else v.replace(tzinfo=timezone.utc)).isoformat()
        else:
            out[k] = v
    return out


_PAGE = """<!DOCTYPE html><html lang="vi"><head><meta charset="utf-8"><title>{title}</title></head>
<body style="font-family: Arial, sans-serif; font-size: 14px;"><h2>{title}</h2>{body}</body></html>"""


def create_app(config: dict | None = None, *, db=None, clock=None):
    """Build the notify API (Flask)."""
    from flask import Flask, Response, jsonify, request
    from markupsafe import escape

    app = Flask("motcua.notify")
    app.config.update(config or {})
    notify = bootstrap(app.config.get("SETTINGS"), environ={**os.environ, **(app.config.get("ENV") or {})},
                       clock=clock, db=db, directory=app.config.get("DIRECTORY"),
                       policy=app.config.get("POLICY"), appname="motcua-notify-api", for_requests=True)
    clock, secret = notify.clock, notify.secret
    get_db, get_directory, get_store = notify.db, notify.directory, notify.store
    get_service = Lazy(lambda: NotifyService(get_store(), notify.policy(), get_directory(), {}, clock,
                                             secret=secret))
    keys = app.config.get("KEY_STORE") or Lazy(lambda: KeyStore(get_db(), clock, cache_seconds=5))
    init_auth(app, keys)

    m = init_http(app, "notify", readiness=lambda: {"mongo": ping_error(get_db)})
    from shared.platform.apidoc import blueprint
    from .openapi import build_spec
    app.register_blueprint(blueprint("notify_openapi", build_spec))
    from .metrics import StoreCollector
    m.registry.register(StoreCollector(get_store, clock))

    # -- helpers -----------------------------------------------------------------------------
    def reader():
        p = authenticate()
        p.require_role("agency", "supervisor", "admin")
        return p

    def subtree_of(p) -> list[str]:
        d = get_directory()
        return sorted(d.subtree(p.agency_code)) if p.agency_code in d else [p.agency_code]

    def page_args():
        try:
            limit = int(request.args.get("limit", 100))
            offset = int(request.args.get("offset", 0))
        except ValueError:
            raise ApiError.one(400, "invalid", "limit and offset must be integers", field="limit") from None
        if not 1 <= limit <= MAX_PAGE:
            raise ApiError.one(400, "invalid", f"limit must be from 1 to {MAX_PAGE}", field="limit")
        if offset < 0:
            raise ApiError.one(400, "invalid", "offset must not be negative", field="offset")
        return limit, offset

    def scoped_query(p, agency_field: str, allowed: dict[str, tuple | None]) -> dict:
        unknown = sorted(set(request.args) - set(allowed) - {"limit", "offset", "agency_code"})
        if unknown:
            raise ApiError.one(400, "unknown_parameter", f"unknown query parameter {unknown[0]!r}", field=unknown[0])
        q: dict = {}
        agencies = subtree_of(p)
        code = request.args.get("agency_code")
        if code is not None:
            if code not in get_directory():
                shown = repr(code if len(code) <= 64 else code[:64] + "…")
                raise ApiError.one(422, "unknown_agency", f"unknown agency {shown}", field="agency_code")
            if code not in agencies:
                raise ApiError.one(403, "forbidden_agency", "agency outside the key's subtree", field="agency_code")
            q[agency_field] = code
        else:
            q[agency_field] = {"$in": agencies}
        for name, values in allowed.items():
            v = request.args.get(name)
            if v is None:
                continue
            if values is not None and v not in values:
                raise ApiError.one(400, "invalid", f"{name} must be one of {', '.join(values)}", field=name)
            if len(v) > 128:
                raise ApiError.one(400, "invalid", f"{name} is too long", field=name)
            q[name] = v
        return q

    # -- delivery log --------------------------------------------------------------------------
    @app.get("/v1/deliveries")
    def deliveries():
        p = reader()
        limit, offset = page_args()
        q = scoped_query(p, "agency_code", {"finding_id": None, "dossier_code": None,
                                            "channel": ("email", "sms", "webhook"), "outcome": OUTCOMES})
        items = [_json_safe(d) for d in get_store().list_deliveries(q, limit, offset)]
        return jsonify({"items": items, "limit": limit, "offset": offset})

    @app.get("/v1/notifications")
    def notifications():
        p = reader()
        limit, offset = page_args()
        q = scoped_query(p, "finding_agency", {"finding_id": None, "dossier_code": None,
                                               "status": STATUSES, "kind": ("alert", "repeat", "resolved", "digest")})
        docs = get_store().list_notifications(q, limit, offset, {"subject": 0, "text": 0, "html": 0})
        return jsonify({"items": [_json_safe(d) for d in docs], "limit": limit, "offset": offset})

    # -- acknowledgement -------------------------------------------------------------------------
    def claim_of(token: str):
        try:
            return verify_ack(secret, token, clock.now())
        except TokenError as exc:
            status = 503 if exc.code == "not_configured" else 410 if exc.code == "expired" else 400
            raise ApiError.one(status, exc.code, str(exc), field="token") from None

    def wants_json() -> bool:
        best = request.accept_mimetypes.best_match(["text/html", "application/json"])
        return best == "application/json" or request.is_json

    def ack_page(title: str, body: str, status: int = 200):
        return Response(_PAGE.format(title=escape(title), body=body), status=status,
                        mimetype="text/html")

    @app.get("/v1/ack/<token>")
    def ack_form(token: str):
        claim = claim_of(token)
        f = get_store().get_finding(claim.finding_id)
        if f is None:
            raise ApiError.one(404, "not_found", "finding not found", field="token")
        info = {"finding_id": f["_id"], "dossier_code": f["dossier_code"], "rule": f["rule"],
                "title": f.get("title"), "state": f["state"], "recipient": claim.recipient,
                "acknowledged_at": _json_safe({"t": f.get("acked_at")})["t"], "acknowledged_by": f.get("acked_by")}
        if wants_json():
            return jsonify(info)
        if f["state"] == "resolved":
            done = f"<p>{escape(ALREADY_RESOLVED)}</p>"
        elif f.get("acked_at"):
            done = f"<p>Cảnh báo đã được xác nhận lúc {escape(local_text(f['acked_at']))}.</p>"
        else:
            done = '<form method="post"><button type="submit">Xác nhận đã nhận cảnh báo</button></form>'

        body = (f"<p>Hồ sơ <strong>{escape(f['dossier_code'])}</strong>: {escape(f.get('title') or f['rule'])} "
                f"(mức độ: {escape(SEVERITY_TEXT.get(f['severity'], f['severity']))}).</p>{done}")
        return ack_page("Xác nhận cảnh báo", body)

    @app.post("/v1/ack/<token>")
    def ack_link(token: str):
        claim = claim_of(token)
        res = get_service().acknowledge(claim.finding_id, claim.recipient, by=claim.recipient, via="link")
        if res is None:
            raise ApiError.one(404, "not_found", "finding not found", field="token")
        if wants_json():
            return jsonify(_json_safe(res))
        if res["already_resolved"]:
            return ack_page("Vi phạm đã được khắc phục", f"<p>{escape(ALREADY_RESOLVED)}</p>")
        if not res["first"]:
            return ack_page("Đã xác nhận trước đó", f"<p>Cảnh báo này đã được xác nhận lúc "
                            f"{escape(local_text(res['acknowledged_at']))}; không cần xác nhận lại.</p>")
        return ack_page("Đã xác nhận", f"<p>Đã ghi nhận xác nhận của {escape(claim.recipient)} lúc "
                        f"{escape(local_text(res['acknowledged_at']))}. Việc nhắc lại cảnh báo này đã dừng"
                        f"{escape(STOPPED_TAIL if res.get('rule') == 'OVERDUE' else '.')}</p>")

    def visible_finding(p, finding_id: str) -> dict:
        if len(finding_id) > 128:
            raise ApiError.one(400, "invalid", "finding id too long", field="finding_id")
        f = get_store().get_finding(finding_id)
        if f is None or not p.can_access(f["agency_code"], get_directory()):
            raise ApiError.one(404, "not_found", "finding not found", field="finding_id")
        return f

    @app.get("/v1/findings/<path:finding_id>")
    def finding_view(finding_id: str):
        if finding_id.endswith("/ack"):
            raise ApiError.one(405, "method_not_allowed", "acknowledge with POST", field="$")
        p = reader()
        f = visible_finding(p, finding_id)
        out = {"finding_id": f["_id"], **{k: f.get(k) for k in (
            "rule", "state", "severity", "dossier_code", "agency_code", "responsible_role", "revision")},
            "alerting": alerting(f)}
        return jsonify(_json_safe(out))

    @app.post("/v1/findings/<finding_id>/ack")
    def ack_with_key(finding_id: str):
        p = reader()
        visible_finding(p, finding_id)
        body = request.get_json(silent=True) if request.data else {}
        if body is None or not isinstance(body, dict) or set(body) - {"note"}:
            raise ApiError.one(400, "invalid", "body must be empty or {\"note\": \"…\"}", field="$")
        note = body.get("note")
        if note is not None and (not isinstance(note, str) or len(note) > 1000):
            raise ApiError.one(400, "invalid", "note must be a string of at most 1000 characters", field="note")
        res = get_service().acknowledge(finding_id, f"key:{p.key_id}", by=f"key:{p.key_id}@{p.agency_code}",
                                        via="api", note=note)
        return jsonify(_json_safe(res))

    return app
