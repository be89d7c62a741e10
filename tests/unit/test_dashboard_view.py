"""The dashboard's in-memory view (pure): states, the open-findings index, steps and holders."""
from __future__ import annotations

from datetime import datetime, timedelta, timezone

from services.dashboard import view as v
from shared.domain.workcal import calendar_for

NOW = datetime(2026, 11, 10, 3, 0, tzinfo=timezone.utc)      # Tuesday 10:00 in Vietnam


def row(code, due, **kw):
    return v.Row(code=code, agencies=("A",), handling_agency="A", received_at=due - timedelta(days=3),
                 due_at=due, **kw)


def test_states_overdue_due_soon_open_finished_and_paused():
    th = v.Thresholds(NOW, calendar_for)
    assert v.dossier_state(row("1", NOW - timedelta(hours=1)), th) == "overdue"
    assert v.dossier_state(row("2", NOW + timedelta(hours=20)), th) == "due_soon"   # Wed 06:00 UTC < Wed 10:00
    assert v.dossier_state(row("3", NOW + timedelta(days=3)), th) == "open"
    assert v.dossier_state(row("4", NOW - timedelta(days=1), resolved_at=NOW - timedelta(days=2)), th) == "finished"
    # a pause that began before the due date freezes the clock: not overdue
    paused = row("5", NOW - timedelta(hours=1), pause_start=NOW - timedelta(days=1))
    assert v.dossier_state(paused, th) == "open"
    assert th.overdue_hours(row("6", NOW - timedelta(days=7))) == 40.0               # 5 working days


def test_open_findings_index_follows_revisions():
    view = v.View()
    f = v.FindingRow("F1", "D", "OVERDUE", "critical", "open", "A", revision=1)
    view.replace_all([], [f], {}, NOW)
    assert [x.id for x in view.open_findings()] == ["F1"]
    view.put_finding(v.FindingRow("F1", "D", "OVERDUE", "critical", "resolved", "A", revision=2))
    assert view.open_findings() == [] and view.findings()[0].state == "resolved"
    view.put_finding(v.FindingRow("F1", "D", "OVERDUE", "critical", "open", "A", revision=1))   # stale
    assert view.open_findings() == []


def test_steps_name_the_holder_after_assignment_and_transfer():
    t = lambda h: NOW + timedelta(hours=h)   # noqa: E731
    doc = {"due_at": t(5), "events": [
        {"event_id": "e1", "type": "dossier.received", "occurred_at": t(0), "agency_code": "A", "seq": 0},
        {"event_id": "e2", "type": "dossier.assigned", "occurred_at": t(1), "agency_code": "A", "seq": 1},
        {"event_id": "e3", "type": "dossier.transferred", "occurred_at": t(6), "agency_code": "A", "seq": 2}],
        "transfers": [{"event_id": "e3", "to_agency_code": "B"}],
        "summary": {"actors": {"e1": {"id": "tn", "name": "Tiếp Nhận"}}, "assignees": {"e2": {"id": "cb", "name": "Cán Bộ"}}}}
    s = v.steps(doc, t(8))
    assert [(x["agency"], (x["officer"] or {}).get("name"), x["late"]) for x in s] == [
        ("A", "Tiếp Nhận", False), ("A", "Cán Bộ", True), ("B", None, True)]


def test_every_event_type_and_status_has_its_vietnamese_words():
    from services.dashboard.fmt import STATUS
    from services.dashboard.view import EVENT_NAMES
    from shared.contracts.events import EVENT_TYPES
    from shared.domain.engine.state import STATUSES

    assert set(EVENT_TYPES) <= set(EVENT_NAMES)
    assert set(STATUSES) | {None} <= set(STATUS)      # None: submitted online, not received yet
