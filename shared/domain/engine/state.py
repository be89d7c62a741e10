"""The dossier state machine: folds events (DESIGN.md §4, as `shared.contracts.events.load_stored()` returns
them) into an immutable `DossierState`.

- Idempotent: an event id already applied changes nothing.
- Events are applied in the order they arrive; one that happened before an event already applied
  is recorded as out of order (flagged, never re-sorted). Events before `dossier.received` are
  recorded as such (BYPASSED_ONE_STOP).
- The legal due date comes from the calendar (receipt instant, the catalog's limit in force at
  receipt, the counted pauses); the state records the rule set, catalog version and calendar
  version used at receipt, and an issued due date never moves earlier.
- Pure: no clock reads, no I/O. `to_doc()`/`from_doc()` round-trip to BSON-able dicts.
"""
from __future__ import annotations

import copy
from dataclasses import asdict, dataclass, field, fields
from dataclasses import replace as _dataclass_replace
from datetime import date, datetime, timedelta
from typing import Any, Iterable

from shared.domain.instants import TZ, ensure_utc, stored_utc
from shared.domain.limits import Limit, parse_limit


STATUSES = ("received", "handling", "awaiting_supplement", "paused", "resolved", "returned",
            "refused", "withdrawn", "stopped")
# nothing more is expected of the agencies; `stopped` = at the applicant's request (Đ21 NĐ 118):
# neither on time nor late, no longer timed
CLOSED = ("returned", "refused", "withdrawn", "stopped")
ONLINE_CHANNELS = ("online", "vneid")
FINISHED = ("resolved",) + CLOSED                      # the handling is over
# Events only an agency handling a received dossier emits (BYPASSED_ONE_STOP). Not included: a
# refusal at the counter (Mẫu 03 is issued instead of a receipt), a withdrawal, the applicant's
# supplement, and a supplement request at the reception stage (guidance before receipt).
HANDLING_EVENTS = ("dossier.supplement_requested", "dossier.transferred",
                   "dossier.assigned", "dossier.consultation_requested", "dossier.consultation_answered",
                   "dossier.apology_issued", "dossier.paused", "dossier.resumed", "dossier.resolved",
                   "dossier.returned")


def hours(td: timedelta) -> float:
    return round(td.total_seconds() / 3600, 4)


# ----------------------------------------------------------------------------- records

@dataclass(frozen=True)
class EventRecord:
    event_id: str
    type: str
    occurred_at: datetime
    recorded_at: datetime | None
    agency_code: str
    seq: int                              # arrival order, 0-based
    out_of_order: bool = False            # happened before an event applied earlier
    before_receipt: bool = False          # a handling event with no (earlier) dossier.received
    lag_working_hours: float = 0.0        # working time between occurred_at and recorded_at
    stage: str | None = None              # supplement requests: reception | handling


@dataclass(frozen=True)
class Pause:
    kind: str                             # supplement | legal
    start: datetime
    end: datetime | None = None
    reason: str = ""
    legal_basis: str | None = None
    counted: bool = True                  # False: started at/after the due date, does not move it


@dataclass(frozen=True)
class SupplementRequest:
    index: int
    stage: str                            # reception | handling
    agency_code: str
    components: tuple[str, ...]
    requested_at: datetime
    event_id: str
    out_of_list: tuple[str, ...] = ()     # components the procedure does not list
    answered_at: datetime | None = None
    already_held: tuple[str, ...] = ()    # asked for, but digitised or reused when requested


@dataclass(frozen=True)
class Transfer:
    from_agency_code: str
    to_agency_code: str
    at: datetime
    event_id: str


@dataclass(frozen=True)
class Consultation:
    index: int
    to_agency_code: str
    requested_at: datetime
    due_in: str                           # e.g. 3wd, 16wh, 10cd
    due_at: datetime
    event_id: str
    answered_at: datetime | None = None


@dataclass(frozen=True)
class Apology:
    at: datetime
    new_appointment_at: datetime
    agency_code: str
    event_id: str
    reason: str = ""                      # printed on the extension request (Đ19 k6)


@dataclass(frozen=True)
class Outcome:
    kind: str                             # early | on_time | late
    resolved_at: datetime
    due_at: datetime
    late_working_hours: float = 0.0
    decision: str | None = None           # approved | denied


_NESTED = {"events": EventRecord, "pauses": Pause, "supplements": SupplementRequest,
           "transfers": Transfer, "consultations": Consultation, "apologies": Apology}


@dataclass(frozen=True)
class DossierState:
    dossier_code: str
    status: str | None = None             # None until dossier.received (or a handling event) is seen
    procedure_code: str | None = None
    procedure_field: str | None = None
    procedure_known: bool = False
    channel: str | None = None
    applicant_kind: str | None = None
    receiving_agency_code: str | None = None
    handling_agency_code: str | None = None
    current_agency_code: str | None = None
    officer: dict | None = None
    received_at: datetime | None = None
    received_recorded_at: datetime | None = None
    appointment_at: datetime | None = None        # as printed on the slip
    ruleset: str | None = None
    catalog_version: str | None = None
    calendar_version: str | None = None
    office: str | None = None
    limit: str | None = None
    supplement_policy: str | None = None          # the rule set's clock model for this dossier
    warning: tuple | None = None                  # ("wh", n) | ("pct", n)
    limit_working_hours: float | None = None      # the limit as running working time
    clock_start: datetime | None = None           # receipt (or restart) instant the count runs from
    restarts: tuple[datetime, ...] = ()
    pauses: tuple[Pause, ...] = ()
    initial_due_at: datetime | None = None
    due_at: datetime | None = None                # legal due date (provisional while paused)
    components: tuple[str, ...] = ()
    digitized: tuple[str, ...] = ()
    reused: tuple[str, ...] = ()                  # taken from a connected database at receipt
    submitted_at: datetime | None = None          # online/VNeID: the system's receipt
    missing_at_receipt: tuple[str, ...] = ()
    extra_at_receipt: tuple[str, ...] = ()
    still_missing: tuple[str, ...] = ()
    supplements: tuple[SupplementRequest, ...] = ()
    transfers: tuple[Transfer, ...] = ()
    consultations: tuple[Consultation, ...] = ()
    apologies: tuple[Apology, ...] = ()
    resolved_at: datetime | None = None
    outcome: Outcome | None = None
    returned_at: datetime | None = None
    refused_at: datetime | None = None
    withdrawn_at: datetime | None = None
    stopped_at: datetime | None = None            # stopped at the applicant's request
    stop_requested_at: datetime | None = None     # when the applicant asked to stop
    stop_reason: str | None = None
    stop_notice_at: datetime | None = None        # a stop event recorded the notice (Mẫu 05)
    # printed on the forms attached to alerts (Mẫu 02/04/05) and nowhere else: the name only,
    # never the applicant's ID number, phone, e-mail or address (docs/law.md)
    applicant_name: str | None = None
    events: tuple[EventRecord, ...] = ()
    max_occurred_at: datetime | None = None
    anomalies: tuple[str, ...] = ()               # English, for operators (no personal data)

    # ------------------------------------------------------------------ queries
    @property
    def event_ids(self) -> frozenset[str]:
        return frozenset(e.event_id for e in self.events)

    @property
    def received(self) -> bool:
        return self.received_at is not None

    @property
    def open_pause(self) -> Pause | None:
        for p in reversed(self.pauses):
            if p.end is None and p.counted:
                return p
        return None

    @property
    def promised_at(self) -> datetime | None:
        """What the applicant is promised: the latest apology's new appointment, else the slip."""
        if self.apologies:
            return self.apologies[-1].new_appointment_at
        return self.appointment_at

    @property
    def closed_at(self) -> datetime | None:
        return self.returned_at or self.refused_at or self.withdrawn_at or self.stopped_at

    def segments(self) -> list[dict]:
        """The clock as segments: running / paused (with reasons), from the clock start."""
        if self.clock_start is None:
            return []
        out, t = [], self.clock_start
        for p in sorted((p for p in self.pauses if p.counted and p.start >= self.clock_start),
                        key=lambda p: p.start):
            if p.start > t:
                out.append({"kind": "running", "start": t, "end": p.start})
            out.append({"kind": "paused", "start": p.start, "end": p.end, "reason": p.reason,
                        "pause_kind": p.kind, "legal_basis": p.legal_basis})
            if p.end is None:
                return out
            t = max(t, p.end)
        out.append({"kind": "running", "start": t, "end": None})
        return out

    # ------------------------------------------------------------------ storage
    def to_doc(self) -> dict:
        """A plain dict (lists, dicts, str, numbers, aware datetimes) for MongoDB.

        The same as `_plain(asdict(self))`, faster (immutable leaves are not deep-copied)."""
        return _doc(self)

    @classmethod
    def from_doc(cls, doc: dict) -> "DossierState":
        """The inverse of `to_doc()`; unknown keys are an error (not silently dropped)."""
        names = {f.name for f in fields(cls)}
        unknown = sorted(set(doc) - names)
        if unknown:
            raise ValueError(f"unknown dossier state fields: {', '.join(unknown)}")
        kw: dict[str, Any] = {}
        for f in fields(cls):
            if f.name not in doc:
                continue
            v = doc[f.name]
            if f.name in _NESTED:
                kw[f.name] = tuple(_record(_NESTED[f.name], x) for x in v)
            elif f.name == "outcome":
                kw[f.name] = _record(Outcome, v) if v is not None else None
            elif f.name in ("components", "digitized", "reused", "missing_at_receipt", "extra_at_receipt",
                            "still_missing", "anomalies"):
                kw[f.name] = tuple(v)
            elif f.name == "restarts":
                kw[f.name] = tuple(stored_utc(x) for x in v)
            elif f.name == "warning":
                kw[f.name] = tuple(v) if v is not None else None
            elif isinstance(v, datetime):
                kw[f.name] = stored_utc(v)
            elif f.name == "officer":
                kw[f.name] = dict(v) if v is not None else None
            else:
                kw[f.name] = v
        return cls(**kw)


_INIT_FIELDS: dict[type, frozenset[str] | None] = {}


def replace(obj, /, **changes):
    """`dataclasses.replace` for this module's frozen dataclasses: the new instance's dict is a
    copy of the old one updated with `changes`, without calling `__init__` (same result for
    dataclasses with no `__post_init__`, no `init=False` field and no cached attribute; others
    go through `dataclasses.replace`): much faster on DossierState's many fields, and `apply`
    replaces the state at every event."""
    cls = type(obj)
    names = _INIT_FIELDS.get(cls, ())
    if names == ():
        plain = (not hasattr(cls, "__post_init__") and hasattr(obj, "__dict__")
                 and all(f.init for f in fields(cls)))
        names = _INIT_FIELDS[cls] = frozenset(f.name for f in fields(cls)) if plain else None
    if names is None:
        return _dataclass_replace(obj, **changes)
    if not changes.keys() <= names:
        raise TypeError(f"{cls.__name__} has no field(s) {sorted(changes.keys() - names)}")
    new = object.__new__(cls)
    attrs = new.__dict__
    attrs.update(obj.__dict__)
    attrs.update(changes)
    return new


def _record(cls, d: dict):
    kw = {}
    for f in fields(cls):
        if f.name in d:
            v = d[f.name]
            if isinstance(v, datetime):
                v = stored_utc(v)
            elif isinstance(v, list):
                v = tuple(v)
            kw[f.name] = v
    return cls(**kw)


_ATOMS = (str, int, float, bool, type(None), datetime, date, timedelta)
_FIELD_NAMES: dict[type, tuple[str, ...]] = {}


def _doc(obj: Any) -> Any:
    """`_plain(asdict(obj))` without copying immutable leaves."""
    if isinstance(obj, _ATOMS):
        return obj
    cls = type(obj)
    names = _FIELD_NAMES.get(cls)
    if names is None and hasattr(cls, "__dataclass_fields__") and not isinstance(obj, type):
        names = _FIELD_NAMES[cls] = tuple(f.name for f in fields(cls))
    if names is not None:
        return {n: _doc(getattr(obj, n)) for n in names}
    if isinstance(obj, dict):
        return {_doc(k): _doc(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_doc(v) for v in obj]
    return _plain(asdict(obj)) if hasattr(cls, "__dataclass_fields__") else copy.deepcopy(obj)


def _plain(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {k: _plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_plain(v) for v in obj]
    return obj


# ----------------------------------------------------------------------------- folding

def new_state(dossier_code: str) -> DossierState:
    """The state of a dossier no event has touched yet."""
    if not isinstance(dossier_code, str) or not dossier_code:
        raise ValueError("dossier_code must be a non-empty string")
    return DossierState(dossier_code=dossier_code)


def replay(events: Iterable[dict], ctx) -> DossierState:
    """Fold events, in the given (arrival) order, from an empty state."""
    state: DossierState | None = None
    for ev in events:
        if state is None:
            state = new_state(ev["dossier_code"])
        state = apply(state, ev, ctx)
    if state is None:
        raise ValueError("replay needs at least one event")
    return state


def apply(state: DossierState, event: dict, ctx) -> DossierState:
    """The state after `event`. The same event id twice changes nothing. Raises ValueError for an
    event of another dossier, an unknown type or a naive instant (nothing is changed)."""
    eid = str(event.get("event_id") or "")
    if not eid:
        raise ValueError("event has no event_id")
    if event.get("dossier_code") != state.dossier_code:
        raise ValueError(f"event {eid} is for dossier {event.get('dossier_code')!r}, "
                         f"not {state.dossier_code!r}")
    etype = event.get("type")
    if etype not in _HANDLERS:
        raise ValueError(f"event {eid}: unknown type {etype!r}")
    if eid in state.event_ids:
        return state
    occurred = ensure_utc(event["occurred_at"], f"event {eid}: occurred_at")
    recorded = event.get("recorded_at")
    recorded = ensure_utc(recorded, f"event {eid}: recorded_at") if recorded is not None else None
    data = event.get("data") or {}
    agency = event.get("agency_code") or ""

    cal = ctx.calendars(state.office or ctx.office_for(agency))
    lag = 0.0
    if recorded is not None and recorded > occurred:
        lag = hours(cal.working_between(occurred, recorded))
    out_of_order = state.max_occurred_at is not None and occurred < state.max_occurred_at
    before_receipt = etype in HANDLING_EVENTS and data.get("stage") != "reception" \
        and (state.received_at is None or occurred < state.received_at)
    rec = EventRecord(event_id=eid, type=etype, occurred_at=occurred, recorded_at=recorded,
                      agency_code=agency, seq=len(state.events), out_of_order=out_of_order,
                      before_receipt=before_receipt, lag_working_hours=lag,
                      stage=data.get("stage") if etype == "dossier.supplement_requested" else None)
    s = replace(state, events=state.events + (rec,),
                max_occurred_at=occurred if state.max_occurred_at is None else max(occurred, state.max_occurred_at))
    return _HANDLERS[etype](s, _Ev(eid, etype, occurred, recorded, agency, data), ctx)


@dataclass(frozen=True)
class _Ev:
    id: str
    type: str
    at: datetime
    recorded_at: datetime | None
    agency: str
    data: dict


def _anomaly(s: DossierState, text: str) -> DossierState:
    return replace(s, anomalies=s.anomalies + (text,))


def _status(s: DossierState, new: str, ev: _Ev) -> DossierState:
    """Move to `new` unless the dossier is already closed (then record an anomaly)."""
    if s.status in CLOSED and new != s.status:
        return _anomaly(s, f"{ev.type} {ev.id} after the dossier was {s.status}")
    if s.status == "resolved" and new not in CLOSED:
        return s                          # late handling events do not reopen a resolved dossier
    return replace(s, status=new)


def _calendar(s: DossierState, ctx, agency: str | None = None):
    return ctx.calendars(s.office or ctx.office_for(agency or s.receiving_agency_code))


def _procedure(s: DossierState, ctx):
    if not s.procedure_code or s.received_at is None:
        return None
    return ctx.catalog.get(s.procedure_code, on=s.received_at)


def recompute_due(s: DossierState, ctx, unpaused: datetime | None = None) -> DossierState:
    """The legal due date from the clock start, the limit and the pauses that started before it.

    A pause that starts at or after the due date so far does not move it (LEGAL.md, the clock).
    While a counted pause is open the stored due date is provisional (the clock is stopped).
    An issued due date never moves earlier (a later calendar cannot shorten it).
    `unpaused`: the due date without pauses from the current start, when the caller has it.
    """
    if s.clock_start is None or s.limit is None:
        return s
    cal = _calendar(s, ctx)
    limit = parse_limit(s.limit)
    start = s.restarts[-1] if s.restarts else s.received_at
    due = unpaused if unpaused is not None else cal.due_at(start, limit, ())
    intervals: list[tuple[datetime, datetime]] = []      # counted, closed, merged
    stopped = False                                      # an open counted pause stops the clock
    pauses = []
    for p in sorted(s.pauses, key=lambda p: p.start):
        if p.start < start:                              # before the (re)start: not this count's
            pauses.append(replace(p, counted=False))
        elif stopped:                                    # inside a stop already counted
            pauses.append(replace(p, counted=True))
        elif p.start >= due:                             # after the due date: does not move it
            pauses.append(replace(p, counted=False))
        else:
            pauses.append(replace(p, counted=True))
            if p.end is None:
                stopped = True
                continue
            if intervals and p.start <= intervals[-1][1]:
                intervals[-1] = (intervals[-1][0], max(intervals[-1][1], p.end))
            else:
                intervals.append((p.start, p.end))
            due = cal.due_at(start, limit, tuple(intervals))
    pauses = tuple(pauses)
    if s.due_at is not None and due < s.due_at:
        due = s.due_at                                   # an issued due date never moves earlier
    return replace(s, due_at=due, pauses=pauses, initial_due_at=s.initial_due_at or due)


def _on_received(s: DossierState, ev: _Ev, ctx) -> DossierState:
    if s.received_at is not None:
        return _anomaly(s, f"dossier.received {ev.id} ignored: already received by {s.events[0].event_id if s.events else '?'}")
    d = ev.data
    local_day: date = ev.at.astimezone(TZ).date()
    ruleset = ctx.rulesets.for_date(local_day)      # the receipt instant's rule set, for life
    office = ctx.office_for(ev.agency)
    cal = ctx.calendars(office)
    proc = ctx.catalog.get(d["procedure_code"], on=ev.at)
    components = tuple(dict.fromkeys(d.get("components") or ()))
    handling = d.get("handling_agency_code") or (s.transfers[0].to_agency_code if s.transfers else None)
    applicant = d.get("applicant") or {}
    s = replace(s, procedure_code=d["procedure_code"], channel=d.get("channel"),
                applicant_kind=applicant.get("kind"), applicant_name=applicant.get("name") or None,
                receiving_agency_code=ev.agency, handling_agency_code=handling,
                current_agency_code=s.current_agency_code or ev.agency,
                received_at=ev.at, received_recorded_at=ev.recorded_at,
                appointment_at=stored_utc(d.get("appointment_at")), ruleset=ruleset.id,
                catalog_version=ctx.catalog.version, calendar_version=getattr(cal, "version", None),
                office=office, components=tuple(dict.fromkeys(s.components + components)),
                digitized=tuple(dict.fromkeys(s.digitized + tuple(d.get("digitized") or ()))),
                reused=tuple(dict.fromkeys(s.reused + tuple(d.get("reused") or ()))),
                submitted_at=stored_utc(d.get("submitted_at")) or s.submitted_at,
                clock_start=cal.next_working_instant(ev.at))
    if s.status is None:
        s = replace(s, status="received")
    if proc is None:
        return _anomaly(s, f"procedure {d['procedure_code']} is not in the catalog on {local_day}: no due date")
    missing = tuple(proc.missing_components(components))
    extra = tuple(proc.unknown_components(components))
    s = replace(s, procedure_known=True, procedure_field=proc.field, limit=str(proc.limit),
                supplement_policy=_clock_model(ruleset, proc.supplement_policy),
                warning=tuple(proc.warning),
                missing_at_receipt=missing, extra_at_receipt=extra,
                still_missing=tuple(proc.missing_components(s.components)))
    first_due = cal.due_at(ev.at, proc.limit, ())
    s = replace(s, limit_working_hours=hours(cal.working_between(s.clock_start, first_due)))
    # no restart can precede the receipt: the count starts at ev.at, as first_due's does
    return recompute_due(s, ctx, unpaused=first_due)


def _clock_model(ruleset, procedure_policy: str | None) -> str:
    """pause | restart: the rule set decides (a rule set of an older format: the procedure)."""
    decide = getattr(ruleset, "supplement_policy", None)
    return decide(procedure_policy) if decide is not None else (procedure_policy or "pause")


def _on_supplement_requested(s: DossierState, ev: _Ev, ctx) -> DossierState:
    d = ev.data
    comps = tuple(dict.fromkeys(d["components"]))
    proc = _procedure(s, ctx)
    out = tuple(proc.unknown_components(comps)) if proc is not None else ()
    held = set(s.digitized) | set(s.reused)        # what the system held when this was asked
    req = SupplementRequest(index=len(s.supplements), stage=d["stage"], agency_code=ev.agency,
                            components=comps, requested_at=ev.at, event_id=ev.id, out_of_list=out,
                            already_held=tuple(c for c in comps if c in held))
    s = replace(s, supplements=s.supplements + (req,))
    if d["stage"] == "handling" and not any(p.kind == "supplement" and p.end is None for p in s.pauses):
        s = replace(s, pauses=s.pauses + (Pause(kind="supplement", start=ev.at, reason=d.get("reason", "")),))
        s = recompute_due(s, ctx)
    return _status(s, "awaiting_supplement", ev)


def _close_pauses(s: DossierState, kind: str | None, at: datetime) -> DossierState:
    pauses = tuple(replace(p, end=max(at, p.start)) if p.end is None and (kind is None or p.kind == kind) else p
                   for p in s.pauses)
    return replace(s, pauses=pauses)


def _after_wait_status(s: DossierState) -> str:
    if any(p.end is None and p.kind == "legal" for p in s.pauses):
        return "paused"
    if any(r.answered_at is None for r in s.supplements):
        return "awaiting_supplement"
    if s.transfers or s.officer or any(r.stage == "handling" for r in s.supplements) \
            or s.consultations or any(p.kind == "legal" for p in s.pauses) or not s.received:
        return "handling"
    return "received"


def _on_supplement_received(s: DossierState, ev: _Ev, ctx) -> DossierState:
    comps = tuple(ev.data.get("components") or ())
    s = replace(s, components=tuple(dict.fromkeys(s.components + comps)))
    proc = _procedure(s, ctx)
    if proc is not None:
        s = replace(s, still_missing=tuple(proc.missing_components(s.components)))
    outstanding = [r for r in s.supplements if r.answered_at is None]
    if not outstanding:
        return _anomaly(s, f"dossier.supplement_received {ev.id} without an outstanding request")
    s = replace(s, supplements=tuple(replace(r, answered_at=ev.at) if r.answered_at is None else r
                                     for r in s.supplements))
    s = _close_pauses(s, "supplement", ev.at)
    if s.supplement_policy == "restart" and any(r.stage == "handling" for r in outstanding) \
            and s.received_at is not None:
        cal = _calendar(s, ctx)
        s = replace(s, restarts=s.restarts + (ev.at,), clock_start=cal.next_working_instant(ev.at))
    s = recompute_due(s, ctx)
    if s.status == "awaiting_supplement":
        s = replace(s, status=_after_wait_status(s))
    return s


def _on_paused(s: DossierState, ev: _Ev, ctx) -> DossierState:
    if any(p.kind == "legal" and p.end is None for p in s.pauses):
        return _anomaly(s, f"dossier.paused {ev.id} while already paused")
    s = replace(s, pauses=s.pauses + (Pause(kind="legal", start=ev.at, reason=ev.data.get("reason", ""),
                                            legal_basis=ev.data.get("legal_basis")),))
    s = recompute_due(s, ctx)
    return _status(s, "paused", ev)


def _on_resumed(s: DossierState, ev: _Ev, ctx) -> DossierState:
    if not any(p.kind == "legal" and p.end is None for p in s.pauses):
        return _anomaly(s, f"dossier.resumed {ev.id} without a pause")
    s = recompute_due(_close_pauses(s, "legal", ev.at), ctx)
    if s.status == "paused":
        s = replace(s, status=_after_wait_status(s))
    return s


def _on_transferred(s: DossierState, ev: _Ev, ctx) -> DossierState:
    to = ev.data["to_agency_code"]
    t = Transfer(from_agency_code=ev.agency, to_agency_code=to, at=ev.at, event_id=ev.id)
    s = replace(s, transfers=s.transfers + (t,), current_agency_code=to,
                handling_agency_code=s.handling_agency_code or to)
    return _status(s, "handling", ev) if s.status in (None, "received") else s


def _on_assigned(s: DossierState, ev: _Ev, ctx) -> DossierState:
    off = ev.data["officer"]
    s = replace(s, officer={"id": off["id"], "name": off.get("name")})
    return _status(s, "handling", ev) if s.status in (None, "received") else s


def _on_consultation_requested(s: DossierState, ev: _Ev, ctx) -> DossierState:
    due_in = ev.data["due_in"]
    limit = Limit(int(due_in["value"]), due_in["unit"])
    cal = _calendar(s, ctx, ev.agency)
    c = Consultation(index=len(s.consultations), to_agency_code=ev.data["to_agency_code"],
                     requested_at=ev.at, due_in=str(limit), due_at=cal.due_at(ev.at, limit, ()),
                     event_id=ev.id)
    s = replace(s, consultations=s.consultations + (c,))
    return _status(s, "handling", ev) if s.status in (None, "received") else s


def _on_consultation_answered(s: DossierState, ev: _Ev, ctx) -> DossierState:
    frm = ev.data["from_agency_code"]
    for i, c in enumerate(s.consultations):
        if c.answered_at is None and c.to_agency_code == frm:
            cons = s.consultations[:i] + (replace(c, answered_at=ev.at),) + s.consultations[i + 1:]
            return replace(s, consultations=cons)
    return _anomaly(s, f"dossier.consultation_answered {ev.id} from {frm} without an open request")


def _on_apology(s: DossierState, ev: _Ev, ctx) -> DossierState:
    a = Apology(at=ev.at, new_appointment_at=stored_utc(ev.data["new_appointment_at"]), agency_code=ev.agency,
                event_id=ev.id, reason=ev.data.get("reason") or "")
    return replace(s, apologies=s.apologies + (a,))


def _outcome(s: DossierState, ctx, resolved_at: datetime, decision: str | None) -> Outcome | None:
    if s.due_at is None:
        return None
    due = s.due_at
    if resolved_at > due:
        late = hours(_calendar(s, ctx).working_between(due, resolved_at))
        return Outcome("late", resolved_at, due, late, decision)
    if resolved_at.astimezone(TZ).date() < due.astimezone(TZ).date():
        return Outcome("early", resolved_at, due, 0.0, decision)
    return Outcome("on_time", resolved_at, due, 0.0, decision)


def _finish(s: DossierState, ev: _Ev, ctx) -> DossierState:
    """Close open pauses at a finishing event (the clock stops for good)."""
    if any(p.end is None for p in s.pauses):
        s = recompute_due(_close_pauses(s, None, ev.at), ctx)
    return s


def _on_resolved(s: DossierState, ev: _Ev, ctx) -> DossierState:
    if s.resolved_at is not None:
        return _anomaly(s, f"dossier.resolved {ev.id} ignored: already resolved")
    if s.stopped_at is not None:          # stopped is terminal: no outcome, never late
        return _anomaly(s, f"dossier.resolved {ev.id} ignored: the dossier was stopped")
    s = _finish(s, ev, ctx)
    s = replace(s, resolved_at=ev.at, outcome=_outcome(s, ctx, ev.at, ev.data.get("outcome")))
    return _status(s, "resolved", ev)


def _on_returned(s: DossierState, ev: _Ev, ctx) -> DossierState:
    if s.returned_at is not None:
        return _anomaly(s, f"dossier.returned {ev.id} ignored: already returned")
    s = replace(_finish(s, ev, ctx), returned_at=ev.at)
    if s.resolved_at is None:
        s = _anomaly(s, f"dossier.returned {ev.id} before any dossier.resolved")
    return _status(s, "returned", ev)


def _on_refused(s: DossierState, ev: _Ev, ctx) -> DossierState:
    s = replace(_finish(s, ev, ctx), refused_at=s.refused_at or ev.at)
    return _status(s, "refused", ev)


def _on_withdrawn(s: DossierState, ev: _Ev, ctx) -> DossierState:
    s = replace(_finish(s, ev, ctx), withdrawn_at=s.withdrawn_at or ev.at)
    return _status(s, "withdrawn", ev)


def _on_stopped(s: DossierState, ev: _Ev, ctx) -> DossierState:
    """Stopped at the applicant's request (Đ21 NĐ 118/2025): only before a decision; terminal;
    the clock stops for good and the dossier is neither on time nor late."""
    notice = ev.at if ev.data.get("form") else None     # the paper (Mẫu 05) was issued
    if s.status == "stopped" and s.stop_notice_at is None and notice is not None:
        return replace(s, stop_notice_at=notice)        # the notice of an earlier stop, issued now
    if s.resolved_at is not None:
        return _anomaly(s, f"dossier.stopped {ev.id} ignored: a decision was already made")
    if s.status in CLOSED:
        return _anomaly(s, f"dossier.stopped {ev.id} after the dossier was {s.status}")
    s = replace(_finish(s, ev, ctx), stopped_at=ev.at, stop_notice_at=notice,
                stop_reason=ev.data.get("reason") or None,
                stop_requested_at=stored_utc(ev.data.get("requested_at")))
    return _status(s, "stopped", ev)


def _on_submitted(s: DossierState, ev: _Ev, ctx) -> DossierState:
    """The system received an online dossier (Đ17 k2 NĐ 118/2025): not a receipt (no clock, no
    rule set fixed), but the 8 working hours of Đ17 k2c run from it even if nothing follows."""
    if s.submitted_at is not None:
        return s                                        # the first word on it stands
    if s.received_at is not None:                       # posted after the receipt
        return replace(s, submitted_at=ev.at)
    return replace(s, submitted_at=ev.at, channel=ev.data["channel"],
                   procedure_code=ev.data["procedure_code"],
                   receiving_agency_code=ev.agency, office=ctx.office_for(ev.agency))


_HANDLERS = {
    "dossier.received": _on_received,
    "dossier.supplement_requested": _on_supplement_requested,
    "dossier.supplement_received": _on_supplement_received,
    "dossier.refused": _on_refused,
    "dossier.transferred": _on_transferred,
    "dossier.assigned": _on_assigned,
    "dossier.consultation_requested": _on_consultation_requested,
    "dossier.consultation_answered": _on_consultation_answered,
    "dossier.apology_issued": _on_apology,
    "dossier.paused": _on_paused,
    "dossier.resumed": _on_resumed,
    "dossier.resolved": _on_resolved,
    "dossier.returned": _on_returned,
    "dossier.withdrawn": _on_withdrawn,
    "dossier.stopped": _on_stopped,
    "dossier.submitted": _on_submitted,
}
