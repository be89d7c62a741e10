"""The working-time calendar computed the slow, obvious way: a reference for the calendar's
property tests and the baseline of its benchmark (default office hours, python-holidays' VN)."""
from __future__ import annotations

from datetime import datetime, time, timedelta, timezone

from shared.domain.instants import TZ

SESSIONS = ((time(7, 30), time(11, 30)), (time(13, 0), time(17, 0)))


def day_by_day_add(vn, t: datetime, duration: timedelta) -> datetime:
    """`t` plus `duration` of working time, stepping day by day and session by session on
    `vn.is_working_day`."""
    local = t.astimezone(TZ)
    remaining = duration
    d = local.date()
    while True:
        if vn.is_working_day(d):
            for s, e in SESSIONS:
                begin = max(datetime.combine(d, s, TZ), local)
                end = datetime.combine(d, e, TZ)
                if begin >= end:
                    continue
                if remaining <= end - begin:
                    return (begin + remaining).astimezone(timezone.utc)
                remaining -= end - begin
        d += timedelta(days=1)
