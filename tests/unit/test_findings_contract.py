"""The `sla.findings` contract (shared/contracts/findings.py) between its writer and its reader.

The real sla handler (real legal engine, in-memory repository and bus) is driven over every engine
scenario of tests/unit/engine_scenarios: each message it publishes must be accepted by notify's
parser and carry exactly the contract's fields, every field of DESIGN.md §7 among them.
"""
from __future__ import annotations

import re
from datetime import datetime, timezone

import pytest

from shared.contracts import findings
from shared.platform.clock import VirtualClock
from shared.domain.engine import RULE_CODES
from shared.platform.messaging import InMemoryBus, encode
from services.notify.parsing import FindingError, parse_finding
from services.sla.dlq import Origin
from services.sla.handlers import SlaHandler
from services.sla.projection import Incoming
from services.sla.repository import InMemoryRepository

from helpers.scenarios import SCENARIOS, ctx, raw_event  # noqa: F401  (ctx: fixture)
from helpers.notify import finding

TOPIC = "sla.findings"


def _t(text) -> datetime:
    return datetime.fromisoformat(str(text)).astimezone(timezone.utc)


def emitted(sc: dict, ctx) -> list:
    """Every message the sla handler publishes while the scenario's events arrive (each at its
    recorded instant) and its checks fall due (the scheduler at each check's instant)."""
    code = "SC-" + re.sub(r"[^A-Za-z0-9._/-]", "-", sc["name"])[:60]
    first = next(s for s in sc["steps"] if "type" in s)
    clock = VirtualClock(_t(first.get("recorded", first["at"])))
    bus = InMemoryBus()
    handler = SlaHandler(InMemoryRepository(), bus, TOPIC, clock, ctx)
    handler.assign([0])
    for i, step in enumerate(sc["steps"]):
        if "type" in step:
            clock.set(max(clock.now(), _t(step.get("recorded", step["at"]))))
            raw = encode(raw_event(sc, i, step, code, ctx))
            assert handler.handle([Incoming(code, raw, 0, Origin("dossier.events", 0, i))]) == []
        else:
            clock.set(max(clock.now(), _t(step["now"])))
            handler.check_due([0])
    return bus.messages(TOPIC)


@pytest.fixture(scope="module")
def all_emitted(ctx):
    return [(sc["name"], m) for sc in SCENARIOS for m in emitted(sc, ctx)]


def test_every_message_sla_emits_is_accepted_by_notify_and_carries_the_documented_fields(all_emitted):
    assert len(all_emitted) > 50
    for name, m in all_emitted:
        value = m.value                                  # as notify decodes it from the wire
        assert set(findings.DOCUMENTED) <= set(value), (name, set(findings.DOCUMENTED) - set(value))
        assert set(value) <= set(findings.FIELDS), (name, set(value) - set(findings.FIELDS))
        assert m.key == value["dossier_code"]
        parsed = findings.parse(value)
        doc = parse_finding(value)
        assert doc["_id"] == value["finding_id"] and doc["revision"] == value["revision"]
        assert parsed["detected_at"] is not None and parsed["legal_basis"]
        assert (parsed["resolved_at"] is not None) == (parsed["state"] == "resolved"), name


def test_the_scenarios_cover_every_rule_state_and_revision_path(all_emitted):
    values = [m.value for _, m in all_emitted]
    assert {v["rule"] for v in values} == set(RULE_CODES)
    assert {v["state"] for v in values} == set(findings.STATES)
    assert {v["severity"] for v in values} == set(findings.SEVERITIES)
    assert max(v["revision"] for v in values) > 1


def test_roles_severities_and_states_have_one_definition():
    from shared.domain.engine import ruledata
    from services.notify import planning, policy, service
    assert ruledata.SEVERITIES is findings.SEVERITIES and ruledata.ROLES is findings.ROLES
    assert policy.SEVERITIES is findings.SEVERITIES and planning.SEVERITIES is findings.SEVERITIES
    assert not any(hasattr(m, "CHANGES") or hasattr(m, "STATES") for m in (planning, service))


def test_the_phantom_change_field_is_not_part_of_the_contract():
    assert "change" not in findings.FIELDS
    doc = parse_finding(finding(change="opened"))
    assert "change" not in doc
    assert "change" not in findings.parse(finding(change="whatever"))


@pytest.mark.parametrize("field,value", [
    ("responsible_role", None), ("responsible_role", "mayor"), ("detected_at", None),
    ("legal_basis", ""), ("revision", 0), ("revision", True), ("confidence", "sure"),
    ("overdue_working_hours", -1), ("resolved_at", "2026-11-23T03:00:00+00:00"),
    ("due_at", "2026-11-20T10:00:00"), ("agency_code", None), ("details", []),
])
def test_a_message_outside_the_contract_names_its_field(field, value):
    with pytest.raises(FindingError) as e:
        parse_finding(finding(**{field: value}))
    assert e.value.field == field


def test_resolved_at_is_read_with_the_resolved_state():
    out = findings.parse(finding(state="resolved", resolved_at="2026-11-23T10:00:00+07:00"))
    assert out["resolved_at"] == datetime(2026, 11, 23, 3, 0, tzinfo=timezone.utc)


# ----------------------------------------------------------------------------- form_data

def _msg(rule="STOP_NOTICE_MISSING", **over):
    m = {"finding_id": "F-1", "rule": rule, "state": "open", "severity": "warning",
         "dossier_code": "D-1", "agency_code": "A-1", "responsible_role": "one_stop_chief",
         "legal_basis": "Điều 21 Nghị định 118/2025/NĐ-CP", "detected_at": "2025-07-08T02:00:00+00:00",
         "revision": 1}
    m.update(over)
    return m


def test_form_data_flows_for_the_rules_whose_alert_carries_a_form():
    from shared.contracts.findings import parse
    got = parse(_msg(form_data={"applicant_name": "Trần Thị Bình", "reason": "Không còn nhu cầu",
                                "requested_at": "2025-07-08T08:00:00+07:00", "id_number": "079123456789"}))
    assert got["form_data"] == {"applicant_name": "Trần Thị Bình", "reason": "Không còn nhu cầu",
                                "requested_at": "2025-07-08T01:00:00+00:00"}     # unknown keys dropped


def test_form_data_is_dropped_for_any_other_rule():
    from shared.contracts.findings import parse
    assert parse(_msg(rule="OVERDUE", form_data={"applicant_name": "Trần Thị Bình"}))["form_data"] is None


@pytest.mark.parametrize("bad, field", [("x", "form_data"), ({"applicant_name": 5}, "form_data.applicant_name"),
                                        ({"proposed_at": "2025-07-08T08:00:00"}, "form_data.proposed_at")])
def test_bad_form_data_names_its_field(bad, field):
    from shared.contracts.findings import FindingError, parse
    with pytest.raises(FindingError) as e:
        parse(_msg(form_data=bad))
    assert e.value.field == field
