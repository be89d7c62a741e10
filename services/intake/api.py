"""HTTP endpoints of intake: `POST /v1/events`, `POST /v1/events:batch`, `GET /v1/events/<id>`,
and the receipt slip (Mẫu 01) of a received dossier: `GET /v1/receipts/<event_id>[/print]`,
`GET /v1/dossiers/<code>/receipt[/print]`.

Status codes: 202 published (Kafka acknowledged, acks=all); 200 same event id and body seen
before (original result, no second event unless the first was never acknowledged); 400 malformed
JSON; 401 missing/invalid key; 403 role may not post or agency outside the key's subtree;
409 same event id, different body; 413 body or batch too large; 415 not `application/json`;
422 invalid event (every error at once); 429 rate limited (Retry-After); 503 Kafka or MongoDB
unavailable (Retry-After) — nothing was accepted, retry with the same event id.
"""
from __future__ import annotations

import json
import uuid

from flask import Blueprint, current_app, jsonify, request

from shared.contracts.events import DOSSIER_CODE
from shared.platform.auth import WRITE_ROLES, authenticate
from shared.platform.httpapi import ApiError

from .service import stored_value

bp = Blueprint("intake", __name__)


def _ext() -> dict:
    return current_app.extensions["intake"]


def _json_body():
    """The request body as JSON: 415 unless application/json, 413 over the size limit, 400 if
    malformed (including NaN/Infinity and invalid UTF-8)."""
    if request.mimetype != "application/json":
        raise ApiError.one(415, "unsupported_media_type",
                           "send the body as JSON with 'Content-Type: application/json'")
    raw = request.get_data(cache=False)      # 413 from MAX_CONTENT_LENGTH
    try:
        return json.loads(raw.decode("utf-8"), parse_constant=_no_constants)
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        msg = f"malformed JSON: {exc.msg}" if isinstance(exc, json.JSONDecodeError) else \
            "malformed JSON: the body must be UTF-8 JSON"
        raise ApiError.one(400, "malformed_json", msg) from None


def _no_constants(name):
    raise ValueError(f"{name} is not valid JSON")


def _writer():
    principal = authenticate()
    if principal.role not in WRITE_ROLES:
        raise ApiError.one(403, "forbidden_role",
                           f"a {principal.role} key may not post events "
                           f"(allowed roles: {', '.join(WRITE_ROLES)})")
    return principal


@bp.post("/v1/events")
def post_event():
    principal = _writer()
    payload = _json_body()
    out = _ext()["service"].submit(principal, [payload])[0]
    _count(out)
    resp = jsonify(out.body)
    resp.status_code = out.status
    for k, v in out.headers.items():
        resp.headers[k] = v
    return resp


@bp.post("/v1/events:batch")
def post_batch():
    principal = _writer()
    payload = _json_body()
    limit = _ext()["settings"].intake_max_batch
    if not isinstance(payload, dict) or set(payload) != {"events"} or not isinstance(payload["events"], list):
        raise ApiError.one(422, "invalid_type", 'the body must be {"events": [event, …]}', field="events")
    events = payload["events"]
    if not events:
        raise ApiError.one(422, "invalid_length", "the batch is empty", field="events")
    if len(events) > limit:
        raise ApiError.one(413, "batch_too_large",
                           f"{len(events)} events in one batch; at most {limit}", field="events")
    outcomes = _ext()["service"].submit(principal, events)
    results = []
    for i, out in enumerate(outcomes):
        item = {"index": i}
        eid = events[i].get("event_id") if isinstance(events[i], dict) else None
        if isinstance(eid, str):
            item["event_id"] = eid
        item.update(out.body)
        if "status" in item:          # the event's state; `status` is the HTTP status here
            item["state"] = item.pop("status")
        item["status"] = out.status
        results.append(item)
    _count_all(outcomes)
    accepted = sum(1 for o in outcomes if o.status in (200, 202))
    resp = jsonify({"accepted": accepted, "rejected": len(outcomes) - accepted, "results": results})
    if any(o.status == 503 for o in outcomes):
        resp.headers["Retry-After"] = "5"
    return resp


def _accepted(event_id: str) -> tuple[str, dict]:
    """(event id, stored record) of an event intake accepted for the key's agencies; 422 for a
    malformed id, 404 for an unknown one or one outside the key's subtree."""
    principal = authenticate()
    try:
        eid = str(uuid.UUID(event_id))
    except ValueError:
        raise ApiError.one(422, "invalid_format", "not a valid UUID", field="event_id") from None
    doc = _ext()["store"]().get(eid)
    if doc is None or not principal.can_access(doc["agency_code"], _ext()["resources"].directory()):
        raise ApiError.one(404, "not_found", f"no event {eid} accepted for this key's agencies",
                           field="event_id")
    return eid, doc


def _receipt_of(event_id: str) -> dict:
    """Mẫu 01 data of a `dossier.received` accepted by intake and visible to the key."""
    eid, doc = _accepted(event_id)
    if doc["type"] != "dossier.received":
        raise ApiError.one(409, "not_a_receipt",
                           f"event {eid} is a {doc['type']}, not a dossier.received: it has no "
                           f"Giấy tiếp nhận", field="event_id")
    return _receipt(doc)


def _receipt_of_dossier(code: str) -> dict:
    """Mẫu 01 data of a dossier's `dossier.received` visible to the key: the first one published
    (the one the sla service times the dossier by), else the first one stored."""
    principal = authenticate()
    if not DOSSIER_CODE.match(code):
        raise ApiError.one(422, "invalid_format", "not a valid dossier code", field="dossier_code")
    directory = _ext()["resources"].directory()
    docs = [d for d in _ext()["store"]().of_dossier(code, "dossier.received")
            if principal.can_access(d["agency_code"], directory)]
    if not docs:
        raise ApiError.one(404, "not_found",
                           f"no dossier.received of dossier {code} accepted for this key's "
                           f"agencies: it has no Giấy tiếp nhận", field="dossier_code")
    published = sorted((d for d in docs if d["status"] == "published"),
                       key=lambda d: (d["published_at"], d["offset"]))
    return _receipt(published[0] if published else min(docs, key=lambda d: d["recorded_at"]))


def _receipt(doc: dict) -> dict:
    from shared.domain.engine import receipt_due

    from .receipt import receipt_data
    event = _ext()["service"].stored_event(doc)
    ctx = _ext()["resources"].engine_ctx()
    return {"event_id": doc["_id"], "status": doc["status"],
            **receipt_data(event, receipt_due(event, ctx), ctx)}


def _page(receipt: dict):
    from flask import Response

    from .receipt import receipt_html
    return Response(receipt_html(receipt), mimetype="text/html")


@bp.get("/v1/receipts/<event_id>")
def get_receipt(event_id: str):
    """The Giấy tiếp nhận hồ sơ và hẹn trả kết quả (Mẫu 01) of a received dossier, as JSON."""
    return jsonify(_receipt_of(event_id))


@bp.get("/v1/receipts/<event_id>/print")
def print_receipt(event_id: str):
    """The same, as a printable Vietnamese HTML page."""
    return _page(_receipt_of(event_id))


@bp.get("/v1/dossiers/<path:code>/receipt")
def get_dossier_receipt(code: str):
    """The Mẫu 01 of a dossier found by its code, as JSON."""
    return jsonify(_receipt_of_dossier(code))


@bp.get("/v1/dossiers/<path:code>/receipt/print")
def print_dossier_receipt(code: str):
    """The same, as a printable Vietnamese HTML page."""
    return _page(_receipt_of_dossier(code))


@bp.get("/v1/events/<event_id>")
def get_event(event_id: str):
    eid, doc = _accepted(event_id)
    body = {"event_id": eid, "status": doc["status"], "type": doc["type"],
            "dossier_code": doc["dossier_code"], "agency_code": doc["agency_code"],
            "recorded_at": stored_value(doc)["recorded_at"]}
    if doc["status"] == "published":
        body.update(topic=doc["topic"], partition=doc["partition"], offset=doc["offset"])
    return jsonify(body)


def _count_all(outcomes) -> None:
    """`_count` for a batch: one increment per label instead of one per event."""
    replayed = sum(1 for o in outcomes if o.status == 200)
    new = sum(1 for o in outcomes if o.status == 202)
    accepted = _ext()["metrics"].accepted
    if new:
        accepted.labels("false").inc(new)
    if replayed:
        accepted.labels("true").inc(replayed)


def _count(out) -> None:
    if out.status in (200, 202):
        _ext()["metrics"].accepted.labels("true" if out.status == 200 else "false").inc()
