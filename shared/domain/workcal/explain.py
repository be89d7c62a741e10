"""The calendar in Vietnamese: working durations (`working_hours_vi`, used by alerts and the
dashboard) and how a due date is computed (`explain_due`, `motcua deadline --explain` and the
engine's explanations)."""
from __future__ import annotations

from datetime import datetime, timedelta
from typing import Sequence

from shared.domain.instants import TZ, UTC
from shared.domain.limits import Limit, parse_limit
from shared.domain.workcal.calendar import (KIND_COUNTER, KIND_HOLIDAY, KIND_LOCAL_OFF,
                                            KIND_LOCAL_WORKING, KIND_MAKEUP, KIND_WEEKEND,
                                            KIND_WORKING, WorkingCalendar)

WEEKDAY_VI = ("Thứ Hai", "Thứ Ba", "Thứ Tư", "Thứ Năm", "Thứ Sáu", "Thứ Bảy", "Chủ nhật")
_US = 1_000_000


def working_hours_vi(hours: float) -> str:
    """A positive working duration in Vietnamese: '2 ngày 3 giờ làm việc' (a working day is 8
    working hours; minutes only under a day)."""
    days, rest = divmod(round(hours * 60), 8 * 60)
    h, m = divmod(rest, 60)
    parts = []
    if days:
        parts.append(f"{days} ngày")
    if h:
        parts.append(f"{h} giờ")
    if m and not days:
        parts.append(f"{m} phút")
    return " ".join(parts or ["dưới 1 phút"]) + " làm việc"


def _vi_instant(t: datetime) -> str:
    local = t.astimezone(TZ)
    return f"{local:%H:%M} {WEEKDAY_VI[local.weekday()]}, {local:%d/%m/%Y}"


def _vi_duration(span: timedelta, days: bool = False) -> str:
    minutes, rest = divmod(span // timedelta(microseconds=1), 60 * _US)
    hours, minutes = divmod(minutes, 60)
    parts = []
    if days and hours >= 24:
        n, hours = divmod(hours, 24)
        parts.append(f"{n} ngày")
    if hours:
        parts.append(f"{hours} giờ")
    if minutes:
        parts.append(f"{minutes} phút")
    if rest:
        parts.append(f"{rest / _US:g} giây")
    return " ".join(parts) or "0 phút"


def _vi_limit(limit: Limit) -> str:
    if limit.unit == "wd":
        return f"{limit.value} ngày làm việc ({limit.value * 8} giờ làm việc)"
    if limit.unit == "wh":
        return f"{limit.value} giờ làm việc"
    if limit.unit == "cd":
        return f"{limit.value} ngày (tính theo ngày dương lịch)"
    return "trong ngày (tiếp nhận trước 15 giờ ngày làm việc: trả trong ngày; sau đó: ngày làm việc tiếp theo)"


_KIND_VI = {
    KIND_HOLIDAY: "Ngày nghỉ lễ, Tết",
    KIND_WEEKEND: "Ngày nghỉ cuối tuần",
    KIND_MAKEUP: "Ngày làm việc bù",
    KIND_LOCAL_OFF: "Ngày nghỉ theo quyết định của địa phương",
    KIND_LOCAL_WORKING: "Ngày làm việc theo quyết định của địa phương",
    KIND_COUNTER: "Phiên tiếp nhận ngoài ngày làm việc",
}


def explain_due(cal: WorkingCalendar, received_at: datetime, limit: Limit | str,
                pauses: Sequence[tuple[datetime, datetime | None]] = (), *, ruleset: str,
                catalog_version: str, now: datetime | None = None) -> dict:
    """How the due date of a dossier is computed: data plus Vietnamese text lines (`lines`)."""
    if not isinstance(limit, Limit):
        limit = parse_limit(limit)
    due, trace, start = cal.due_trace(received_at, limit, pauses, now=now)
    received_utc = received_at.astimezone(UTC)
    moved = start != received_utc
    lines = [
        f"Thời điểm tiếp nhận: {_vi_instant(received_utc)} (giờ Việt Nam).",
        (f"Bắt đầu tính thời hạn: {_vi_instant(start)} — tiếp nhận ngoài giờ làm việc nên chuyển sang "
         f"thời điểm làm việc kế tiếp." if moved else
         f"Bắt đầu tính thời hạn: ngay khi tiếp nhận ({_vi_instant(start)}), trong giờ làm việc."),
        f"Thời hạn giải quyết: {_vi_limit(limit)}.",
    ]
    if limit.unit == "wd":
        lines.append("Quy ước: 1 ngày làm việc = 8 giờ làm việc; hạn đến đúng lúc hết phiên làm việc "
                     "thì là thời điểm hết phiên đó.")
    if limit.unit == "cd":
        lines.append("Quy ước: hạn là cuối giờ làm việc của ngày thứ N kể từ ngày bắt đầu tính; nếu ngày "
                     "đó là ngày nghỉ thì là cuối giờ làm việc của ngày làm việc tiếp theo (Điều 148 Bộ luật "
                     "Dân sự 2015).")
    pause_data = []
    for p in trace:
        ps, pe = p["start"], p["end"]
        second = timedelta(seconds=1)
        item = {"start": ps.isoformat(), "end": pe.isoformat(), "counted": p["counted"],
                "working_seconds": p["working"] / second, "calendar_seconds": p["calendar"] / second}
        pause_data.append(item)
        if p["counted"]:
            extra = (f"{_vi_duration(p['working'])} làm việc" if limit.unit != "cd"
                     else f"{_vi_duration(p['calendar'], days=True)} theo lịch")
            lines.append(f"Tạm dừng tính thời hạn từ {_vi_instant(ps)} đến {_vi_instant(pe)}: không tính "
                         f"{extra}.")
        else:
            lines.append(f"Tạm dừng từ {_vi_instant(ps)} đến {_vi_instant(pe)}: sau thời điểm đến hạn nên "
                         f"không làm thay đổi hạn.")
    open_pauses = [p for p in pauses if p[1] is None]
    if open_pauses:
        lines.append("Có thời gian tạm dừng chưa kết thúc: hạn trên được tính "
                     + (f"như thể tính tiếp từ {_vi_instant(now)}." if now is not None
                        else "như thể tính tiếp ngay từ lúc tạm dừng (hạn sớm nhất có thể)."))
    # days crossed: from the receipt day to the due day, every non-ordinary day
    first = received_utc.astimezone(TZ).date()
    last = due.astimezone(TZ).date()
    days = []
    d = first
    while d <= last:
        info = cal.day_info(d)
        if info.kind != KIND_WORKING:
            label = info.name
            if info.kind == KIND_WEEKEND and label:
                label = f"trùng {label}"
            days.append({"date": d.isoformat(), "weekday": WEEKDAY_VI[d.weekday()], "kind": info.kind,
                         "name": info.name, "working": info.is_working, "basis": info.basis})
            text = f"{_KIND_VI[info.kind]}: {WEEKDAY_VI[d.weekday()]}, {d:%d/%m/%Y}"
            if label:
                text += f" — {label}"
            if info.basis:
                text += f" ({info.basis})"
            if info.kind == KIND_COUNTER and not info.is_working:
                text += " — không tính vào thời hạn"
            lines.append(text + ".")
        d += timedelta(days=1)
    lines.append(f"Hạn giải quyết: {_vi_instant(due)}.")
    lines.append(f"Phiên bản lịch làm việc: {cal.version}; bộ quy tắc: {ruleset}; phiên bản danh mục "
                 f"thủ tục: {catalog_version}.")
    return {
        "received_at": received_utc.isoformat(),
        "start_at": start.isoformat(),
        "start_moved": moved,
        "limit": str(limit),
        "unit": limit.unit,
        "value": limit.value,
        "limit_working_hours": (limit.value * 8 if limit.unit == "wd"
                                else limit.value if limit.unit == "wh" else None),
        "pauses": pause_data,
        "days": days,
        "due_at": due.isoformat(),
        "due_at_local": due.astimezone(TZ).isoformat(),
        "office": cal.office.id,
        "calendar_version": cal.version,
        "ruleset": ruleset,
        "catalog_version": catalog_version,
        "lines": lines,
    }
