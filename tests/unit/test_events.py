from shared.contracts.events import validate_event

VALID = {
    "event_id": "3f1c2f7e-8a1d-4c7e-9c8e-0a1b2c3d4e5f",
    "type": "dossier.received",
    "dossier_code": "000.00.17.H56-241105-0001",
    "occurred_at": "2024-11-05T08:15:00+07:00",
    "agency_code": "000.00.17.H56",
    "data": {"procedure_code": "1.001193", "channel": "direct", "components": ["to-khai"],
             "applicant": {"kind": "citizen", "name": "Nguyễn Văn A"}},
}


def test_valid_received_event_loads():
    event, errors = validate_event(VALID)
    assert errors == []
    assert event["data"]["digitized"] == []


def test_every_error_reported_at_once():
    bad = dict(VALID, extra=1, data={"channel": "fax", "components": [], "applicant": {"kind": "x"}})
    event, errors = validate_event(bad)
    assert event is None
    fields = {e.field for e in errors}
    assert {"extra", "data.procedure_code", "data.channel", "data.applicant.kind", "data.applicant.name"} <= fields
