"""Property tests of the legal engine (hypothesis): determinism, idempotence, pauses never
shorten the due date, and `next_check_at` is honest (nothing changes before it)."""
from __future__ import annotations

import uuid
from datetime import datetime, timedelta
from pathlib import Path

import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from shared.domain import workcal
from shared.domain.catalog import catalog_from_records
from shared.domain.engine import DossierState, EngineContext, apply, default_rulesets, evaluate, new_state, replay
from shared.contracts.events import load_stored

SCEN = Path(__file__).parent / "engine_scenarios"
CTX = EngineContext(catalog=catalog_from_records(yaml.safe_load((SCEN / "catalog.yaml").read_text(encoding="utf-8"))),
                    calendars=workcal.calendar_for, rulesets=default_rulesets())
BASE = datetime.fromisoformat("2024-11-04T07:00:00+07:00")
ONE_STOP, AGENCY, OTHER = "000.00.17.H56", "000.00.20.H56", "000.00.30.H56"

KINDS = ["supplement_requested", "supplement_received", "transferred", "assigned", "consultation_requested",
         "consultation_answered", "apology_issued", "paused", "resumed", "resolved", "returned", "withdrawn"]


def _data(kind: str, draw_int) -> tuple[dict, str]:
    if kind == "supplement_requested":
        stage = ["reception", "handling"][draw_int(0, 1)]
        return {"stage": stage, "components": [["cccd"], ["so-ho-khau"]][draw_int(0, 1)], "reason": "Thiếu"}, \
            (ONE_STOP if stage == "reception" else AGENCY)
    if kind == "supplement_received":
        return {"components": ["cccd"]}, ONE_STOP
    if kind == "transferred":
        return {"to_agency_code": AGENCY}, ONE_STOP
    if kind == "assigned":
        return {"officer": {"id": "cb-1"}}, AGENCY
    if kind == "consultation_requested":
        return {"to_agency_code": OTHER, "due_in": {"value": draw_int(1, 5), "unit": ["wd", "wh", "cd"][draw_int(0, 2)]}}, AGENCY
    if kind == "consultation_answered":
        return {"from_agency_code": OTHER}, OTHER
    if kind == "apology_issued":
        return {"new_appointment_at": (BASE + timedelta(days=draw_int(7, 20))).isoformat(), "reason": "Chậm"}, AGENCY
    if kind in ("paused", "resumed"):
        return {"reason": "Xác minh", "legal_basis": "Điều 17"}, AGENCY
    if kind == "resolved":
        return {"outcome": "approved"}, AGENCY
    if kind == "withdrawn":
        return {"reason": "Rút hồ sơ"}, ONE_STOP
    return {}, ONE_STOP


# built once: a strategy built inside every draw is labelled (hashed) again each time
_CHANNELS = st.sampled_from(["direct", "online"])
_COMPONENTS = st.sampled_from([["to-khai", "cccd"], ["to-khai"], ["to-khai", "cccd", "x"]])
_KINDS = st.sampled_from(KINDS)
_LAGS = st.sampled_from([0, 0, 0, 5, 60 * 30])


@st.composite
def histories(draw, procedure: str = "T.5WD"):
    """A receipt (sometimes not first) and up to 10 further events at random instants."""
    n = draw(st.integers(0, 10))
    draw_int = lambda a, b: draw(st.integers(a, b))  # noqa: E731
    recv_min = draw(st.integers(0, 6 * 24 * 60))
    specs = [("received", recv_min, {"procedure_code": procedure, "channel": draw(_CHANNELS),
                                     "components": draw(_COMPONENTS),
                                     "handling_agency_code": AGENCY,
                                     "applicant": {"kind": "citizen", "name": "Phạm Thị Dung"}}, ONE_STOP)]
    t = recv_min
    for _ in range(n):
        kind = draw(_KINDS)
        t += draw(st.integers(0, 3 * 24 * 60))
        data, agency = _data(kind, draw_int)
        specs.append((kind, t, data, agency))
    if draw(st.booleans()) and len(specs) > 1:       # the receipt arrives late sometimes
        i = draw(st.integers(1, len(specs) - 1))
        specs.insert(i, specs.pop(0))
    events = []
    for i, (kind, minute, data, agency) in enumerate(specs):
        at = BASE + timedelta(minutes=minute)
        lag = draw(_LAGS)
        events.append(load_stored({
            "event_id": str(uuid.UUID(int=draw(st.integers(0, 2**64)) * 1000 + i)),
            "type": f"dossier.{kind}", "dossier_code": "P-1", "occurred_at": at.isoformat(),
            "recorded_at": (at + timedelta(minutes=lag)).isoformat(), "agency_code": agency, "data": data}))
    return events


PROPS = settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@PROPS
@given(histories())
def test_replay_is_deterministic_and_round_trips(events):
    a, b = replay(events, CTX), replay(events, CTX)
    assert a == b
    assert DossierState.from_doc(a.to_doc()) == a


@PROPS
@given(histories())
def test_applying_every_event_twice_is_idempotent(events):
    once = replay(events, CTX)
    s = new_state("P-1")
    for ev in events:
        s = apply(apply(s, ev, CTX), ev, CTX)
    assert s == once
    s = once
    for ev in events:                        # the whole history again changes nothing
        s = apply(s, ev, CTX)
    assert s == once


@PROPS
@given(histories())
def test_pauses_never_shorten_the_due_date(events):
    s, previous = new_state("P-1"), None
    for ev in events:
        s = apply(s, ev, CTX)
        if previous is not None and s.due_at is not None:
            assert s.due_at >= previous, "an issued due date moved earlier"
        previous = s.due_at if s.due_at is not None else previous
    without = [e for e in events if e["type"] not in ("dossier.paused", "dossier.resumed",
                                                      "dossier.supplement_requested", "dossier.supplement_received")]
    if any(e["type"] == "dossier.received" for e in without):
        base = replay(without, CTX)
        assert s.due_at >= base.due_at


@PROPS
@given(histories(), st.integers(0, 40 * 24 * 60))
def test_nothing_changes_before_next_check_at(events, minutes):
    s = replay(events, CTX)
    now = BASE + timedelta(minutes=minutes)
    ev = evaluate(s, now, CTX)
    seen = {(f.finding_id, f.state) for f in ev.findings}
    if ev.next_check_at is None:
        later = now + timedelta(days=90)
    else:
        assert ev.next_check_at > now
        later = ev.next_check_at - timedelta(microseconds=1)
    assert {(f.finding_id, f.state) for f in evaluate(s, later, CTX).findings} == seen
