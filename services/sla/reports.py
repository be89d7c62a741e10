"""On-time report (LEGAL.md "Reports"): Biểu 06/VPCP/KSTT columns and the Decision 766 groups our
events can feed, per agency, field or procedure, for a period of local (Asia/Ho_Chi_Minh) dates.

Computed in Python over a projection of the dossiers' `summary` (no aggregation stage FerretDB
v1.24 lacks). Definitions (a dossier counts in the period [from 00:00, to+1 00:00) local time;
a period that includes now is judged at now, a past period at its end — the "judged" instant):
- received: `carried_over` (received before the period, not finished before it), `online`,
  `direct_postal` (received in the period by that channel);
- resolved in the period: `early` (resolved on a local date before the due date's date),
  `on_time` (by the due instant), `late` (after it; an apology does not change this);
  `resolved_no_due` when the engine gave no due date (e.g. unknown procedure);
- not finished in the period: `in_progress_on_time`, `in_progress_overdue` (due before the judged
  instant: a dossier due at 17:00 today is not overdue in a report read at 09:00);
- refused / withdrawn in the period; `stopped` (at the applicant's request, Đ21 NĐ 118/2025):
  finished, in its own column, never early, on time or late (a resolution posted after the stop
  is not counted); `extended`: received in the period with an apology / extension request
  (Đ19 k6 NĐ 118, Phiếu xin lỗi under 61/107); supplement-request rate, online share (online and
  VNeID), digitised share;
- each dossier is judged by its own due date, computed by the rule set of its receipt instant
  (a period spanning 1/7/2025 mixes nd61-107 and nd118-2025 dossiers: `rulesets` counts them);
- `returned_unresolved`: resolved in the period with outcome `denied` (the agency finished the
  dossier without granting it and returned it to the applicant with its reasons), and its rate
  over all resolved in the period (DESIGN.md §9 "refusal and returned-unresolved rate").
"Finished" means resolved, refused, withdrawn or stopped. The agency of a dossier is its handling agency
(after transfers), the field comes from the procedure catalog.
"""
from __future__ import annotations

import csv
import io
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta, timezone

from shared.platform.httpapi import ApiError
from shared.domain.instants import TZ

GROUP_BY = ("agency", "field", "procedure")
COUNTS = ("carried_over", "received_online", "received_direct_postal", "received_total",
          "resolved_early", "resolved_on_time", "resolved_late", "resolved_no_due", "resolved_total",
          "returned_unresolved", "in_progress_on_time", "in_progress_overdue", "in_progress_total",
          "refused", "withdrawn", "stopped", "extended", "supplement_requested", "components",
          "components_digitized")
RATES = ("on_time_rate", "supplement_rate", "refusal_rate", "returned_unresolved_rate", "online_share",
         "digitized_share")
HEADERS_VI = {
    "group": "Nhóm", "name": "Tên",
    "carried_over": "Số hồ sơ kỳ trước chuyển qua", "received_online": "Tiếp nhận trực tuyến",
    "received_direct_postal": "Tiếp nhận trực tiếp và qua bưu chính",
    "received_total": "Tổng số hồ sơ tiếp nhận",
    "resolved_early": "Đã giải quyết trước hạn", "resolved_on_time": "Đã giải quyết đúng hạn",
    "resolved_late": "Đã giải quyết quá hạn", "resolved_no_due": "Đã giải quyết (không xác định hạn)",
    "resolved_total": "Tổng số đã giải quyết",
    "returned_unresolved": "Đã giải quyết, trả lại hồ sơ (không chấp thuận)",
    "in_progress_on_time": "Đang giải quyết trong hạn", "in_progress_overdue": "Đang giải quyết quá hạn",
    "in_progress_total": "Tổng số đang giải quyết",
    "refused": "Từ chối tiếp nhận", "withdrawn": "Rút hồ sơ",
    "stopped": "Dừng giải quyết theo đề nghị của người nộp",
    "extended": "Có văn bản xin lỗi, đề nghị gia hạn",
    "supplement_requested": "Có yêu cầu bổ sung", "components": "Thành phần hồ sơ tiếp nhận",
    "components_digitized": "Thành phần đã số hóa",
    "on_time_rate": "Tỷ lệ giải quyết đúng hạn (%)", "supplement_rate": "Tỷ lệ yêu cầu bổ sung (%)",
    "refusal_rate": "Tỷ lệ từ chối (%)",
    "returned_unresolved_rate": "Tỷ lệ trả lại hồ sơ không chấp thuận (%)", "online_share": "Tỷ lệ tiếp nhận trực tuyến (%)",
    "digitized_share": "Tỷ lệ số hóa thành phần hồ sơ (%)",
}
COVERED_766 = [
    {"group": "Tiến độ, kết quả giải quyết", "points": 20, "covered": True,
     "columns": ["on_time_rate", "resolved_early", "resolved_on_time", "resolved_late",
                 "in_progress_on_time", "in_progress_overdue"]},
    {"group": "Số hóa hồ sơ", "points": 22, "covered": True, "columns": ["digitized_share"]},
    {"group": "Cung cấp dịch vụ trực tuyến", "points": 22, "covered": True, "columns": ["online_share"]},
    {"group": "Công khai, minh bạch", "points": 18, "covered": False, "columns": []},
    {"group": "Mức độ hài lòng", "points": 18, "covered": False, "columns": []},
]


# report dates: far enough for any real period, near enough that `to + 1 day` and the UTC
# conversion of local midnight stay inside `datetime`'s range
MIN_DATE, MAX_DATE = date(1970, 1, 1), date(2999, 12, 31)


@dataclass(frozen=True)
class Params:
    agency: str | None
    start: datetime          # inclusive, UTC
    end: datetime            # exclusive, UTC
    date_from: date
    date_to: date
    group_by: str
    judged_at: datetime | None = None   # the instant in-progress dossiers are judged at (None: end)

    @property
    def at(self) -> datetime:
        return self.end if self.judged_at is None else min(self.judged_at, self.end)


def _date(args, name: str, default: date) -> date:
    raw = args.get(name)
    if raw is None:
        return default
    try:
        value = date.fromisoformat(raw)
    except ValueError:
        raise ApiError.one(400, "invalid", f"{name} must be a date YYYY-MM-DD", field=name) from None
    if not MIN_DATE <= value <= MAX_DATE:
        raise ApiError.one(400, "invalid", f"{name} must be a date from {MIN_DATE.isoformat()} "
                           f"to {MAX_DATE.isoformat()}", field=name)
    return value


def parse_params(args, now: datetime) -> Params:
    """Validate the query (agency, from, to, group_by); ApiError 400 naming the bad parameter."""
    unknown = sorted(set(args) - {"agency", "from", "to", "group_by"})
    if unknown:
        raise ApiError(400, [{"code": "unknown_field", "field": u, "message": "unknown query parameter"}
                             for u in unknown])
    today = now.astimezone(TZ).date()
    d_from = _date(args, "from", today.replace(day=1))
    d_to = _date(args, "to", today)
    if d_from > d_to:
        raise ApiError.one(400, "invalid", "from must not be after to", field="from")
    group_by = args.get("group_by", "agency")
    if group_by not in GROUP_BY:
        raise ApiError.one(400, "invalid", f"group_by must be one of {', '.join(GROUP_BY)}", field="group_by")
    start = datetime.combine(d_from, time(0), tzinfo=TZ)
    end = datetime.combine(d_to + timedelta(days=1), time(0), tzinfo=TZ)
    return Params(args.get("agency"), start, end, d_from, d_to, group_by, judged_at=min(now, end))


def _finished_at(s: dict) -> datetime | None:
    times = [s[k] for k in ("resolved_at", "refused_at", "withdrawn_at", "stopped_at") if s.get(k)]
    return min(times) if times else None


def _resolved_at(s: dict) -> datetime | None:
    """The resolution that counts: none once the dossier was stopped before it."""
    res, stop = s.get("resolved_at"), s.get("stopped_at")
    return None if res is not None and stop is not None and stop <= res else res


def _key(s: dict, group_by: str, catalog) -> tuple[str, str]:
    if group_by == "agency":
        return s.get("handling_agency") or "?", ""
    code = s.get("procedure_code") or "?"
    proc = catalog.get(code) if catalog is not None and code in catalog else None
    if group_by == "procedure":
        return code, proc.name if proc else ""
    return (s.get("field") or (proc.field if proc else "?")), ""


def tally(summaries, params: Params, catalog=None) -> dict[tuple[str, str], dict]:
    """Counts per group for dossier summaries (pure; the API feeds it from MongoDB)."""
    groups: dict[tuple[str, str], dict] = {}
    in_period = lambda t: t is not None and params.start <= t < params.end   # noqa: E731
    for s in summaries:
        rec = s.get("received_at")
        if rec is None or rec >= params.end:
            continue
        fin = _finished_at(s)
        if rec < params.start and fin is not None and fin < params.start:
            continue
        g = groups.setdefault(_key(s, params.group_by, catalog), dict.fromkeys(COUNTS, 0))
        if rec < params.start:
            g["carried_over"] += 1
        elif s.get("channel") in ("online", "vneid"):
            g["received_online"] += 1
        else:
            g["received_direct_postal"] += 1
        if rec >= params.start:
            g["components"] += s.get("components_n", 0)
            g["components_digitized"] += s.get("digitized_n", 0)
            if s.get("supplement_requested"):
                g["supplement_requested"] += 1
            if s.get("extended"):
                g["extended"] += 1
        due = s.get("due_at")
        res = _resolved_at(s)
        if in_period(res):
            g["resolved_" + (judge(res, due) or "no_due")] += 1
            if s.get("outcome") == "denied":
                g["returned_unresolved"] += 1
        if in_period(s.get("refused_at")):
            g["refused"] += 1
        if in_period(s.get("withdrawn_at")):
            g["withdrawn"] += 1
        if in_period(s.get("stopped_at")):
            g["stopped"] += 1
        if fin is None or fin >= params.end:
            # overdue when due before the judged instant: a dossier due at 17:00 is not late at 09:00
            if due is not None and due < params.at:
                g["in_progress_overdue"] += 1
            else:
                g["in_progress_on_time"] += 1
    for g in groups.values():
        g["received_total"] = g["carried_over"] + g["received_online"] + g["received_direct_postal"]
        g["resolved_total"] = (g["resolved_early"] + g["resolved_on_time"] + g["resolved_late"]
                               + g["resolved_no_due"])
        g["in_progress_total"] = g["in_progress_on_time"] + g["in_progress_overdue"]
        new = g["received_online"] + g["received_direct_postal"]
        judged = g["resolved_early"] + g["resolved_on_time"] + g["resolved_late"]
        g["on_time_rate"] = _pct(g["resolved_early"] + g["resolved_on_time"], judged)
        g["supplement_rate"] = _pct(g["supplement_requested"], new)
        g["refusal_rate"] = _pct(g["refused"], new)
        g["returned_unresolved_rate"] = _pct(g["returned_unresolved"], g["resolved_total"])
        g["online_share"] = _pct(g["received_online"], new)
        g["digitized_share"] = _pct(g["components_digitized"], g["components"])
    return groups


def judge(resolved_at: datetime, due_at: datetime | None) -> str | None:
    """early (resolved on a local date before the due date's), on_time (by the due instant),
    late (after it); None without a due date."""
    if due_at is None:
        return None
    if resolved_at > due_at:
        return "late"
    if resolved_at.astimezone(TZ).date() < due_at.astimezone(TZ).date():
        return "early"
    return "on_time"


def _pct(a: int, b: int) -> float | None:
    return round(100.0 * a / b, 2) if b else None


def on_time_report(dossiers_coll, agencies, params: Params, catalog=None, directory=None) -> dict:
    """The report for dossiers handled by `agencies` (the caller's visible subtree)."""
    q = {"summary.handling_agency": {"$in": sorted(agencies)},
         "summary.received_at": {"$lt": params.end}}
    summaries = (d.get("summary") or {} for d in dossiers_coll.find(q, {"summary": 1}))
    return report_of(summaries, params, catalog, directory)


def report_of(summaries, params: Params, catalog=None, directory=None) -> dict:
    """The report of these dossier summaries (anything with the summary's `get`)."""
    summaries = list(summaries)          # read twice: the tally and the rule-set count
    groups = tally(summaries, params, catalog)
    rulesets: dict[str, int] = {}
    for s in summaries:
        if s.get("ruleset") and s.get("received_at") is not None and (
                s["received_at"] >= params.start or (_finished_at(s) or params.end) >= params.start):
            rulesets[s["ruleset"]] = rulesets.get(s["ruleset"], 0) + 1
    rows = []
    for (key, name), counts in sorted(groups.items()):
        if params.group_by == "agency" and directory is not None:
            ag = directory.get(key)
            name = ag.name if ag else ""
        rows.append({"group": key, "name": name, **counts})
    total = tally_total(rows)
    return {"title": "Tình hình, kết quả giải quyết thủ tục hành chính (Biểu 06/VPCP/KSTT)",
            "agency": params.agency, "from": params.date_from.isoformat(),
            "to": params.date_to.isoformat(), "group_by": params.group_by,
            "judged_at": params.at.astimezone(timezone.utc).isoformat(),
            "decision_766_groups": COVERED_766, "rows": rows, "total": total,
            "rulesets": dict(sorted(rulesets.items()))}


def tally_total(rows: list[dict]) -> dict:
    total = {c: sum(r[c] for r in rows) for c in COUNTS}
    new = total["received_online"] + total["received_direct_postal"]
    judged = total["resolved_early"] + total["resolved_on_time"] + total["resolved_late"]
    total.update(on_time_rate=_pct(total["resolved_early"] + total["resolved_on_time"], judged),
                 supplement_rate=_pct(total["supplement_requested"], new),
                 refusal_rate=_pct(total["refused"], new),
                 returned_unresolved_rate=_pct(total["returned_unresolved"], total["resolved_total"]),
                 online_share=_pct(total["received_online"], new),
                 digitized_share=_pct(total["components_digitized"], total["components"]))
    return total


def to_csv(report: dict) -> str:
    """The report as CSV (UTF-8 with BOM so spreadsheet software shows Vietnamese correctly)."""
    cols = ["group", "name", *COUNTS, *RATES]
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow([HEADERS_VI[c] for c in cols])
    for r in report["rows"]:
        w.writerow(["" if r.get(c) is None else r.get(c) for c in cols])
    t = report["total"]
    w.writerow(["Tổng cộng", ""] + ["" if t.get(c) is None else t.get(c) for c in (*COUNTS, *RATES)])
    return "\ufeff" + buf.getvalue()
