"""Machine error codes of shared.contracts.events and the normalised wire form."""
import copy
from datetime import datetime, timezone

import pytest

from shared.contracts.events import load_stored, redact, to_wire, validate_event

VALID = {
    "event_id": "3f1c2f7e-8a1d-4c7e-9c8e-0a1b2c3d4e5f", "type": "dossier.apology_issued",
    "dossier_code": "000.00.17.H56-241105-0001", "occurred_at": "2024-11-05T08:15:00+07:00",
    "agency_code": "000.00.17.H56",
    "data": {"new_appointment_at": "2024-11-12T16:00:00+07:00", "reason": "Cần xác minh thực địa"},
}


def codes(payload):
    event, errors = validate_event(payload)
    assert event is None
    return {(e.field, e.code) for e in errors}


@pytest.mark.parametrize("field,value,code", [
    ("occurred_at", "2024-11-05T08:15:00", "naive_datetime"),
    ("occurred_at", "hôm qua", "invalid_format"),
    ("occurred_at", 17, "invalid_format"),
    ("dossier_code", "mã có dấu", "invalid_format"),
    ("dossier_code", None, "null"),
    ("type", "dossier.lost", "not_allowed"),
    ("event_id", "123", "invalid_format"),
    ("data", [], "invalid_type"),
])
def test_envelope_codes(field, value, code):
    assert (field, code) in codes(dict(VALID, **{field: value}))


def test_nested_naive_and_missing():
    bad = copy.deepcopy(VALID)
    bad["data"]["new_appointment_at"] = "2024-11-12T16:00:00"
    del bad["data"]["reason"]
    assert codes(bad) == {("data.new_appointment_at", "naive_datetime"), ("data.reason", "required")}


def test_received_appointment_naive_rejected():
    e = {**VALID, "type": "dossier.received", "data": {
        "procedure_code": "1.001193", "channel": "online", "components": [],
        "applicant": {"kind": "citizen", "name": "Phạm Thị Dung"},
        "appointment_at": "2024-11-12T16:00:00"}}
    assert codes(e) == {("data.appointment_at", "naive_datetime")}


def test_duration_range_and_strict_int():
    e = {**VALID, "type": "dossier.consultation_requested",
         "data": {"to_agency_code": "000.00.18.H56", "due_in": {"value": "3", "unit": "wd"}}}
    assert ("data.due_in.value", "invalid_type") in codes(e)
    e["data"]["due_in"] = {"value": 0, "unit": "wd"}
    assert ("data.due_in.value", "out_of_range") in codes(e)


def test_to_wire_is_utc_and_stable():
    event, _ = validate_event(VALID)
    wire = to_wire(event)
    assert wire["occurred_at"] == "2024-11-05T01:15:00+00:00"
    assert wire["data"]["new_appointment_at"] == "2024-11-12T09:00:00+00:00"
    again, _ = validate_event(dict(VALID, occurred_at="2024-11-05T01:15:00Z"))
    assert to_wire(again) == wire
    stored = load_stored(dict(wire, recorded_at="2024-11-05T01:20:00+00:00"))
    assert stored["occurred_at"] == datetime(2024, 11, 5, 1, 15, tzinfo=timezone.utc)


def test_redact_nested():
    out = redact({"data": {"applicant": {"name": "A", "phone": "0909", "id_number": "0791",
                                         "email": "a@b.vn"}}, "list": [{"address": "x"}]})
    assert out == {"data": {"applicant": {"name": "A", "phone": "***", "id_number": "***",
                                          "email": "***"}}, "list": [{"address": "***"}]}
