"""The event contract v1 (DESIGN.md §4): marshmallow schemas, strict.

`validate_event(payload)` returns the list of errors (machine code, field path, message) for every
field at once, or the loaded event. The Kafka message value is the event as posted plus
`recorded_at`, the instant intake accepted it (set by intake, never by the client).
"""
from __future__ import annotations

import re
import threading
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

from marshmallow import EXCLUDE, RAISE, Schema, ValidationError, fields, validate

from shared.domain.codes import COMPONENT_ID, PROCEDURE_CODE

DOSSIER_CODE = re.compile(r"^[A-Za-z0-9._/-]{1,64}$")
# Dossier-code layouts this contract recognises (both pass DOSSIER_CODE; the contract accepts any
# code of that pattern): today's `<agency code>-YYMMDD-NNNN` (Circular 01/2018 practice, e.g.
# 000.00.17.H56-241105-0001) and Circular 04/2025/TT-VPCP's `MX1X2.Y1Y2Y3.Z1Z2-YYMMDD-AAXXXX`
# (from 25/01/2026 on national systems; the first part names the handling agency).
DOSSIER_CODE_FORMATS = {
    # the letters of the layout (M, X, Y, Z, A) are read as upper-case letters or digits: the
    # circular's full text was not read (LEGAL-118.md, medium confidence)
    "tt04-2025": re.compile(r"^[A-Z][0-9A-Z]{2}\.[0-9A-Z]{3}\.[0-9A-Z]{2}-\d{6}-[0-9A-Z]{6}$"),
    "tt01-2018": re.compile(r"^[0-9A-Za-z.]+-\d{6}-\d{4,}$"),
}
CHANNELS = ("direct", "postal", "online", "vneid")
ONLINE_CHANNELS = ("online", "vneid")       # submitted electronically (national portal, VNeID)
# Forms an event may name, in either numbering: Circular 01/2018/TT-VPCP (Mẫu 01–06, Decrees
# 61/107) or Circular 03/2025/TT-VPCP (Mẫu 01–07, Decree 118/2025).
FORM_CIRCULARS = ("01/2018/TT-VPCP", "03/2025/TT-VPCP")
AGENCY_CODE = re.compile(r"^[A-Za-z0-9._-]{1,64}$")

EVENT_TYPES = (
    "dossier.received", "dossier.supplement_requested", "dossier.supplement_received",
    "dossier.refused", "dossier.transferred", "dossier.assigned",
    "dossier.consultation_requested", "dossier.consultation_answered",
    "dossier.apology_issued", "dossier.paused", "dossier.resumed",
    "dossier.resolved", "dossier.returned", "dossier.withdrawn",
    "dossier.stopped", "dossier.submitted",
)


def dossier_code_format(code: str) -> str | None:
    """Which known layout a dossier code follows (`tt04-2025`, `tt01-2018`), None for another
    code the contract still accepts."""
    for name, pattern in DOSSIER_CODE_FORMATS.items():
        if pattern.match(code):
            return name
    return None


class _Strict(Schema):
    class Meta:
        unknown = RAISE


def _code(pattern: re.Pattern, what: str):
    return validate.Regexp(pattern, error=f"not a valid {what}")


# marshmallow 4 calls the naive case "invalid_awareness" (3.x called it "naive"): set both.
_INSTANT_ERRORS = {"naive": "must carry a UTC offset (e.g. +07:00)",
                   "invalid_awareness": "must carry a UTC offset (e.g. +07:00)",
                   "invalid": "not an ISO 8601 instant", "format": "not an ISO 8601 instant"}


def _Instant(required: bool = True, **kw):
    return fields.AwareDateTime(format="iso", required=required,
                                error_messages=dict(_INSTANT_ERRORS), **kw)


_Reason = lambda: fields.String(required=True, validate=validate.Length(min=1, max=2000))  # noqa: E731
def _Components(min_items: int = 0, **kw):
    return fields.List(fields.String(validate=_code(COMPONENT_ID, "component id")),
                       validate=validate.Length(min=min_items, max=100), **kw)


class Actor(_Strict):
    id = fields.String(required=True, validate=validate.Length(min=1, max=64))
    name = fields.String(validate=validate.Length(max=200))
    role = fields.String(validate=validate.Length(max=64))


class Officer(_Strict):
    id = fields.String(required=True, validate=validate.Length(min=1, max=64))
    name = fields.String(validate=validate.Length(max=200))


class Applicant(_Strict):
    kind = fields.String(required=True, validate=validate.OneOf(["citizen", "organization"]))
    name = fields.String(required=True, validate=validate.Length(min=1, max=300))
    id_number = fields.String(validate=validate.Regexp(r"^[0-9A-Za-z]{6,20}$", error="not a valid ID number"))
    phone = fields.String(validate=validate.Regexp(r"^\+?[0-9 .-]{6,20}$", error="not a valid phone number"))
    email = fields.Email()


class Duration(_Strict):
    value = fields.Integer(required=True, strict=True, validate=validate.Range(min=1, max=3650))
    unit = fields.String(required=True, validate=validate.OneOf(["wd", "wh", "cd"]))


class FormRef(_Strict):
    """The form an event's paper was issued on, in the numbering of either circular."""
    circular = fields.String(required=True, validate=validate.OneOf(FORM_CIRCULARS))
    number = fields.String(required=True, validate=validate.OneOf([f"{n:02d}" for n in range(1, 8)]))


class Received(_Strict):
    procedure_code = fields.String(required=True, validate=_code(PROCEDURE_CODE, "procedure code"))
    channel = fields.String(required=True, validate=validate.OneOf(list(CHANNELS)))
    components = _Components(required=True)
    digitized = _Components(load_default=list)
    # papers the system took from a connected database instead of the applicant (Đ17 k1b NĐ 118)
    reused = _Components()
    handling_agency_code = fields.String(validate=_code(AGENCY_CODE, "agency code"))
    applicant = fields.Nested(Applicant, required=True)
    appointment_at = _Instant(required=False)
    # online/VNeID: when the system received the dossier, before the counter's official receipt
    submitted_at = _Instant(required=False)


class SupplementRequested(_Strict):
    stage = fields.String(required=True, validate=validate.OneOf(["reception", "handling"]))
    components = _Components(min_items=1, required=True)
    reason = _Reason()
    form = fields.Nested(FormRef)


class SupplementReceived(_Strict):
    components = _Components(required=True)


class WithReason(_Strict):
    reason = _Reason()
    form = fields.Nested(FormRef)


class Stopped(_Strict):
    """Stopped at the applicant's request (Đ21 NĐ 118/2025; Mẫu 05 Circular 03/2025)."""
    reason = _Reason()
    requested_at = _Instant(required=False)    # when the applicant asked (portal or counter)
    form = fields.Nested(FormRef)


class Submitted(_Strict):
    """The system (national portal, VNeID) received an online dossier, before the one-stop's
    official receipt (Đ17 k2 NĐ 118/2025): the 8 working hours of Đ17 k2c run from here."""
    procedure_code = fields.String(required=True, validate=_code(PROCEDURE_CODE, "procedure code"))
    channel = fields.String(required=True, validate=validate.OneOf(list(ONLINE_CHANNELS)))


class Transferred(_Strict):
    to_agency_code = fields.String(required=True, validate=_code(AGENCY_CODE, "agency code"))


class Assigned(_Strict):
    officer = fields.Nested(Officer, required=True)


class ConsultationRequested(_Strict):
    to_agency_code = fields.String(required=True, validate=_code(AGENCY_CODE, "agency code"))
    due_in = fields.Nested(Duration, required=True)


class ConsultationAnswered(_Strict):
    from_agency_code = fields.String(required=True, validate=_code(AGENCY_CODE, "agency code"))


class ApologyIssued(_Strict):
    """Phiếu xin lỗi và hẹn lại ngày trả kết quả (61/107); under Decree 118/2025 the apology and
    extension request of Đ19 k6 (Phiếu đề nghị gia hạn thời gian giải quyết)."""
    new_appointment_at = _Instant()
    reason = _Reason()
    form = fields.Nested(FormRef)


class Pause(_Strict):
    reason = _Reason()
    legal_basis = fields.String(required=True, validate=validate.Length(min=1, max=500))


class Resolved(_Strict):
    outcome = fields.String(required=True, validate=validate.OneOf(["approved", "denied"]))
    note = fields.String(validate=validate.Length(max=2000))


class Empty(_Strict):
    pass


DATA_SCHEMAS: dict[str, type[Schema]] = {
    "dossier.received": Received,
    "dossier.supplement_requested": SupplementRequested,
    "dossier.supplement_received": SupplementReceived,
    "dossier.refused": WithReason,
    "dossier.transferred": Transferred,
    "dossier.assigned": Assigned,
    "dossier.consultation_requested": ConsultationRequested,
    "dossier.consultation_answered": ConsultationAnswered,
    "dossier.apology_issued": ApologyIssued,
    "dossier.paused": Pause,
    "dossier.resumed": Pause,
    "dossier.resolved": Resolved,
    "dossier.returned": Empty,
    "dossier.withdrawn": WithReason,
    "dossier.stopped": Stopped,
    "dossier.submitted": Submitted,
}


class Envelope(_Strict):
    event_id = fields.UUID(required=True)
    type = fields.String(required=True, validate=validate.OneOf(EVENT_TYPES))
    dossier_code = fields.String(required=True, validate=_code(DOSSIER_CODE, "dossier code"))
    occurred_at = _Instant()
    agency_code = fields.String(required=True, validate=_code(AGENCY_CODE, "agency code"))
    actor = fields.Nested(Actor)
    data = fields.Dict(required=True)


class StoredEnvelope(Envelope):
    """The Kafka message: the posted event plus `recorded_at`."""
    recorded_at = _Instant()


@dataclass(frozen=True)
class FieldError:
    code: str       # machine code: required, unknown_field, invalid, invalid_type…
    field: str      # dotted path, e.g. data.applicant.phone
    message: str

    def as_dict(self) -> dict:
        return {"code": self.code, "field": self.field, "message": self.message}


def _flatten(messages: Any, prefix: str = "") -> list[FieldError]:
    out: list[FieldError] = []
    if isinstance(messages, dict):
        for key, sub in messages.items():
            path = f"{prefix}.{key}" if prefix else str(key)
            if key == "_schema":
                path = prefix or "$"
            out.extend(_flatten(sub, path))
    elif isinstance(messages, list):
        if all(isinstance(m, str) for m in messages):
            for m in messages:
                out.append(FieldError(_code_of(m), prefix or "$", m))
        else:
            for m in messages:
                out.extend(_flatten(m, prefix))
    else:
        out.append(FieldError(_code_of(str(messages)), prefix or "$", str(messages)))
    return out


# marshmallow's messages (and ours above) -> stable machine codes; first match wins.
_CODES = (
    ("missing data for required field", "required"),
    ("unknown field", "unknown_field"),
    ("utc offset", "naive_datetime"),
    ("may not be null", "null"),
    ("not a valid mapping", "invalid_type"),
    ("not a valid string", "invalid_type"),
    ("not a valid integer", "invalid_type"),
    ("not a valid list", "invalid_type"),
    ("not a valid boolean", "invalid_type"),
    ("must be a json object", "invalid_type"),
    ("must be one of", "not_allowed"),
    ("length must be", "invalid_length"),
    ("longer than", "invalid_length"),
    ("shorter than", "invalid_length"),
    ("must be greater", "out_of_range"),
    ("must be less", "out_of_range"),
    ("iso 8601", "invalid_format"),
    ("not a valid", "invalid_format"),
)


def _code_of(message: str) -> str:
    m = message.lower()
    for needle, code in _CODES:
        if needle in m:
            return code
    return "invalid"


_schemas = threading.local()


def _schema(cls: type[Schema]) -> Schema:
    """One instance per schema class and thread: building a marshmallow Schema deep-copies its
    fields, which cost more than the load itself (load() keeps no state on the instance)."""
    cache = getattr(_schemas, "by_class", None)
    if cache is None:
        cache = _schemas.by_class = {}
    inst = cache.get(cls)
    if inst is None:
        inst = cache[cls] = cls()
    return inst


def validate_event(payload: Any, stored: bool = False) -> tuple[dict | None, list[FieldError]]:
    """Validate an event against the contract; returns (event, []) or (None, errors)."""
    if not isinstance(payload, dict):
        return None, [FieldError("invalid_type", "$", "an event must be a JSON object")]
    schema = _schema(StoredEnvelope if stored else Envelope)
    errors: list[FieldError] = []
    event = None
    try:
        event = schema.load(payload)
    except ValidationError as exc:
        errors.extend(_flatten(exc.messages))
    etype = payload.get("type")
    data = payload.get("data")
    if isinstance(etype, str) and etype in DATA_SCHEMAS and isinstance(data, dict):
        try:
            loaded = _schema(DATA_SCHEMAS[etype]).load(data)
            if event is not None:
                event["data"] = loaded
        except ValidationError as exc:
            errors.extend(_flatten(exc.messages, "data"))
    if errors:
        return None, errors
    event["event_id"] = str(event["event_id"])
    return event, []


def load_stored(value: dict) -> dict:
    """Parse a message read from `dossier.events` (instants become aware UTC datetimes).

    Raises ValueError naming every problem: a poison message goes to the dead-letter topic.
    """
    event, errors = validate_event(value, stored=True)
    if not errors:
        try:
            return to_utc(event)
        except OverflowError:       # e.g. 0001-01-01T00:00:00+07:00: valid ISO, no UTC form
            errors = out_of_range(event)
    raise ValueError("; ".join(f"{e.field}: {e.message}" for e in errors))


def out_of_range(obj: Any, path: str = "") -> list[FieldError]:
    """The instants of a loaded event that cannot be converted to UTC (field paths)."""
    if isinstance(obj, datetime):
        try:
            obj.astimezone(timezone.utc)
        except OverflowError:
            return [FieldError("out_of_range", path or "$", "instant out of range once in UTC")]
        return []
    if isinstance(obj, dict):
        return [e for k, v in obj.items() for e in out_of_range(v, f"{path}.{k}" if path else k)]
    if isinstance(obj, list):
        return [e for v in obj for e in out_of_range(v, path)]
    return []


def to_utc(obj: Any) -> Any:
    """Convert every aware datetime inside `obj` to UTC (stored instants are UTC, DESIGN.md §5)."""
    if isinstance(obj, datetime):
        return obj.astimezone(timezone.utc)
    if isinstance(obj, dict):
        return {k: to_utc(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [to_utc(v) for v in obj]
    return obj


# Personal data (Decree 13/2023): never in logs, alerts or what the CLI prints. Redacted by
# position (an applicant's fields other than kind and name), by shape (ID numbers, phone numbers,
# e-mail addresses inside any string, ID-sized integers) and by these key names.
PII_FIELDS = ("id_number", "phone", "email", "address")
APPLICANT_PUBLIC = ("kind", "name")
REDACTED = "***"
# A number glued to code characters (letters, digits, . - / _) is part of a code (dossier and
# agency codes, UUIDs), not a number of its own.
_EDGE_BEFORE = r"(?<![\w./-])"
_EDGE_AFTER = r"(?![\w/-])(?!\.\w)"
_SHAPES = re.compile(
    _EDGE_BEFORE + r"(?:"
    r"(?:\+84|0)(?:[ .]?\d){9,10}"          # phone: 0 or +84, then 9-10 digits, spaces/dots allowed
    r"|\d{12}|\d{9}"                         # ID numbers: CCCD (12 digits), CMND (9 digits)
    r")" + _EDGE_AFTER
    + r"|[\w.+-]+@[\w-]+(?:\.[\w-]+)+")          # e-mail address


def redact_text(text: str) -> str:
    """`text` with ID numbers, phone numbers and e-mail addresses replaced by '***'."""
    return _SHAPES.sub(REDACTED, text) if isinstance(text, str) else text


def redact(obj: Any) -> Any:
    """A copy of `obj` with citizens' personal data replaced by '***' (for logs and displays)."""
    if isinstance(obj, dict):
        out = {}
        for k, v in obj.items():
            key = redact_text(k) if isinstance(k, str) else k
            if k in PII_FIELDS:
                out[key] = REDACTED
            elif k == "applicant":
                out[key] = _applicant(v)
            else:
                out[key] = redact(v)
        return out
    if isinstance(obj, (list, tuple)):
        return [redact(v) for v in obj]
    if isinstance(obj, str):
        return redact_text(obj)
    if isinstance(obj, int) and not isinstance(obj, bool) and len(str(abs(obj))) in (9, 12):
        return REDACTED                        # an ID number, or a phone that lost its leading 0
    return obj


def _applicant(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: redact(v) if k in APPLICANT_PUBLIC else REDACTED for k, v in value.items()}
    return redact(value)


def to_wire(event: dict) -> dict:
    """A loaded event as JSON-ready data: instants as ISO 8601 strings in UTC (the normalised
    form intake publishes and hashes)."""
    def conv(obj):
        if isinstance(obj, datetime):
            return obj.astimezone(timezone.utc).isoformat()
        if isinstance(obj, dict):
            return {k: conv(v) for k, v in obj.items()}
        if isinstance(obj, list):
            return [conv(v) for v in obj]
        return obj
    return conv(event)
