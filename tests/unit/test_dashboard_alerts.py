"""The dashboard's copy of notify's side of findings (services/dashboard/alerts.py): loading,
notify's change messages in any order, acknowledgements polled and published."""
from __future__ import annotations

from datetime import datetime, timezone

from services.dashboard.alerts import Alerts

T0 = datetime(2026, 11, 10, 3, 0, tzinfo=timezone.utc)
T1 = datetime(2026, 11, 10, 3, 5, 7, 123456, tzinfo=timezone.utc)


def _note(nid, kind="alert", level=0, **kw):
    return {"op": "notification", "finding_id": "F1", "notification": {
        "id": nid, "recipient": "r1", "channel": "email", "kind": kind, "level": level, "status": "pending",
        "created_at": T0.isoformat(), **kw}}


def test_an_outcome_read_before_its_plan_stands_and_a_sent_marker_wins():
    a = Alerts()
    a.apply({"op": "outcome", "id": "n1", "fields": {"status": "failed", "failed_at": T1.isoformat(),
                                                      "error": "550 no such user"}})
    a.apply(_note("n1"))
    a.apply(_note("n2"))
    a.apply({"op": "outcome", "id": "n2", "finding_id": "F1", "fields": {"status": "sent", "sent_at": T1}})
    a.apply({"op": "outcome", "id": "n2", "fields": {"status": "cancelled", "cancelled_at": T1}})
    _, notes, _ = a.of(["F1"])
    by = {n.id: n for n in notes["F1"]}
    assert (by["n1"].status, by["n1"].error, by["n1"].at) == ("failed", "550 no such user", T1)
    assert (by["n2"].status, by["n2"].at) == ("sent", T1)


def test_a_polled_acknowledgement_counts_once_and_stops_what_notify_stops():
    a = Alerts()
    a.replace_all([{"_id": "F1", "level": 1, "next_escalation_at": T0, "next_repeat_at": T0}], [], [])
    a.apply(_note("n1", "repeat"))
    a.apply(_note("n2", "alert", level=1))
    a.apply(_note("n3", "alert", level=1, reason="lateness"))
    # published by this process's own store (microseconds), then read back from `acks` (milliseconds)
    a.apply({"op": "ack", "finding_id": "F1", "by": "key:k1@X", "via": "dashboard", "at": T1, "note": "Đã giao"})
    a.put_ack({"finding_id": "F1", "by": "key:k1@X", "via": "dashboard", "note": "Đã giao",
               "at": T1.replace(microsecond=123000, tzinfo=None)})
    state, notes, acks = a.of(["F1"])
    assert [(x.by, x.note) for x in acks["F1"]] == [("key:k1@X", "Đã giao")]
    assert state["F1"].acked_at == T1 and state["F1"].next_escalation_at is None
    # a second acknowledgement, polled (the e-mail link): listed; the first one stays the finding's
    a.put_ack({"finding_id": "F1", "by": "person-2", "via": "link", "at": T1.replace(minute=9)})
    state, notes, acks = a.of(["F1"])
    assert [x.via for x in acks["F1"]] == ["dashboard", "link"] and state["F1"].acked_by == "key:k1@X"
    assert {n.id: n.status for n in notes["F1"]} == {"n1": "cancelled", "n2": "cancelled", "n3": "pending"}
