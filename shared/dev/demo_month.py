"""`motcua demo --month`: a scripted month of one-stop work played on the rehearsal clock.

`month_script(...)` is pure: the steps (a local instant, the events a counter posts then, the
alerts an agency acknowledges then, and how long to let the workers run) for six dossiers that
show every kind of mail — receipt, supplement, apology, lateness, escalation by lateness,
acknowledgement, repeats, closing notices and daily digests — plus a few ordinary receipts.
`play(...)` sets the clock file to each step, posts, acknowledges, and waits.
"""
from __future__ import annotations

import time
import uuid
from dataclasses import dataclass, field
from datetime import date, datetime, time as dtime, timedelta, timezone
from random import Random

from shared.domain.instants import TZ

# (story, procedure code, components left out): the procedures are the shipped catalog's
STORIES = [
    ("on_time", "1.001193", 0),        # same-day, resolved and returned the same day
    ("supplement", "1.004884", 0),     # 5 wd, supplement requested and received: the clock pauses
    ("apology", "1.004873", 0),        # 3 wd, apology before the due date, resolved late
    ("acknowledged", "1.004873", 0),   # 3 wd, overdue, acknowledged, escalated by lateness, resolved
    ("unacknowledged", "1.000689", 0),  # 3 wd, overdue all month: repeats, escalation, digests
    ("incomplete", "1.000689", 1),     # received without a required component
]


@dataclass
class Step:
    at: datetime                                   # UTC
    events: list[dict] = field(default_factory=list)
    acks: list[str] = field(default_factory=list)  # dossier codes whose OVERDUE finding is acknowledged
    wait: float = 2.0                              # seconds the workers get at this instant
    label: str = ""


def _working_days(cal, start: date, n: int) -> list[date]:
    days, d = [], start
    while len(days) < n:
        if cal.is_working_day(d):
            days.append(d)
        d += timedelta(days=1)
    return days


def _at(d: date, hh: int, mm: int = 0) -> datetime:
    return datetime.combine(d, dtime(hh, mm), TZ).astimezone(timezone.utc)


def month_script(catalog, directory, start: datetime, *, days: int = 30, seed: int = 0,
                 digest_wait: float = 11.0, step_wait: float = 2.0) -> list[Step]:
    """The steps of a rehearsal month from the first working day at or after `start`."""
    from shared.domain.workcal import calendar_for

    rng = Random(seed)
    cal = calendar_for("default")
    first = start.astimezone(TZ).date()
    end = first + timedelta(days=days)
    wd = _working_days(cal, first, 40)
    communes = [a for a in directory if (a.level or "").lower() == "xã"] or [a for a in directory if a.parent]
    if not communes:
        raise ValueError("the directory has no agency to play the month at")
    steps: dict[datetime, Step] = {}

    def step(t: datetime) -> Step:
        return steps.setdefault(t, Step(t, wait=step_wait))

    def ev(etype, code, agency, t, data):
        step(t).events.append({"event_id": str(uuid.UUID(int=rng.getrandbits(128), version=4)), "type": etype,
                               "dossier_code": code, "occurred_at": t.isoformat(), "agency_code": agency,
                               "data": data, "actor": {"id": "cb-demo-01", "name": "Lý Thị Ngân",
                                                       "role": "counter"}})

    seq = rng.randint(1000, 8000)
    for i, (story, code, missing) in enumerate(STORIES):
        proc = catalog.get(code)
        if proc is None:
            continue
        agency = communes[i % len(communes)].code
        day0 = wd[2] if story == "incomplete" else wd[0]
        received = _at(day0, 8, 30 + 5 * i)
        dossier = f"{agency}-{day0:%y%m%d}-{seq + i:04d}"
        required = list(proc.required_component_ids())
        comps = required[:-missing] if missing and len(required) > missing else required
        name = rng.choice(["Nguyễn Văn An", "Trần Thị Bình", "Lê Minh Châu", "Phạm Ngọc Dũng", "Võ Thu Hạnh"])
        ev("dossier.received", dossier, agency, received, {
            "procedure_code": code, "channel": ["direct", "online"][i % 2], "components": comps,
            "digitized": comps, "applicant": {"kind": "citizen", "name": name}})
        if story == "incomplete":
            continue
        ev("dossier.transferred", dossier, agency, received + timedelta(minutes=20), {"to_agency_code": agency})
        if story == "on_time":
            ev("dossier.resolved", dossier, agency, _at(day0, 10, 30), {"outcome": "approved"})
            ev("dossier.returned", dossier, agency, _at(day0, 14, 0), {})
        elif story == "supplement":
            ev("dossier.supplement_requested", dossier, agency, _at(wd[1], 9, 0), {
                "stage": "handling", "components": required[:1],
                "reason": "Bản sao giấy tờ chưa được chứng thực, đề nghị bổ sung"})
            ev("dossier.supplement_received", dossier, agency, _at(wd[4], 9, 0), {"components": required[:1]})
            ev("dossier.resolved", dossier, agency, _at(wd[6], 10, 0), {"outcome": "approved"})
            ev("dossier.returned", dossier, agency, _at(wd[6], 15, 0), {})
        elif story == "apology":
            ev("dossier.apology_issued", dossier, agency, _at(wd[2], 15, 0), {
                "new_appointment_at": _at(wd[5], 16, 0).isoformat(),
                "reason": "Cần xác minh thông tin hộ tịch tại nơi cư trú trước đây"})
            ev("dossier.resolved", dossier, agency, _at(wd[5], 10, 0), {"outcome": "approved"})
            ev("dossier.returned", dossier, agency, _at(wd[5], 15, 0), {})
        elif story == "acknowledged":
            step(_at(wd[4], 10, 0)).acks.append(dossier)
            ev("dossier.resolved", dossier, agency, _at(wd[12], 10, 0), {"outcome": "approved"})
            ev("dossier.returned", dossier, agency, _at(wd[12], 15, 0), {})
    # ordinary weekly receipts, resolved on time: the report has more than the six stories
    proc = catalog.get("1.004884")
    if proc is not None:
        for k, n in enumerate((5, 10, 15)):
            agency = communes[(k + 1) % len(communes)].code
            dossier = f"{agency}-{wd[n]:%y%m%d}-{seq + 10 + k:04d}"
            comps = list(proc.required_component_ids())
            ev("dossier.received", dossier, agency, _at(wd[n], 9, 0), {
                "procedure_code": proc.code, "channel": "online", "components": comps, "digitized": comps,
                "applicant": {"kind": "citizen", "name": "Bùi Thanh Sơn"}})
            ev("dossier.resolved", dossier, agency, _at(wd[n + 3], 14, 0), {"outcome": "approved"})
    # every day: the digest window on working days (the scheduler must run inside it), the end
    # of the office day, and noon on days off
    d = first
    while d < end:
        if cal.is_working_day(d):
            s = step(_at(d, 7, 40))
            s.wait, s.label = max(s.wait, digest_wait), "digest"
            step(_at(d, 16, 30))
        else:
            step(_at(d, 12, 0))
        d += timedelta(days=1)
    return [s for t, s in sorted(steps.items()) if t.astimezone(TZ).date() < end and t >= start.astimezone(timezone.utc)]


def play(steps: list[Step], clock, *, post, acknowledge, say=print, sleep=time.sleep) -> dict:
    """Set the clock to each step, post its events, acknowledge its alerts, let the workers run."""
    done = {"events": 0, "acks": 0}
    day = None
    for s in steps:
        clock.set(s.at)
        local = s.at.astimezone(TZ)
        if local.date() != day:
            day = local.date()
            say(f"{local:%a %d/%m/%Y}")
        for e in s.events:
            post(e)
            done["events"] += 1
        for code in s.acks:
            acknowledge(code)
            done["acks"] += 1
        sleep(s.wait)
    return done
