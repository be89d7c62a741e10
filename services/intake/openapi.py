"""OpenAPI 3 description of intake, generated from the marshmallow schemas of `shared.contracts.events`
(apispec + MarshmallowPlugin), served at `/openapi.json`, and a self-contained docs page at
`/docs` (server-rendered HTML, no external scripts or fonts)."""
from __future__ import annotations

import html
import json
from functools import lru_cache

from apispec import APISpec
from apispec.ext.marshmallow import MarshmallowPlugin
from flask import Blueprint, Response, jsonify
from marshmallow import Schema, fields, validate

from shared.contracts import events as ev

bp = Blueprint("intake_openapi", __name__)

_EV = "7f0c1a52-3b1e-4d4a-9a53-6a0e2f1b{:04d}"
_BASE = {"dossier_code": "000.00.17.H56-241105-0001", "agency_code": "000.00.17.H56",
         "actor": {"id": "cb-0231", "name": "Trần Thị Bích", "role": "Công chức Bộ phận Một cửa"}}

EXAMPLES: dict[str, dict] = {
    "dossier.received": {
        "summary": "Tiếp nhận hồ sơ đăng ký khai sinh nộp trực tuyến",
        "data": {"procedure_code": "1.001193", "channel": "online",
                 "components": ["to-khai", "giay-chung-sinh"], "digitized": ["to-khai"],
                 "reused": ["giay-chung-sinh"],
                 "applicant": {"kind": "citizen", "name": "Nguyễn Văn An"},
                 "appointment_at": "2024-11-05T17:00:00+07:00",
                 "submitted_at": "2024-11-04T20:10:00+07:00"}},
    "dossier.supplement_requested": {
        "summary": "Yêu cầu bổ sung, hoàn thiện hồ sơ (thiếu giấy chứng sinh)",
        "data": {"stage": "handling", "components": ["giay-chung-sinh"],
                 "reason": "Giấy chứng sinh bị mờ, không đọc được họ tên người mẹ",
                 "form": {"circular": "03/2025/TT-VPCP", "number": "02"}}},
    "dossier.supplement_received": {
        "summary": "Công dân nộp bổ sung thành phần hồ sơ",
        "data": {"components": ["giay-chung-sinh"]}},
    "dossier.refused": {
        "summary": "Từ chối tiếp nhận hồ sơ",
        "data": {"reason": "Thủ tục không thuộc thẩm quyền giải quyết của UBND cấp xã"}},
    "dossier.transferred": {
        "summary": "Chuyển hồ sơ đến cơ quan có thẩm quyền giải quyết",
        "data": {"to_agency_code": "000.00.17.H56"}},
    "dossier.assigned": {
        "summary": "Phân công công chức thụ lý",
        "data": {"officer": {"id": "cc-0457", "name": "Lê Văn Cường"}}},
    "dossier.consultation_requested": {
        "summary": "Xin ý kiến cơ quan liên quan (liên thông)",
        "data": {"to_agency_code": "000.00.17.H56", "due_in": {"value": 3, "unit": "wd"}}},
    "dossier.consultation_answered": {
        "summary": "Cơ quan được xin ý kiến đã trả lời",
        "data": {"from_agency_code": "000.00.17.H56"}},
    "dossier.apology_issued": {
        "summary": "Phiếu xin lỗi và hẹn lại ngày trả kết quả",
        "data": {"new_appointment_at": "2024-11-12T16:00:00+07:00",
                 "reason": "Cần xác minh thực địa ranh giới thửa đất",
                 "form": {"circular": "01/2018/TT-VPCP", "number": "04"}}},
    "dossier.paused": {
        "summary": "Tạm dừng tính thời gian để xác minh thực địa",
        "data": {"reason": "Xác minh thực địa", "legal_basis": "Khoản 2 Điều 61 Nghị định 43/2014/NĐ-CP"}},
    "dossier.resumed": {
        "summary": "Tiếp tục tính thời gian sau khi xác minh xong",
        "data": {"reason": "Đã có biên bản xác minh thực địa",
                 "legal_basis": "Khoản 2 Điều 61 Nghị định 43/2014/NĐ-CP"}},
    "dossier.resolved": {
        "summary": "Giải quyết xong: chấp thuận",
        "data": {"outcome": "approved", "note": "Đã cấp Giấy khai sinh bản chính"}},
    "dossier.returned": {"summary": "Đã trả kết quả cho công dân", "data": {}},
    "dossier.withdrawn": {
        "summary": "Công dân rút hồ sơ", "data": {"reason": "Công dân có đơn xin rút hồ sơ"}},
    "dossier.stopped": {
        "summary": "Dừng giải quyết hồ sơ theo đề nghị của người nộp (Điều 21 Nghị định 118/2025/NĐ-CP)",
        "data": {"reason": "Người nộp đề nghị dừng giải quyết qua Cổng Dịch vụ công quốc gia",
                 "requested_at": "2024-11-05T08:00:00+07:00",
                 "form": {"circular": "03/2025/TT-VPCP", "number": "05"}}},
    "dossier.submitted": {
        "summary": "Hệ thống tiếp nhận hồ sơ trực tuyến, chờ Bộ phận Một cửa chính thức tiếp nhận "
                   "(Điều 17 Nghị định 118/2025/NĐ-CP)",
        "data": {"procedure_code": "1.001193", "channel": "online"}},
}


def example_event(etype: str, n: int = 1) -> dict:
    """A valid example of `etype` (used by the spec, the docs page and the tests)."""
    ex = EXAMPLES[etype]
    return {"event_id": _EV.format(n), "type": etype, "occurred_at": "2024-11-05T08:15:00+07:00",
            **_BASE, "data": json.loads(json.dumps(ex["data"]))}


def _class_name(etype: str) -> str:
    return "".join(p.capitalize() for p in etype.split(".")[1].split("_")) + "Event"


def _event_schemas() -> dict[str, type[Schema]]:
    out = {}
    for etype, data_cls in ev.DATA_SCHEMAS.items():
        out[etype] = type(_class_name(etype), (ev.Envelope,), {
            "type": fields.String(required=True, validate=validate.OneOf([etype])),
            "data": fields.Nested(data_cls, required=True),
        })
    return out


class FieldErrorSchema(Schema):
    code = fields.String(required=True, metadata={"description": "machine code, e.g. required, "
                         "unknown_field, naive_datetime, unknown_agency, unknown_procedure"})
    field = fields.String(required=True, metadata={"description": "dotted path, `$` for the body"})
    message = fields.String(required=True)


class ErrorsSchema(Schema):
    errors = fields.List(fields.Nested(FieldErrorSchema), required=True)


class ReceiptDueSchema(Schema):
    """The 202's `receipt` block of a `dossier.received`: the engine's due date (the one sla stores)."""
    due_at = fields.AwareDateTime(allow_none=True, metadata={
        "description": "legal due date (UTC); null when the procedure is not in the catalog on the "
                       "receipt date (`reason` says so)"})
    due_at_local = fields.String(allow_none=True, metadata={"example": "17:00 ngày 09/07/2025"})
    received_at = fields.AwareDateTime()
    received_at_local = fields.String()
    clock_start = fields.AwareDateTime(allow_none=True)
    limit = fields.String(allow_none=True, metadata={"example": "same-day"})
    office = fields.String(metadata={"description": "office-hours calendar"})
    ruleset = fields.String(metadata={"example": "nd118-2025"})
    ruleset_title = fields.String()
    ruleset_reason = fields.String(metadata={"description": "why this rule set (Vietnamese)"})
    clock_model = fields.String(allow_none=True, metadata={"enum": ["pause", "restart"]})
    catalog_version = fields.String()
    calendar_version = fields.String()
    reason = fields.String()
    receipt_url = fields.String(metadata={"description": "`/v1/receipts/{event_id}`"})


class AcceptedSchema(Schema):
    event_id = fields.UUID(required=True)
    status = fields.String(required=True, metadata={"enum": ["published"]})
    topic = fields.String(required=True)
    partition = fields.Integer(required=True)
    offset = fields.Integer(required=True)
    recorded_at = fields.AwareDateTime(required=True)
    duplicate = fields.Boolean(metadata={"description": "true when the event id was seen before"})
    receipt = fields.Nested(ReceiptDueSchema, metadata={"description": "dossier.received only"})


class AgencyRefSchema(Schema):
    code = fields.String()
    name = fields.String(allow_none=True)
    parent = fields.Dict(allow_none=True)


class ReceiptSchema(Schema):
    """Data of the Giấy tiếp nhận hồ sơ và hẹn trả kết quả (Mẫu 01); no identity number, phone or
    e-mail of the applicant."""
    event_id = fields.UUID(required=True, metadata={"description": "the dossier.received it is of"})
    status = fields.String(required=True, metadata={"enum": ["pending", "published"]})
    form = fields.Dict(allow_none=True, metadata={"description": "number, title, circular"})
    dossier_code = fields.String(required=True)
    dossier_code_format = fields.String(allow_none=True)
    procedure = fields.Dict(metadata={"description": "code, name, field"})
    components = fields.List(fields.Dict(), metadata={"description": "id, name, digitized, reused"})
    channel = fields.String()
    channel_text = fields.String()
    applicant = fields.Dict(metadata={"description": "kind, name"})
    received_at = fields.AwareDateTime()
    received_at_local = fields.String()
    due_at = fields.AwareDateTime(allow_none=True)
    due_at_local = fields.String(allow_none=True)
    appointment_at_printed = fields.String(allow_none=True)
    receiving_unit = fields.Nested(AgencyRefSchema, allow_none=True)
    handling_agency = fields.Nested(AgencyRefSchema, allow_none=True)
    ruleset = fields.String()
    ruleset_title = fields.String()
    ruleset_reason = fields.String()
    limit = fields.String(allow_none=True)
    catalog_version = fields.String()
    calendar_version = fields.String()
    reason = fields.String()


class EventStatusSchema(Schema):
    event_id = fields.UUID(required=True)
    status = fields.String(required=True, metadata={"enum": ["pending", "published"]})
    type = fields.String(required=True)
    dossier_code = fields.String(required=True)
    agency_code = fields.String(required=True)
    recorded_at = fields.AwareDateTime(required=True)
    topic = fields.String()
    partition = fields.Integer()
    offset = fields.Integer()


def _err(desc: str, retry: bool = False) -> dict:
    r = {"description": desc, "content": {"application/json": {"schema": "Errors"}}}
    if retry:
        r["headers"] = {"Retry-After": {"schema": {"type": "integer"}, "description": "seconds"}}
    return r


@lru_cache(maxsize=1)
def build_spec() -> dict:
    """The OpenAPI 3.0 document (a dict)."""
    spec = APISpec(title="motcua intake", version="1.0.0", openapi_version="3.0.3",
                   plugins=[MarshmallowPlugin()],
                   info={"description": "Tiếp nhận sự kiện hồ sơ từ Bộ phận Một cửa "
                                        "(dossier events from one-stop counters), contract v1."})
    spec.components.security_scheme("bearer", {"type": "http", "scheme": "bearer",
                                               "description": "API key from `motcua keys create`"})
    schemas = _event_schemas()
    for etype, cls in schemas.items():
        spec.components.schema(cls.__name__, schema=cls)
    spec.components.schema("Errors", schema=ErrorsSchema)
    spec.components.schema("Accepted", schema=AcceptedSchema)
    spec.components.schema("EventStatus", schema=EventStatusSchema)
    spec.components.schema("Receipt", schema=ReceiptSchema)
    one_of = {"oneOf": [{"$ref": f"#/components/schemas/{c.__name__}"} for c in schemas.values()]}
    examples = {etype.split(".")[1]: {"summary": EXAMPLES[etype]["summary"],
                                      "value": example_event(etype, i + 1)}
                for i, etype in enumerate(schemas)}
    common = {
        "400": _err("malformed JSON"), "401": _err("missing or invalid API key"),
        "403": _err("role may not post, or agency outside the key's subtree"),
        "413": _err("body (or batch) too large"), "415": _err("not application/json"),
        "422": _err("invalid event: every error at once"), "429": _err("rate limited", True),
        "503": _err("Kafka or MongoDB unavailable: nothing accepted, retry", True),
    }
    spec.path(path="/v1/events", operations={"post": {
        "summary": "Post one dossier event", "operationId": "postEvent",
        "security": [{"bearer": []}],
        "requestBody": {"required": True, "content": {"application/json": {
            "schema": one_of, "examples": examples}}},
        "responses": {"202": {"description": "published (Kafka acknowledged)",
                              "content": {"application/json": {"schema": "Accepted"}}},
                      "200": {"description": "same event id and body seen before: original result",
                              "content": {"application/json": {"schema": "Accepted"}}},
                      "409": _err("same event id, different body"), **common}}})
    batch_item = {"type": "object", "properties": {
        "index": {"type": "integer"}, "status": {"type": "integer"},
        "event_id": {"type": "string"}}, "additionalProperties": True}
    spec.path(path="/v1/events:batch", operations={"post": {
        "summary": "Post up to INTAKE_MAX_BATCH events; each validated and answered independently",
        "operationId": "postEventsBatch", "security": [{"bearer": []}],
        "requestBody": {"required": True, "content": {"application/json": {"schema": {
            "type": "object", "required": ["events"], "additionalProperties": False,
            "properties": {"events": {"type": "array", "minItems": 1, "items": one_of}}},
            "example": {"events": [example_event("dossier.received", 1),
                                   example_event("dossier.assigned", 2)]}}}},
        "responses": {"200": {"description": "one result per event, in order",
                              "content": {"application/json": {"schema": {
                                  "type": "object", "properties": {
                                      "accepted": {"type": "integer"},
                                      "rejected": {"type": "integer"},
                                      "results": {"type": "array", "items": batch_item}}}}}},
                      **common}}})
    spec.path(path="/v1/events/{event_id}", operations={"get": {
        "summary": "Whether and where an event was accepted", "operationId": "getEvent",
        "security": [{"bearer": []}],
        "parameters": [{"name": "event_id", "in": "path", "required": True,
                        "schema": {"type": "string", "format": "uuid"}}],
        "responses": {"200": {"description": "known event",
                              "content": {"application/json": {"schema": "EventStatus"}}},
                      "401": common["401"], "404": _err("unknown, or not this key's agencies"),
                      "422": _err("not a UUID"), "429": common["429"], "503": common["503"]}}})
    slip = {"200": {"description": "Mẫu 01 data", "content": {"application/json": {"schema": "Receipt"}}}}
    page = {"200": {"description": "Mẫu 01 as a printable Vietnamese page (A5)",
                    "content": {"text/html": {"schema": {"type": "string"}}}}}
    by_event = [{"name": "event_id", "in": "path", "required": True,
                 "schema": {"type": "string", "format": "uuid"}}]
    by_code = [{"name": "code", "in": "path", "required": True,
                "schema": {"type": "string", "pattern": ev.DOSSIER_CODE.pattern}}]
    for path, params, ok, what in (
            ("/v1/receipts/{event_id}", by_event, slip, "of a dossier.received, as JSON"),
            ("/v1/receipts/{event_id}/print", by_event, page, "of a dossier.received, printable"),
            ("/v1/dossiers/{code}/receipt", by_code, slip, "of a dossier, as JSON"),
            ("/v1/dossiers/{code}/receipt/print", by_code, page, "of a dossier, printable")):
        errors = ({"409": _err("the event is not a dossier.received")} if "event_id" in path else {})
        spec.path(path=path, operations={"get": {
            "summary": f"Giấy tiếp nhận hồ sơ và hẹn trả kết quả (Mẫu 01) {what}"
                       + ("" if "event_id" in path else ": its first dossier.received published "
                          "(else the first stored)"),
            "operationId": ("getReceipt" if "event_id" in path else "getDossierReceipt")
                           + ("Page" if path.endswith("/print") else ""),
            "security": [{"bearer": []}], "parameters": params,
            "responses": {**ok, "401": common["401"],
                          "404": _err("unknown, or not this key's agencies"),
                          "422": _err("malformed event id or dossier code"), **errors,
                          "429": common["429"], "503": common["503"]}}})
    for path, summary in (("/healthz", "liveness"), ("/readyz", "Kafka and MongoDB reachable"),
                          ("/metrics", "Prometheus metrics")):
        spec.path(path=path, operations={"get": {"summary": summary, "responses": {
            "200": {"description": "ok"}, "503": {"description": "not ready"}}}})
    return spec.to_dict()


@bp.get("/openapi.json")
def openapi_json():
    return jsonify(build_spec())


@bp.get("/docs")
def docs():
    spec = build_spec()
    e = html.escape
    parts = [f"<!doctype html><html lang='vi'><head><meta charset='utf-8'>"
             f"<title>{e(spec['info']['title'])}</title><style>body{{font-family:sans-serif;"
             f"max-width:60rem;margin:2rem auto;padding:0 1rem}}pre{{background:#f4f4f4;padding:.5rem;"
             f"overflow:auto}}code{{background:#f4f4f4}}h3{{margin-top:2rem}}</style></head><body>",
             f"<h1>{e(spec['info']['title'])} {e(spec['info']['version'])}</h1>",
             f"<p>{e(spec['info']['description'])}</p>",
             "<p>Machine-readable: <a href='/openapi.json'>/openapi.json</a>. "
             "Authentication: <code>Authorization: Bearer KEY</code>.</p><h2>Endpoints</h2>"]
    for path, ops in spec["paths"].items():
        for method, op in ops.items():
            parts.append(f"<h3><code>{e(method.upper())} {e(path)}</code></h3><p>{e(op.get('summary', ''))}</p><ul>")
            for status, r in sorted(op.get("responses", {}).items()):
                parts.append(f"<li><b>{e(status)}</b> {e(r.get('description', ''))}</li>")
            parts.append("</ul>")
    parts.append("<h2>Event types and examples</h2>")
    for etype in EXAMPLES:
        parts.append(f"<h3><code>{e(etype)}</code> — {e(EXAMPLES[etype]['summary'])}</h3>"
                     f"<pre>{e(json.dumps(example_event(etype), ensure_ascii=False, indent=2))}</pre>")
    parts.append("<h2>Schemas</h2>")
    for name, schema in spec["components"]["schemas"].items():
        parts.append(f"<h3 id='{e(name)}'>{e(name)}</h3>"
                     f"<pre>{e(json.dumps(schema, ensure_ascii=False, indent=2))}</pre>")
    parts.append("</body></html>")
    return Response("".join(parts), mimetype="text/html")
