"""Contract v1 additions for Decree 118/2025 (additive): dossier.stopped, VNeID, the forms of
either circular, submitted_at/reused on receipt, Circular 04/2025 dossier codes. The compiled fast
path agrees with marshmallow on each (the exhaustive tests of test_eventcheck.py cover the
examples; these pin the new values)."""
import copy

import pytest

from services.intake.openapi import example_event
from shared.contracts.eventcheck import accept, accept_stored
from shared.contracts.events import (EVENT_TYPES, dossier_code_format, load_stored, to_wire,
                           validate_event)


def _both(payload):
    event, errors = validate_event(payload)
    fast = accept(payload)
    if event is None:
        assert fast is None
        return None, {(e.field, e.code) for e in errors}
    assert fast == to_wire(event)
    stored = dict(to_wire(event), recorded_at="2024-11-05T01:20:00+00:00")
    assert accept_stored(stored) == load_stored(stored)
    return fast, set()


def test_stopped_is_a_type_with_reason_and_optional_request_instant_and_form():
    assert "dossier.stopped" in EVENT_TYPES
    e = example_event("dossier.stopped")
    ok, _ = _both(e)
    assert ok["data"]["form"] == {"circular": "03/2025/TT-VPCP", "number": "05"}
    del e["data"]["reason"]
    _, errors = _both(e)
    assert errors == {("data.reason", "required")}


@pytest.mark.parametrize("channel,ok", [("vneid", True), ("online", True), ("direct", True),
                                        ("postal", True), ("VNeID", False), ("zalo", False)])
def test_vneid_channel(channel, ok):
    e = example_event("dossier.received")
    e["data"]["channel"] = channel
    event, errors = _both(e)
    assert (event is not None) == ok, errors


def test_received_submitted_at_and_reused():
    e = example_event("dossier.received")
    event, _ = _both(e)
    assert event["data"]["submitted_at"] == "2024-11-04T13:10:00+00:00"
    assert event["data"]["reused"] == ["giay-chung-sinh"]
    bad = copy.deepcopy(e)
    bad["data"]["submitted_at"] = "2024-11-04T20:10:00"
    bad["data"]["reused"] = ["CCCD"]
    _, errors = _both(bad)
    assert errors == {("data.submitted_at", "naive_datetime"), ("data.reused.0", "invalid_format")}
    # absent stays absent: events posted before this version normalise (and hash) as before
    plain = copy.deepcopy(e)
    del plain["data"]["submitted_at"], plain["data"]["reused"]
    event, _ = _both(plain)
    assert "reused" not in event["data"] and "submitted_at" not in event["data"]


@pytest.mark.parametrize("form,ok", [
    ({"circular": "01/2018/TT-VPCP", "number": "05"}, True),
    ({"circular": "03/2025/TT-VPCP", "number": "07"}, True),
    ({"circular": "03/2025/TT-VPCP", "number": "08"}, False),
    ({"circular": "02/2017/TT-VPCP", "number": "04"}, False),
    ({"circular": "01/2018/TT-VPCP", "number": 4}, False),
    ({"circular": "01/2018/TT-VPCP"}, False),
])
def test_forms_of_either_circular(form, ok):
    for etype in ("dossier.apology_issued", "dossier.supplement_requested", "dossier.refused",
                  "dossier.stopped"):
        e = example_event(etype)
        e["data"]["form"] = form
        event, errors = _both(e)
        assert (event is not None) == ok, (etype, errors)


@pytest.mark.parametrize("code,layout", [
    ("000.00.17.H56-241105-0001", "tt01-2018"),
    ("H56.22.10-250701-0001", "tt01-2018"),
    ("M01.234.56-260125-AB0001", "tt04-2025"),
    ("G22.001.04-260201-VN0123", "tt04-2025"),
    ("HS/2024/77", None),
])
def test_both_dossier_code_layouts_are_accepted(code, layout):
    assert dossier_code_format(code) == layout
    e = example_event("dossier.returned")
    e["dossier_code"] = code
    event, errors = _both(e)
    assert event is not None, errors
