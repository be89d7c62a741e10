"""Reports over a period spanning 1/7/2025: each dossier judged under the rule set of its own
receipt (pause under 61/107, restart under 118), stopped dossiers in their own column and never
late, extensions counted. Summaries are built exactly as the sla worker builds them
(projection.update_summary + evaluate_dossier over the engine's state)."""
from __future__ import annotations

import uuid
from datetime import datetime, time
from pathlib import Path

import yaml

from services.sla import projection
from services.sla.reports import Params, tally
from shared.domain import engine, workcal
from shared.domain.catalog import catalog_from_records
from shared.domain.engine import EngineContext, default_rulesets
from shared.contracts.events import load_stored
from shared.domain.instants import TZ

SCEN = Path(__file__).parent / "engine_scenarios"
ONE_STOP = "000.00.17.H56"


def _ctx():
    records = yaml.safe_load((SCEN / "catalog.yaml").read_text(encoding="utf-8"))
    return EngineContext(catalog=catalog_from_records(records), calendars=workcal.calendar_for,
                         rulesets=default_rulesets())


def _ev(code, etype, at, data=None):
    data = dict(data or {})
    if etype == "received":
        data.update(procedure_code="T.5WD", channel=data.get("channel", "direct"),
                    components=["to-khai", "cccd"], applicant={"kind": "citizen", "name": "Trần Văn Bình"})
    elif etype == "supplement_requested":
        data.update(stage="handling", components=["cccd"], reason="Bản sao mờ")
    elif etype == "supplement_received":
        data.update(components=["cccd"])
    elif etype in ("stopped",):
        data.setdefault("reason", "Người nộp đề nghị dừng")
    elif etype == "resolved":
        data.setdefault("outcome", "approved")
    elif etype == "apology_issued":
        data.setdefault("reason", "Cần xác minh")
    return load_stored({"event_id": str(uuid.uuid4()), "type": f"dossier.{etype}", "dossier_code": code,
                        "occurred_at": at, "recorded_at": at, "agency_code": ONE_STOP, "data": data})


def _summary(code, steps, now, ctx):
    state, summary = engine.new_state(code), {}
    for etype, at, *data in steps:
        ev = _ev(code, etype, at, *(data or [None]))
        state = engine.apply(state, ev, ctx)
        projection.update_summary(summary, ev)
    _, summary, _ = projection.evaluate_dossier(engine, ctx, code, state, now, {}, 0, summary)
    return state, summary


def test_a_period_spanning_1_7_2025_judges_each_dossier_by_its_own_rule_set():
    ctx = _ctx()
    now = datetime.fromisoformat("2025-08-01T09:00:00+07:00")
    # the same facts one day apart across the boundary: supplement Wed 9:00 -> Thu 9:00
    same = lambda d0, d2, d3, res: [("received", f"{d0}T10:00:00+07:00"),                    # noqa: E731
                                    ("supplement_requested", f"{d2}T09:00:00+07:00"),
                                    ("supplement_received", f"{d3}T09:00:00+07:00"),
                                    ("resolved", res)]
    # A: received Mon 30/6 10:00 (61/107, pause): 40wh -> Mon 07-07 10:00, +8wh paused -> Tue 07-08 10:00
    a_state, a = _summary("A", same("2025-06-30", "2025-07-02", "2025-07-03", "2025-07-09T09:00:00+07:00"), now, ctx)
    # B: received Tue 1/7 10:00 (118, restart from Thu 07-03 09:00): due Thu 07-10 09:00
    b_state, b = _summary("B", same("2025-07-01", "2025-07-02", "2025-07-03", "2025-07-09T09:00:00+07:00"), now, ctx)
    assert (a_state.ruleset, a_state.supplement_policy) == ("nd61-107", "pause")
    assert (b_state.ruleset, b_state.supplement_policy) == ("nd118-2025", "restart")
    assert a["due_at"] == datetime.fromisoformat("2025-07-08T10:00:00+07:00")
    assert b["due_at"] == datetime.fromisoformat("2025-07-10T09:00:00+07:00")
    # C: overdue (due Mon 07-14 09:00), then stopped at the applicant's request; a later
    # resolution is not counted
    _, c = _summary("C", [("received", "2025-07-07T09:00:00+07:00"), ("stopped", "2025-07-15T09:00:00+07:00"),
                          ("resolved", "2025-07-16T09:00:00+07:00")], now, ctx)
    # D: extension requested, resolved before the due date
    _, d = _summary("D", [("received", "2025-07-07T09:00:00+07:00", {"channel": "vneid"}),
                          ("apology_issued", "2025-07-10T09:00:00+07:00",
                           {"new_appointment_at": "2025-07-16T09:00:00+07:00"}),
                          ("resolved", "2025-07-11T09:00:00+07:00")], now, ctx)
    for s in (a, b, c, d):
        s["handling_agency"] = ONE_STOP
    p = Params(None, datetime.combine(datetime(2025, 6, 15).date(), time(0), TZ),
               datetime.combine(datetime(2025, 8, 1).date(), time(0), TZ), None, None, "agency")
    [g] = tally([a, b, c, d], p).values()
    assert g["resolved_late"] == 1                     # A, judged by 61/107
    assert g["resolved_early"] == 2                    # B (before Thu 07-10) and D (before Mon 07-14)
    assert g["stopped"] == 1 and g["resolved_total"] == 3 and g["in_progress_total"] == 0
    assert g["extended"] == 1 and g["received_online"] == 1        # VNeID is online
    assert (a["ruleset"], b["ruleset"], c["ruleset"]) == ("nd61-107", "nd118-2025", "nd118-2025")
    # an open stopped dossier never counts as overdue in progress
    _, e = _summary("E", [("received", "2025-07-07T09:00:00+07:00"), ("stopped", "2025-07-15T09:00:00+07:00")], now, ctx)
    e["handling_agency"] = ONE_STOP
    [g] = tally([e], p).values()
    assert (g["stopped"], g["in_progress_overdue"], g["resolved_late"]) == (1, 0, 0)
