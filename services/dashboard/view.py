"""The dashboard's in-memory read model: one compact row per dossier and per finding, and the
set of acknowledged findings, with the queries the pages ask (pure: no I/O here).

Why in memory: on the default stack (FerretDB v1.24) every filter other than `_id` equality
reads the whole collection, so a page may not query the 10^5 dossiers; the rows are loaded once
(`store.DashboardStore.load`) and kept current by `feed.Feed` (docs/dashboard.md).

Tenancy is the sla API's: a dossier is visible when any agency its events named is in the
signed-in subtree; a finding when its responsible agency is. Counts "by agency" use the
handling agency (after transfers), as the Biểu 06 report does.
"""
from __future__ import annotations

import threading
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import Callable, Iterable

from shared.domain.instants import TZ

OPEN_STATES = ("open", "escalated")
ONE_WORKING_DAY = timedelta(hours=8)


@dataclass(slots=True)
class Row:
    """A dossier as the lists need it. `get` lets `services.sla.reports.tally` read it as a summary."""
    code: str
    rev: int = 0
    agencies: tuple = ()
    status: str | None = None
    office: str | None = None
    procedure_code: str | None = None
    field: str | None = None
    handling_agency: str | None = None
    channel: str | None = None
    received_at: datetime | None = None
    due_at: datetime | None = None
    resolved_at: datetime | None = None
    refused_at: datetime | None = None
    withdrawn_at: datetime | None = None
    returned_at: datetime | None = None
    outcome: str | None = None          # the decision: approved | denied
    timing: str | None = None           # early | on_time | late (the engine's outcome)
    late_working_hours: float | None = None
    components_n: int = 0
    digitized_n: int = 0
    supplement_requested: bool = False
    pause_start: datetime | None = None   # an open pause counted against the due date
    officer: str | None = None            # assigned officer, else the latest actor
    finished_at: datetime | None = None   # resolved, refused or withdrawn: set from those (per request hot path)

    def get(self, key: str, default=None):
        return getattr(self, key, default)

    def __getitem__(self, key: str):
        try:
            return getattr(self, key)
        except AttributeError:
            raise KeyError(key) from None

    def __post_init__(self):
        times = [t for t in (self.resolved_at, self.refused_at, self.withdrawn_at) if t is not None]
        self.finished_at = min(times) if times else None

    def clock_now(self, now: datetime) -> datetime:
        """The instant the dossier's clock has reached: a pause that started before the due date
        freezes it (the due date moves by the pause)."""
        if self.pause_start is not None and (self.due_at is None or self.pause_start < self.due_at):
            return min(now, self.pause_start)
        return now

    def is_overdue(self, now: datetime) -> bool:
        return (self.finished_at is None and self.due_at is not None
                and self.due_at < self.clock_now(now))


@dataclass(slots=True)
class FindingRow:
    id: str
    dossier_code: str
    rule: str
    severity: str
    state: str
    agency_code: str
    detected_at: datetime | None = None
    due_at: datetime | None = None
    title: str | None = None
    revision: int = 0


def as_utc(t):
    """A stored or message instant (datetime or ISO text) as an aware datetime; naive is UTC."""
    from datetime import timezone
    if isinstance(t, str):
        t = datetime.fromisoformat(t)
    if isinstance(t, datetime) and t.tzinfo is None:
        return t.replace(tzinfo=timezone.utc)
    return t


def row_from_doc(doc: dict) -> Row:
    """The row of a stored sla dossier document (or its `DOSSIER_PROJECTION`)."""
    s = doc.get("summary") or {}
    out = doc.get("outcome") or {}
    pause = None
    for p in reversed(doc.get("pauses") or ()):
        if p.get("end") is None and p.get("counted", True):
            pause = as_utc(p.get("start"))
            break
    officer = (doc.get("officer") or {}).get("name") or (s.get("last_actor") or {}).get("name")
    return Row(
        code=doc["_id"], rev=doc.get("rev", 0), agencies=tuple(doc.get("agencies") or ()),
        status=doc.get("status"), office=doc.get("office"),
        procedure_code=s.get("procedure_code") or doc.get("procedure_code"),
        field=s.get("field") or doc.get("procedure_field"),
        handling_agency=s.get("handling_agency") or doc.get("handling_agency_code"),
        channel=s.get("channel"), received_at=as_utc(s.get("received_at") or doc.get("received_at")),
        due_at=as_utc(doc.get("due_at") or s.get("due_at")), resolved_at=as_utc(s.get("resolved_at")),
        refused_at=as_utc(s.get("refused_at")), withdrawn_at=as_utc(s.get("withdrawn_at")),
        returned_at=as_utc(s.get("returned_at")), outcome=s.get("outcome"), timing=out.get("kind"),
        late_working_hours=out.get("late_working_hours"), components_n=s.get("components_n", 0),
        digitized_n=s.get("digitized_n", 0), supplement_requested=bool(s.get("supplement_requested")),
        pause_start=pause, officer=officer)


DOSSIER_PROJECTION = {"rev": 1, "agencies": 1, "status": 1, "office": 1, "procedure_code": 1,
                      "procedure_field": 1, "handling_agency_code": 1, "received_at": 1, "due_at": 1,
                      "outcome": 1, "pauses": 1, "officer": 1, "summary": 1}
FINDING_PROJECTION = {"dossier_code": 1, "rule": 1, "severity": 1, "state": 1, "agency_code": 1,
                      "detected_at": 1, "due_at": 1, "title": 1, "revision": 1}


def finding_row(doc: dict) -> FindingRow:
    """The row of a stored finding (`_id`) or a `sla.findings` message (`finding_id`)."""
    fid = doc.get("finding_id") or doc["_id"]
    return FindingRow(id=fid, dossier_code=doc["dossier_code"], rule=doc["rule"], severity=doc["severity"],
                      state=doc["state"], agency_code=doc["agency_code"], detected_at=as_utc(doc.get("detected_at")),
                      due_at=as_utc(doc.get("due_at")), title=doc.get("title"), revision=doc.get("revision", 0))


class View:
    """Rows under a lock; readers take a list copy (`rows()`, `findings()`) and work on it."""

    def __init__(self):
        self._lock = threading.Lock()
        self._rows: dict[str, Row] = {}
        self._findings: dict[str, FindingRow] = {}
        self._open: dict[str, FindingRow] = {}        # the open or escalated ones (most pages need only these)
        self._acked: dict[str, datetime | None] = {}
        self.loaded_at: datetime | None = None
        from .alerts import Alerts
        self.alerts = Alerts()           # notify's side of the findings (the dossier page)

    def replace_all(self, rows: Iterable[Row], findings: Iterable[FindingRow], acked: dict, at: datetime) -> None:
        r = {x.code: x for x in rows}
        f = {x.id: x for x in findings}
        o = {k: x for k, x in f.items() if x.state in OPEN_STATES}
        with self._lock:
            self._rows, self._findings, self._open, self._acked = r, f, o, dict(acked)
            self.loaded_at = at

    def put_dossier(self, row: Row) -> None:
        with self._lock:
            cur = self._rows.get(row.code)
            if cur is None or row.rev >= cur.rev:
                self._rows[row.code] = row

    def put_finding(self, f: FindingRow) -> None:
        with self._lock:
            cur = self._findings.get(f.id)
            if cur is None or f.revision >= cur.revision:
                self._findings[f.id] = f
                if f.state in OPEN_STATES:
                    self._open[f.id] = f
                else:
                    self._open.pop(f.id, None)

    def put_ack(self, finding_id: str, at: datetime | None) -> None:
        with self._lock:
            self._acked.setdefault(finding_id, at)

    def rows(self) -> list[Row]:
        with self._lock:
            return list(self._rows.values())

    def findings(self) -> list[FindingRow]:
        with self._lock:
            return list(self._findings.values())

    def open_findings(self) -> list[FindingRow]:
        with self._lock:
            return list(self._open.values())

    def acked(self) -> dict:
        with self._lock:
            return dict(self._acked)

    def row(self, code: str) -> Row | None:
        with self._lock:
            return self._rows.get(code)

    def finding(self, finding_id: str) -> FindingRow | None:
        with self._lock:
            return self._findings.get(finding_id)

    def __len__(self) -> int:
        return len(self._rows)

    def findings_count(self) -> int:
        return len(self._findings)


# ------------------------------------------------------------------------------------ queries

def visible(row: Row, scope: set[str]) -> bool:
    return any(a in scope for a in row.agencies)


class Thresholds:
    """`now` plus one working day, per office (computed once per request)."""

    def __init__(self, now: datetime, calendars: Callable[[str], object]):
        self.now, self._cal, self._due_soon = now, calendars, {}

    def calendar(self, office: str | None):
        return self._cal(office or "default")

    def due_soon_until(self, office: str | None) -> datetime:
        key = office or "default"
        t = self._due_soon.get(key)
        if t is None:
            t = self._due_soon[key] = self.calendar(key).add_working(self.now, ONE_WORKING_DAY)
        return t

    def overdue_hours(self, row: Row) -> float | None:
        """Working hours past the due date: while open, up to now (or the pause); once finished, the engine's."""
        if row.due_at is None:
            return None
        if row.finished_at is not None:
            return row.late_working_hours if row.timing == "late" else None
        end = row.clock_now(self.now)
        if row.due_at >= end:
            return None
        return self.calendar(row.office).working_between(row.due_at, end).total_seconds() / 3600


def dossier_state(row: Row, th: Thresholds) -> str:
    """overdue | due_soon | open | finished — the list filter `state`."""
    if row.finished_at is not None:
        return "finished"
    due = row.due_at
    if due is None:
        return "open"
    if row.pause_start is None:
        if due < th.now:
            return "overdue"
        return "due_soon" if due <= th.due_soon_until(row.office) else "open"
    return "overdue" if row.is_overdue(th.now) else "open"


@dataclass
class DossierFilter:
    agencies: set[str] | None = None     # handling agency among these (an agency's subtree)
    field: str | None = None
    procedure: str | None = None
    rule: str | None = None
    severity: str | None = None
    state: str | None = None             # overdue | due_soon | open | finished
    start: datetime | None = None        # received in [start, end)
    end: datetime | None = None


def select_dossiers(rows: Iterable[Row], findings: Iterable[FindingRow], scope: set[str],
                    flt: DossierFilter, th: Thresholds) -> list[Row]:
    """The visible dossiers matching `flt`: overdue ones most overdue first, others newest first."""
    with_finding = None
    if flt.rule or flt.severity:
        with_finding = {f.dossier_code for f in findings if f.state in OPEN_STATES
                        and (not flt.rule or f.rule == flt.rule) and (not flt.severity or f.severity == flt.severity)}
    out = []
    for r in rows:
        if not visible(r, scope):
            continue
        if flt.agencies is not None and r.handling_agency not in flt.agencies:
            continue
        if flt.field and r.field != flt.field:
            continue
        if flt.procedure and r.procedure_code != flt.procedure:
            continue
        if with_finding is not None and r.code not in with_finding:
            continue
        if flt.start is not None and (r.received_at is None or r.received_at < flt.start):
            continue
        if flt.end is not None and (r.received_at is None or r.received_at >= flt.end):
            continue
        if flt.state and dossier_state(r, th) != flt.state:
            continue
        out.append(r)
    if flt.state in ("overdue", "due_soon"):
        out.sort(key=lambda r: (r.due_at, r.code))
    else:
        out.sort(key=lambda r: (r.received_at or datetime.min.replace(tzinfo=TZ), r.code), reverse=True)
    return out


@dataclass
class FindingFilter:
    agencies: set[str] | None = None
    rule: str | None = None
    severity: str | None = None
    state: str | None = None             # open (open or escalated) | escalated | resolved | None: all
    unacked: bool = False
    start: datetime | None = None        # detected in [start, end)
    end: datetime | None = None


def select_findings(findings: Iterable[FindingRow], acked: dict, scope: set[str], flt: FindingFilter,
                    rows_by_code: Callable[[str], Row | None] | None = None,
                    field: str | None = None, procedure: str | None = None) -> list[FindingRow]:
    out = []
    for f in findings:
        if f.agency_code not in scope:
            continue
        if flt.agencies is not None and f.agency_code not in flt.agencies:
            continue
        if flt.rule and f.rule != flt.rule:
            continue
        if flt.severity and f.severity != flt.severity:
            continue
        if flt.state == "open" and f.state not in OPEN_STATES:
            continue
        if flt.state in ("escalated", "resolved") and f.state != flt.state:
            continue
        if flt.unacked and f.id in acked:
            continue
        if flt.start is not None and (f.detected_at is None or f.detected_at < flt.start):
            continue
        if flt.end is not None and (f.detected_at is None or f.detected_at >= flt.end):
            continue
        if (field or procedure) and rows_by_code is not None:
            r = rows_by_code(f.dossier_code)
            if r is None or (field and r.field != field) or (procedure and r.procedure_code != procedure):
                continue
        out.append(f)
    out.sort(key=lambda f: (f.detected_at or datetime.min.replace(tzinfo=TZ), f.id), reverse=True)
    return out


def month_start(d: date, back: int = 0) -> date:
    y, m = d.year, d.month - back
    while m <= 0:
        y, m = y - 1, m + 12
    return date(y, m, 1)


def overview(rows: list[Row], findings: list[FindingRow], acked: dict, scope: set[str], th: Thresholds,
             judge: Callable) -> dict:
    """The first screen's numbers: counts, violations by rule and severity, this month's on-time
    rate and the 12-month trend (by local month of resolution), agencies ranked by overdue."""
    today = th.now.astimezone(TZ).date()
    months = [month_start(today, back) for back in range(11, -1, -1)]
    first = datetime.combine(months[0], datetime.min.time(), tzinfo=TZ)
    trend = {m: {"early": 0, "on_time": 0, "late": 0} for m in months}
    overdue = due_soon = 0
    by_agency: dict[str, int] = {}
    oldest: list[Row] = []
    for r in rows:
        if not visible(r, scope):
            continue
        st = dossier_state(r, th)
        if st == "overdue":
            overdue += 1
            oldest.append(r)
            if r.handling_agency in scope:
                by_agency[r.handling_agency] = by_agency.get(r.handling_agency, 0) + 1
        elif st == "due_soon":
            due_soon += 1
        if r.resolved_at is not None and r.resolved_at >= first and r.handling_agency in scope:
            kind = judge(r.resolved_at, r.due_at)
            if kind is not None:
                m = r.resolved_at.astimezone(TZ).date().replace(day=1)
                if m in trend:
                    trend[m][kind] += 1
    oldest.sort(key=lambda r: (r.due_at, r.code))
    violations: dict[tuple[str, str], int] = {}
    open_n = unacked = 0
    for f in findings:
        if f.agency_code not in scope or f.state not in OPEN_STATES:
            continue
        open_n += 1
        violations[(f.rule, f.severity)] = violations.get((f.rule, f.severity), 0) + 1
        if f.severity == "critical" and f.id not in acked:
            unacked += 1
    points = []
    for m in months:
        t = trend[m]
        good, judged = t["early"] + t["on_time"], t["early"] + t["on_time"] + t["late"]
        points.append({"month": m, "good": good, "late": t["late"], "judged": judged,
                       "rate": (100.0 * good / judged) if judged else None})
    return {"overdue": overdue, "due_soon": due_soon, "open_violations": open_n, "unacked_critical": unacked,
            "violations": sorted(violations.items(), key=lambda kv: (-kv[1], kv[0])),
            "trend": points, "this_month": points[-1],
            "agencies": sorted(by_agency.items(), key=lambda kv: (-kv[1], kv[0])),
            "oldest": oldest[:10]}


# ------------------------------------------------------------------------------------ steps

EVENT_NAMES = {
    "dossier.received": "Tiếp nhận hồ sơ", "dossier.supplement_requested": "Yêu cầu bổ sung, hoàn thiện",
    "dossier.supplement_received": "Nhận hồ sơ bổ sung", "dossier.refused": "Từ chối tiếp nhận",
    "dossier.transferred": "Chuyển hồ sơ", "dossier.assigned": "Phân công cán bộ xử lý",
    "dossier.consultation_requested": "Xin ý kiến cơ quan khác",
    "dossier.consultation_answered": "Nhận ý kiến cơ quan khác",
    "dossier.apology_issued": "Gửi phiếu xin lỗi và hẹn lại", "dossier.paused": "Tạm dừng giải quyết",
    "dossier.resumed": "Tiếp tục giải quyết", "dossier.resolved": "Đã có kết quả giải quyết",
    "dossier.returned": "Đã trả kết quả", "dossier.withdrawn": "Dừng giải quyết theo yêu cầu",
    "dossier.stopped": "Dừng giải quyết hồ sơ theo đề nghị",
    "dossier.submitted": "Nộp hồ sơ trực tuyến",
}


def steps(doc: dict, now: datetime) -> list[dict]:
    """The dossier's steps: each event starts one, lasting until the next event (the last one
    until the dossier is finished, else `now`). Holder: after an assignment the assigned officer;
    after a transfer the receiving agency with no officer yet; otherwise the event's actor (else
    the previous holder). `late` when the step lasted past the legal due date."""
    s = doc.get("summary") or {}
    actors, assignees = s.get("actors") or {}, s.get("assignees") or {}
    to_agency = {t["event_id"]: t["to_agency_code"] for t in doc.get("transfers") or ()}
    events = sorted(doc.get("events") or (), key=lambda e: (as_utc(e["occurred_at"]), e.get("seq", 0)))
    due = as_utc(doc.get("due_at"))
    finished = [as_utc(s.get(k)) for k in ("resolved_at", "refused_at", "withdrawn_at") if s.get(k)]
    end_all = min(finished) if finished else now
    out: list[dict] = []
    agency, officer = None, None
    for i, e in enumerate(events):
        eid = str(e["event_id"])
        start = as_utc(e["occurred_at"])
        if e["type"] == "dossier.transferred":
            agency, officer = to_agency.get(eid, agency), None
        else:
            agency = agency or e.get("agency_code")
            who = assignees.get(eid) or actors.get(eid)
            if who:
                officer = who
        end = as_utc(events[i + 1]["occurred_at"]) if i + 1 < len(events) else max(start, end_all)
        late = due is not None and end > due and e["type"] not in ("dossier.returned",)
        out.append({"event_id": eid, "type": e["type"], "name": EVENT_NAMES.get(e["type"], e["type"]),
                    "start": start, "end": end, "agency": agency, "actor": actors.get(eid),
                    "officer": officer, "late": late, "out_of_order": e.get("out_of_order", False)})
    return out
