"""Evaluation of the rules of LEGAL.md on a dossier state, and reconciliation of findings.

`evaluate(state, now, ctx)` gives the findings that hold at `now` and `next_check_at`, the earliest
instant at which a time-based rule's answer can change without a new event. One small function per
rule; titles, citations, severities, roles and parameters come from the rule set the dossier was
received under (shared/data/rules/). `reconcile()` compares with the stored findings and says what
changed (opened / updated / escalated / resolved), with a revision per finding.

Resolution policy (documented in docs/legal-engine.md): condition rules (DUE_SOON, APOLOGY_MISSING,
OVERDUE, RESULT_NOT_RETURNED, CONSULTATION_OVERDUE, SUPPLEMENT_STALLED, BYPASSED_ONE_STOP,
RECEIVED_INCOMPLETE) resolve as soon as the condition stops holding; record rules (a violation that
happened: RECEIVED_EXTRA, SUPPLEMENT_REPEATED, SUPPLEMENT_OUT_OF_LIST, TRANSFER_LATE, APOLOGY_LATE,
RESCHEDULED_TWICE, BACKDATED_EVENT) stay open until the dossier is closed (returned, refused,
withdrawn).
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass, field, replace
from datetime import datetime, time, timedelta, timezone
from typing import Any, Callable

from shared.contracts import findings
from shared.domain.engine.ruledata import RuleSet, RuleSpec, working_hours
from shared.domain.engine.state import CLOSED, FINISHED, HANDLING_EVENTS, ONLINE_CHANNELS, DossierState, hours
from shared.domain.instants import TZ, ensure_utc, stored_utc
from shared.domain.limits import Limit

ZERO = timedelta(0)


# ----------------------------------------------------------------------------- findings

@dataclass(frozen=True)
class Finding:
    finding_id: str
    rule: str
    state: str                          # open | escalated | resolved
    severity: str
    dossier_code: str
    procedure_code: str | None
    agency_code: str | None             # the responsible agency
    responsible_role: str
    legal_basis: str                    # Vietnamese citation
    title: str                          # Vietnamese title
    requirement: str                    # what the law requires now (Vietnamese)
    confidence: str
    detected_at: datetime
    due_at: datetime | None
    overdue_working_hours: float | None
    details: dict
    ruleset: str
    revision: int = 0
    article: str = ""                   # the article of the rule set's decree that judged it
    verified_against: str = ""          # what that wording was verified against
    form_data: dict | None = None       # what the attached form prints (findings.FORM_DATA_RULES)

    def to_message(self, revision: int | None = None) -> dict:
        """The `sla.findings` message (shared/contracts/findings.py) with its revision."""
        msg = {name: getattr(self, name) for name in _MESSAGE_FIELDS}
        msg["details"] = dict(self.details)
        if self.form_data is None:
            del msg["form_data"]
        if revision is not None:
            msg["revision"] = revision
        return msg


# every field of the findings contract a Finding carries (`resolved_at` is set by reconcile)
_MESSAGE_FIELDS = tuple(name for name in findings.FIELDS if name in Finding.__dataclass_fields__)


def finding_id(ruleset: str, rule: str, dossier_code: str, discriminator: str = "") -> str:
    """Deterministic: the same violation of the same dossier always has the same id."""
    digest = hashlib.sha1(f"{ruleset}|{rule}|{dossier_code}|{discriminator}".encode("utf-8")).hexdigest()
    return f"{rule}-{digest[:16]}"


@dataclass(frozen=True)
class Evaluation:
    findings: list[Finding]
    next_check_at: datetime | None
    now: datetime
    closure: dict = field(default_factory=dict)     # how the dossier ended (for resolved OVERDUE)

    def rules(self) -> set[str]:
        return {f.rule for f in self.findings}


@dataclass(frozen=True)
class FindingChange:
    kind: str                           # opened | updated | escalated | resolved
    finding_id: str
    message: dict                       # the finding message after the change (with revision)


def _iso(t: datetime | None) -> str | None:
    return t.astimezone(timezone.utc).isoformat() if t is not None else None


# ----------------------------------------------------------------------------- running-time helpers

class _Eval:
    """One evaluation: the state, the instant, the calendar, the rule set; collects findings."""

    def __init__(self, state: DossierState, now: datetime, ctx):
        self.s = state
        self.now = now
        self.ctx = ctx
        first = state.events[0] if state.events else None
        if state.ruleset:
            self.rs: RuleSet = ctx.rulesets.get(state.ruleset)
        else:
            day = (first.occurred_at if first else now).astimezone(TZ).date()
            self.rs = ctx.rulesets.for_date(day)
        self.cal = ctx.calendars(state.office or ctx.office_for(first.agency_code if first else None))
        self.findings: list[Finding] = []
        self.wakes: list[datetime] = []
        op = state.open_pause
        self.stopped_at: datetime | None = op.start if op is not None else None
        self.intervals = _merge([(p.start, p.end) for p in state.pauses
                                 if p.counted and p.end is not None
                                 and (state.clock_start is None or p.start >= state.clock_start)])

    # -- time
    def t_eff(self) -> datetime:
        """`now`, or the instant the clock stopped while a counted pause is open."""
        return self.stopped_at if self.stopped_at is not None else self.now

    def running_between(self, a: datetime, b: datetime) -> timedelta:
        """Working time between a and b while the clock ran (counted pauses removed)."""
        if b <= a:
            return ZERO
        total = self.cal.working_between(a, b)
        for ps, pe in self.intervals:
            lo, hi = max(ps, a), min(pe, b)
            if hi > lo:
                total -= self.cal.working_between(lo, hi)
        return max(total, ZERO)

    def running_add(self, a: datetime, d: timedelta) -> datetime:
        """The instant at which running working time `d` has passed since `a`."""
        t = a
        for ps, pe in self.intervals:
            if pe <= t:
                continue
            if ps > t:
                seg = self.cal.working_between(t, ps)
                if seg >= d:
                    break
                d -= seg
            t = max(t, pe)
        return self.cal.add_working(t, d) if d > ZERO else t

    def wake(self, t: datetime | None) -> None:
        if t is not None and t > self.now:
            self.wakes.append(t)

    # -- findings
    def spec(self, code: str) -> RuleSpec:
        return self.rs[code]

    @property
    def handling_agency(self) -> str | None:
        s = self.s
        return s.handling_agency_code or s.current_agency_code or s.receiving_agency_code

    @property
    def one_stop(self) -> str | None:
        s = self.s
        return s.receiving_agency_code or (s.events[0].agency_code if s.events else None)

    def add(self, code: str, *, agency: str | None, details: dict, discriminator: str = "",
            due_at: datetime | None = None, overdue: float | None = None, escalated: bool = False,
            stage: str | None = None) -> None:
        spec = self.spec(code)
        role = spec.escalate_to if escalated and spec.escalate_to else spec.responsible
        if stage == "reception" and spec.reception_responsible:
            role = spec.reception_responsible      # a fault of the receiving unit, not the handler
        self.findings.append(Finding(
            finding_id=finding_id(self.rs.id, code, self.s.dossier_code, discriminator),
            rule=code, state="escalated" if escalated else "open", severity=spec.severity,
            dossier_code=self.s.dossier_code, procedure_code=self.s.procedure_code,
            agency_code=agency, responsible_role=role, legal_basis=spec.citation, title=spec.title,
            requirement=spec.requirement, confidence=spec.confidence, detected_at=self.now,
            due_at=due_at, overdue_working_hours=overdue, details=details, ruleset=self.rs.id,
            article=spec.article, verified_against=spec.verified_against,
            form_data=form_data(self.s, code)))

    # -- shared facts
    @property
    def closed(self) -> bool:
        return self.s.status in CLOSED

    @property
    def finished(self) -> bool:
        return self.s.status in FINISHED or self.s.resolved_at is not None

    def clock_applies(self) -> bool:
        s = self.s
        return s.received and s.due_at is not None and s.clock_start is not None and not self.finished

    def limit_running(self) -> timedelta:
        return self.running_between(self.s.clock_start, self.s.due_at)

    def notice(self, code: str) -> timedelta:
        return working_hours(self.spec(code).params["notice"])


def form_data(s: DossierState, code: str) -> dict | None:
    """What the form attached to this rule's alert prints beyond the finding (the applicant's
    name, the reason, the dates of the request), from the dossier's events; None for a rule
    whose alert carries no form, so the name goes nowhere else."""
    form = findings.FORM_DATA_RULES.get(code)
    if form is None:
        return None
    out: dict[str, Any] = {"applicant_name": s.applicant_name}
    if form == "apology" and s.apologies:
        latest = s.apologies[-1]                 # the extension already requested: its own words
        out.update(reason=latest.reason or None, proposed_at=_iso(latest.new_appointment_at))
    elif form == "stop_notice":
        out.update(reason=s.stop_reason, requested_at=_iso(s.stop_requested_at))
    out = {k: v for k, v in out.items() if v}
    return out or None


def _merge(intervals):
    out: list[tuple[datetime, datetime]] = []
    for a, b in sorted(intervals):
        if out and a <= out[-1][1]:
            out[-1] = (out[-1][0], max(out[-1][1], b))
        else:
            out.append((a, b))
    return out


# ----------------------------------------------------------------------------- the rules

def rule_received_incomplete(e: _Eval) -> None:
    s = e.s
    still = [c for c in s.missing_at_receipt if c in s.still_missing]
    if s.received and s.missing_at_receipt and still and not e.closed:
        e.add("RECEIVED_INCOMPLETE", agency=e.one_stop,
              details={"missing_components": list(s.missing_at_receipt), "still_missing": still})


def rule_received_extra(e: _Eval) -> None:
    s = e.s
    if s.received and s.extra_at_receipt and not e.closed:
        e.add("RECEIVED_EXTRA", agency=e.one_stop, details={"extra_components": list(s.extra_at_receipt)})


def rule_supplement_repeated(e: _Eval) -> None:
    if e.closed:
        return
    groups: dict[tuple[str, str], list] = {}
    for r in e.s.supplements:
        groups.setdefault((r.agency_code, r.stage), []).append(r)
    for (agency, stage), reqs in sorted(groups.items()):
        if len(reqs) >= 2:
            e.add("SUPPLEMENT_REPEATED", agency=agency, discriminator=f"{agency}|{stage}", stage=stage,
                  details={"stage": stage, "requests": len(reqs),
                           "requested_at": [_iso(r.requested_at) for r in reqs]})


def rule_supplement_out_of_list(e: _Eval) -> None:
    if e.closed:
        return
    for r in e.s.supplements:
        if r.out_of_list:
            e.add("SUPPLEMENT_OUT_OF_LIST", agency=r.agency_code, discriminator=str(r.index), stage=r.stage,
                  details={"request_index": r.index, "stage": r.stage,
                           "components": list(r.out_of_list)})


def transfer_deadline(e: _Eval) -> datetime | None:
    """When the one-stop must have transferred the dossier (None: no transfer expected)."""
    s = e.s
    if not s.received or s.clock_start is None or not s.handling_agency_code \
            or s.handling_agency_code == s.receiving_agency_code:
        return None
    spec = e.spec("TRANSFER_LATE")
    cal, cs = e.cal, s.clock_start
    if s.channel in ONLINE_CHANNELS:
        return cal.add_working(cs, working_hours(spec.params["online_grace"]))
    local = cs.astimezone(TZ)
    if local.time() < spec.params["cutoff"]:
        return cal.end_of_working_day(local.date())
    d = local.date() + timedelta(days=1)
    for _ in range(60):
        if cal.is_working_day(d):
            break
        d += timedelta(days=1)
    return cal.next_working_instant(datetime.combine(d, time(0, 0), TZ))


def rule_transfer_late(e: _Eval) -> None:
    deadline = transfer_deadline(e)
    if deadline is None or e.closed:
        return
    first = e.s.transfers[0] if e.s.transfers else None
    if first is None:
        if e.finished:
            return
        if e.now > deadline:
            e.add("TRANSFER_LATE", agency=e.one_stop, due_at=deadline,
                  overdue=hours(e.cal.working_between(deadline, e.now)),
                  details={"channel": e.s.channel, "transferred_at": None})
        else:
            e.wake(deadline + timedelta(microseconds=1))
    elif first.at > deadline:
        e.add("TRANSFER_LATE", agency=e.one_stop, due_at=deadline,
              details={"channel": e.s.channel, "transferred_at": _iso(first.at),
                       "late_working_hours": hours(e.cal.working_between(deadline, first.at))})


def warning_window(e: _Eval) -> timedelta:
    w = e.s.warning
    if w and w[0] == "wh":
        return timedelta(hours=w[1])
    if w and w[0] == "pct" and e.s.limit_working_hours:
        return timedelta(hours=e.s.limit_working_hours * w[1] / 100)
    return working_hours(e.spec("DUE_SOON").params["default_window"])


def rule_due_soon(e: _Eval) -> None:
    if not e.clock_applies() or e.stopped_at is not None or e.now > e.s.due_at:
        return                                   # after the due instant OVERDUE takes over
    window = warning_window(e)
    remaining = e.running_between(e.now, e.s.due_at)
    if remaining <= window:
        e.add("DUE_SOON", agency=e.handling_agency, due_at=e.s.due_at,
              details={"window_working_hours": hours(window),
                       "officer_id": (e.s.officer or {}).get("id")})
        e.wake(e.s.due_at + timedelta(microseconds=1))
    else:
        e.wake(e.running_add(e.now, remaining - window))


def apology_deadline(e: _Eval, code: str = "APOLOGY_MISSING") -> datetime | None:
    """1 working day (of running clock) before the due date; None when the limit is that short."""
    s = e.s
    if not s.received or s.due_at is None or s.clock_start is None:
        return None
    total = e.limit_running()
    notice = e.notice(code)
    if total <= notice:
        return None
    return e.running_add(s.clock_start, total - notice)


def rule_apology_missing(e: _Eval) -> None:
    if not e.clock_applies() or e.s.apologies:
        return
    deadline = apology_deadline(e)
    if deadline is None:
        return
    if e.t_eff() >= deadline:
        e.add("APOLOGY_MISSING", agency=e.handling_agency, due_at=deadline,
              details={"legal_due_at": _iso(e.s.due_at)})
    elif e.stopped_at is None:
        e.wake(deadline)


def rule_apology_late(e: _Eval) -> None:
    if not e.s.apologies or e.closed:
        return
    deadline = apology_deadline(e, "APOLOGY_LATE")
    first = e.s.apologies[0]
    if deadline is not None and first.at > deadline:
        e.add("APOLOGY_LATE", agency=first.agency_code or e.handling_agency, due_at=deadline,
              details={"apology_at": _iso(first.at), "legal_due_at": _iso(e.s.due_at),
                       "late_working_hours": hours(e.cal.working_between(deadline, first.at))})


def rule_overdue(e: _Eval) -> None:
    if not e.clock_applies():
        return
    due = e.s.due_at
    if e.stopped_at is not None and e.stopped_at < due:
        return                                   # the clock is stopped before the due date
    if e.now <= due:
        e.wake(due + timedelta(microseconds=1))
        return
    spec = e.spec("OVERDUE")
    escalate_at = e.cal.add_working(due, working_hours(spec.params["escalate_after"]))
    escalated = e.now >= escalate_at
    details = {"escalate_at": _iso(escalate_at), "promised_at": _iso(e.s.promised_at)}
    parent = e.ctx.parent_of(e.handling_agency)
    if escalated:
        details["parent_agency_code"] = parent
    e.add("OVERDUE", agency=e.handling_agency, due_at=due, escalated=escalated, details=details,
          overdue=hours(e.cal.working_between(due, e.now)))
    if not escalated:
        e.wake(escalate_at)


def rule_rescheduled_twice(e: _Eval) -> None:
    if len(e.s.apologies) >= 2 and not e.closed:
        e.add("RESCHEDULED_TWICE", agency=e.handling_agency,
              details={"apologies": len(e.s.apologies),
                       "appointments": [_iso(a.new_appointment_at) for a in e.s.apologies]})


def rule_result_not_returned(e: _Eval) -> None:
    s = e.s
    if s.resolved_at is None or s.returned_at is not None or e.closed:
        return
    appointment = s.promised_at or s.due_at
    base = max(appointment, s.resolved_at) if appointment is not None else s.resolved_at
    deadline = e.cal.add_working(base, working_hours(e.spec("RESULT_NOT_RETURNED").params["grace"]))
    if e.now > deadline:
        e.add("RESULT_NOT_RETURNED", agency=e.one_stop, due_at=deadline,
              overdue=hours(e.cal.working_between(deadline, e.now)),
              details={"resolved_at": _iso(s.resolved_at), "appointment_at": _iso(appointment)})
    else:
        e.wake(deadline + timedelta(microseconds=1))


def rule_bypassed_one_stop(e: _Eval) -> None:
    s = e.s
    early = [ev for ev in s.events if ev.type in HANDLING_EVENTS and ev.stage != "reception"
             and (s.received_at is None or ev.occurred_at < s.received_at)]
    if early:
        e.add("BYPASSED_ONE_STOP", agency=early[0].agency_code,
              details={"received": s.received, "events_before_receipt": len(early),
                       "first_event_type": early[0].type, "first_event_at": _iso(early[0].occurred_at)})


def rule_consultation_overdue(e: _Eval) -> None:
    if e.finished:
        return
    for c in e.s.consultations:
        if c.answered_at is not None:
            continue
        if e.now > c.due_at:
            e.add("CONSULTATION_OVERDUE", agency=c.to_agency_code, discriminator=f"{c.to_agency_code}|{c.index}",
                  due_at=c.due_at, overdue=hours(e.cal.working_between(c.due_at, e.now)),
                  details={"requested_at": _iso(c.requested_at), "due_in": c.due_in,
                           "requested_by": e.handling_agency})
        else:
            e.wake(c.due_at + timedelta(microseconds=1))


def rule_supplement_stalled(e: _Eval) -> None:
    if e.finished:
        return
    spec = e.spec("SUPPLEMENT_STALLED")
    stages = spec.params.get("stages") or ("reception", "handling")
    waiting = [r for r in e.s.supplements if r.answered_at is None and r.stage in stages]
    if not waiting:
        return
    since = min(r.requested_at for r in waiting)
    window: Limit = spec.params["window"]
    deadline = (e.cal.due_at(since, window, ()) if window.unit == "cd"
                else e.cal.add_working(since, working_hours(window)))
    if e.now > deadline:
        e.add("SUPPLEMENT_STALLED", agency=e.one_stop, due_at=deadline,
              details={"waiting_since": _iso(since), "window": str(window)})
    else:
        e.wake(deadline + timedelta(microseconds=1))


def rule_backdated_event(e: _Eval) -> None:
    if e.closed:
        return
    tol = hours(working_hours(e.spec("BACKDATED_EVENT").params["tolerance"]))
    bad = [ev for ev in e.s.events if ev.out_of_order or ev.lag_working_hours > tol]
    if bad:
        e.add("BACKDATED_EVENT", agency=e.one_stop,
              details={"events": len(bad),
                       "out_of_order": sum(1 for ev in bad if ev.out_of_order),
                       "recorded_late": sum(1 for ev in bad if ev.lag_working_hours > tol),
                       "max_lag_working_hours": max(ev.lag_working_hours for ev in bad),
                       "event_ids": [ev.event_id for ev in bad[:20]]})


def rule_online_receipt_late(e: _Eval) -> None:
    """Đ17 k2c NĐ 118: an online dossier officially received, or returned for a supplement, more
    than `within` working time after the system received it (`submitted_at`, from
    `dossier.submitted` or the receipt). The first of: the receipt or a supplement request at
    reception. Until one is posted the check is due at the deadline: a dossier the counter never
    acts on is found then, and stays open until the counter acts (a record from then on)."""
    s = e.s
    if s.submitted_at is None or s.channel not in ONLINE_CHANNELS or e.closed:
        return
    acted, action = s.received_at, "received"
    for r in s.supplements:
        if r.stage == "reception" and (acted is None or r.requested_at < acted):
            acted, action = r.requested_at, "supplement_requested"
    deadline = e.cal.add_working(e.cal.next_working_instant(s.submitted_at),
                                 working_hours(e.spec("ONLINE_RECEIPT_LATE").params["within"]))
    if acted is None:
        if e.now > deadline:
            e.add("ONLINE_RECEIPT_LATE", agency=e.one_stop, due_at=deadline,
                  overdue=hours(e.cal.working_between(deadline, e.now)),
                  details={"channel": s.channel, "submitted_at": _iso(s.submitted_at),
                           "acted_at": None, "action": None})
        else:
            e.wake(deadline + timedelta(microseconds=1))
    elif acted > deadline:
        e.add("ONLINE_RECEIPT_LATE", agency=e.one_stop, due_at=deadline,
              details={"channel": s.channel, "submitted_at": _iso(s.submitted_at),
                       "acted_at": _iso(acted), "action": action,
                       "late_working_hours": hours(e.cal.working_between(deadline, acted))})


def rule_stop_notice_missing(e: _Eval) -> None:
    """Đ21 NĐ 118: a dossier stopped at the applicant's request ends with the one-stop's
    Thông báo dừng giải quyết hồ sơ (Mẫu 05, Circular 03/2025). Open while no stop event has
    recorded the notice (its `form`); a later `dossier.stopped` with the form resolves it."""
    s = e.s
    if s.status != "stopped" or s.stop_notice_at is not None:
        return
    e.add("STOP_NOTICE_MISSING", agency=e.one_stop,
          details={"stopped_at": _iso(s.stopped_at), "requested_at": _iso(s.stop_requested_at)})


def agency_received_at(e: _Eval, agency: str) -> datetime | None:
    """When `agency` received the dossier: the first transfer to it, else the receipt when it is
    the receiving unit or no transfer was recorded."""
    s = e.s
    for t in s.transfers:
        if t.to_agency_code == agency:
            return t.at
    if agency == s.receiving_agency_code or not s.transfers:
        return s.received_at
    return None


def rule_supplement_request_late(e: _Eval) -> None:
    """Đ19 k5 NĐ 118: a supplement during handling requested more than `within` (3 working days)
    after the handling agency received the dossier."""
    if e.closed or not e.s.received:
        return
    within = working_hours(e.spec("SUPPLEMENT_REQUEST_LATE").params["within"])
    for r in e.s.supplements:
        if r.stage != "handling":
            continue
        got = agency_received_at(e, r.agency_code)
        if got is None:
            continue
        deadline = e.cal.add_working(e.cal.next_working_instant(got), within)
        if r.requested_at > deadline:
            e.add("SUPPLEMENT_REQUEST_LATE", agency=r.agency_code, discriminator=str(r.index),
                  due_at=deadline,
                  details={"request_index": r.index, "agency_received_at": _iso(got),
                           "requested_at": _iso(r.requested_at),
                           "late_working_hours": hours(e.cal.working_between(deadline, r.requested_at))})


def rule_supplement_held_data(e: _Eval) -> None:
    """Đ5 k1 i NĐ 118: a supplement request naming a paper the system already held (digitised
    at receipt, or taken from a connected database) when it was asked."""
    if e.closed:
        return
    for r in e.s.supplements:
        if r.already_held:
            e.add("SUPPLEMENT_HELD_DATA", agency=r.agency_code, discriminator=str(r.index),
                  stage=r.stage,
                  details={"request_index": r.index, "stage": r.stage,
                           "components": list(r.already_held)})


RULES: dict[str, Callable[[_Eval], None]] = {
    "RECEIVED_INCOMPLETE": rule_received_incomplete,
    "RECEIVED_EXTRA": rule_received_extra,
    "SUPPLEMENT_REPEATED": rule_supplement_repeated,
    "SUPPLEMENT_OUT_OF_LIST": rule_supplement_out_of_list,
    "TRANSFER_LATE": rule_transfer_late,
    "DUE_SOON": rule_due_soon,
    "APOLOGY_MISSING": rule_apology_missing,
    "APOLOGY_LATE": rule_apology_late,
    "OVERDUE": rule_overdue,
    "RESCHEDULED_TWICE": rule_rescheduled_twice,
    "RESULT_NOT_RETURNED": rule_result_not_returned,
    "BYPASSED_ONE_STOP": rule_bypassed_one_stop,
    "CONSULTATION_OVERDUE": rule_consultation_overdue,
    "SUPPLEMENT_STALLED": rule_supplement_stalled,
    "BACKDATED_EVENT": rule_backdated_event,
    "ONLINE_RECEIPT_LATE": rule_online_receipt_late,
    "SUPPLEMENT_REQUEST_LATE": rule_supplement_request_late,
    "SUPPLEMENT_HELD_DATA": rule_supplement_held_data,
    "STOP_NOTICE_MISSING": rule_stop_notice_missing,
}


def evaluate(state: DossierState, now: datetime, ctx) -> "Evaluation":
    """The findings that hold at `now`, and the next instant a time-based answer can change."""
    now = ensure_utc(now, "now")
    e = _Eval(state, now, ctx)
    for code in e.rs.rules:
        RULES[code](e)
    closure = {}
    s = state
    if s.outcome is not None:
        closure = {"ended": "resolved", "ended_at": _iso(s.outcome.resolved_at),
                   "outcome": s.outcome.kind, "late_working_hours": s.outcome.late_working_hours}
    elif s.closed_at is not None:
        ended_at = s.closed_at
        late = hours(e.cal.working_between(s.due_at, ended_at)) if s.due_at and ended_at > s.due_at else 0.0
        if s.status == "stopped":
            late = 0.0                   # stopped at the applicant's request: never late
        closure = {"ended": s.status, "ended_at": _iso(ended_at), "late_working_hours": late}
    return Evaluation(findings=e.findings, next_check_at=min(e.wakes) if e.wakes else None, now=now,
                      closure=closure)


# ----------------------------------------------------------------------------- reconcile

_MATERIAL = ("severity", "agency_code", "responsible_role", "legal_basis", "title", "requirement",
             "procedure_code", "due_at", "details")


def _ms(v: Any) -> Any:
    if isinstance(v, datetime):
        v = stored_utc(v)
        return v.replace(microsecond=v.microsecond // 1000 * 1000)
    if isinstance(v, dict):
        return {k: _ms(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_ms(x) for x in v]
    return v


def reconcile(previous: dict[str, dict], evaluation: Evaluation, now: datetime) -> list[FindingChange]:
    """What changed since `previous` (finding id -> stored message): opened, updated (a material
    change, not every tick), escalated, resolved (with how late the dossier ended for OVERDUE)."""
    now = ensure_utc(now, "now")
    changes: list[FindingChange] = []
    current = {f.finding_id: f for f in evaluation.findings}
    for fid, f in current.items():
        prev = previous.get(fid)
        rev = int(prev.get("revision", 0)) + 1 if prev else 1
        if prev is None or prev.get("state") == "resolved":
            changes.append(FindingChange("opened", fid, f.to_message(rev)))
            continue
        msg = f.to_message(rev)
        msg["detected_at"] = stored_utc(prev.get("detected_at")) or f.detected_at
        if prev.get("state") != f.state:
            kind = "escalated" if f.state == "escalated" else "updated"
            changes.append(FindingChange(kind, fid, msg))
        elif any(_ms(prev.get(k)) != _ms(msg.get(k)) for k in _MATERIAL):
            changes.append(FindingChange("updated", fid, msg))
    for fid, prev in previous.items():
        if fid in current or prev.get("state") == "resolved":
            continue
        msg = dict(prev)
        msg["state"] = "resolved"
        msg["resolved_at"] = now
        msg["revision"] = int(prev.get("revision", 0)) + 1
        if prev.get("rule") == "OVERDUE" and evaluation.closure:
            details = dict(prev.get("details") or {})
            details.update(evaluation.closure)
            msg["details"] = details
            msg["overdue_working_hours"] = evaluation.closure.get("late_working_hours")
        changes.append(FindingChange("resolved", fid, msg))
    return changes


# ----------------------------------------------------------------------------- explanation

def explain_deadline(state: DossierState, ctx) -> dict:
    """The calendar's explanation of the due date with this dossier's pauses, rule set and
    catalog version, plus the engine's view (status, due date, segments)."""
    if not state.received or state.limit is None:
        raise ValueError(f"dossier {state.dossier_code}: no due date (not received, or procedure unknown)")
    from shared.domain import workcal
    cal = ctx.calendars(state.office or "default")
    start = state.restarts[-1] if state.restarts else state.received_at
    pauses = [(p.start, p.end) for p in state.pauses if p.counted and p.start >= start]
    from shared.domain.limits import parse_limit
    out = dict(workcal.explain_due(cal, start, parse_limit(state.limit), pauses,
                                   ruleset=state.ruleset, catalog_version=state.catalog_version))
    out["ruleset_reason"] = ruleset_reason(state, ctx)
    out["lines"] = [out["ruleset_reason"]["text"], *out.get("lines", [])]
    out["engine"] = {
        "dossier_code": state.dossier_code, "status": state.status, "due_at": state.due_at,
        "initial_due_at": state.initial_due_at, "clock_start": state.clock_start,
        "restarted_at": list(state.restarts), "paused": state.open_pause is not None,
        "segments": state.segments(), "ruleset": state.ruleset,
        "catalog_version": state.catalog_version, "calendar_version": state.calendar_version,
        "outcome": None if state.outcome is None else state.outcome.kind,
        "clock_model": state.supplement_policy,
    }
    return out


CLOCK_TEXT = {"restart": "yêu cầu bổ sung trong quá trình giải quyết làm thời hạn được tính lại từ "
                         "đầu sau khi nhận đủ hồ sơ",
              "pause": "yêu cầu bổ sung trong quá trình giải quyết tạm dừng thời hạn; thời gian đã "
                       "giải quyết được tính tiếp"}


def ruleset_reason(state: DossierState, ctx) -> dict:
    """Which rule set judged the dossier and why: the binding of its receipt instant (fixed at
    receipt, for life), its clock model, and a note when today's binding file would choose
    another set for that instant (the dossier keeps the one it was received under)."""
    why = ctx.rulesets.why(state.received_at)
    rs = ctx.rulesets.get(state.ruleset)
    text = why["text"] if why["ruleset"] == state.ruleset else (
        f"Hồ sơ được đánh giá theo bộ quy tắc {state.ruleset} ({rs.title}) xác định khi tiếp nhận; "
        f"cấu hình hiện hành sẽ chọn {why['ruleset']} cho thời điểm tiếp nhận này nhưng hồ sơ giữ "
        f"bộ quy tắc đã áp dụng.")
    clock = CLOCK_TEXT.get(state.supplement_policy or "")
    if clock:
        text += f" Theo bộ quy tắc này, {clock}."
    return dict(why, ruleset=state.ruleset, title=rs.title, verified_against=rs.verified_against,
                clock_model=state.supplement_policy, binding_now=why["ruleset"], text=text)
