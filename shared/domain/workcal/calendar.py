"""`WorkingCalendar`: for one office, which instants are working time, and the arithmetic on it
(working time between instants, adding working time, legal due dates with pauses).

Working time is the office's sessions per weekday, minus public holidays, plus the make-up
working Saturdays of government swap decisions (both from python-holidays' `VN` calendar, in
Vietnamese), plus the local decisions of the province override files (`files.py`). The
conventions are in the package's docstring.

Speed: every session of the covered years is precomputed into flat arrays (UTC start, end,
cumulative working time), so working time up to an instant and its inverse are one `bisect`
each — nothing steps day by day.
"""
from __future__ import annotations

import hashlib
import json
from bisect import bisect_left, bisect_right
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from typing import Sequence

import holidays as pyholidays

from shared.domain.instants import TZ, UTC
from shared.domain.limits import Limit, parse_limit
from shared.domain.workcal.errors import CalendarRangeError
from shared.domain.workcal.files import (DEFAULT_SESSIONS, YEARS, CounterRule, LocalDay, Office,
                                         Overrides)

ALGORITHM_VERSION = "1"          # bump when the arithmetic changes (changes every `version`)
WORKING_DAY = timedelta(hours=8)   # 1wd, DESIGN.md §5
SAME_DAY_CUTOFF = time(15, 0)      # same-day: received before 15:00 on a working day

_US = 1_000_000
_DAY_US = 86_400 * _US
_HOUR_US = 3_600 * _US
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)

# kinds of days that are not ordinary (office-hours) days, as `DayInfo.kind`
KIND_WORKING = "working"            # ordinary working day (office hours)
KIND_WEEKEND = "weekend"            # no office hours that weekday
KIND_HOLIDAY = "holiday"            # public holiday on a day with office hours
KIND_MAKEUP = "makeup"              # make-up working day (government swap)
KIND_LOCAL_OFF = "local_off"        # day off by a local (province) decision
KIND_LOCAL_WORKING = "local_working"  # working day by a local decision
KIND_COUNTER = "counter_session"    # weekend day with a counter session (override file)


@dataclass(frozen=True)
class DayInfo:
    """What a calendar day is for one office (explanations, quiet hours, reports)."""
    date: date
    kind: str                                  # one of the KIND_* constants
    name: str | None                           # Vietnamese name of the holiday/decision, if any
    sessions: tuple[tuple[int, int], ...]      # working sessions (minutes of the day)
    counter_sessions: tuple[tuple[int, int], ...] = ()   # open for receipt, not working time
    basis: str | None = None                   # legal basis of a local decision

    @property
    def is_working(self) -> bool:
        return bool(self.sessions)


def _us(t: datetime) -> int:
    """Microseconds since the Unix epoch of an aware instant."""
    try:
        d = t - _EPOCH
    except TypeError:
        raise ValueError(f"naive datetime {t!r}: instants must carry a UTC offset") from None
    return (d.days * 86_400 + d.seconds) * _US + d.microseconds


def _dt(us: int) -> datetime:
    return _EPOCH + timedelta(microseconds=us)


def _fmt_sessions(sessions) -> list[str]:
    return [f"{s // 60:02d}:{s % 60:02d}-{e // 60:02d}:{e % 60:02d}" for s, e in sessions]


class WorkingCalendar:
    """Working time of one office; all operations take aware datetimes and return UTC ones."""

    def __init__(self, office: Office | None = None, overrides: Sequence[Overrides] = (),
                 years: range = YEARS):
        self.office = office or Office("default", "Giờ hành chính", (DEFAULT_SESSIONS,) * 5 + ((), ()),
                                       DEFAULT_SESSIONS)
        self.overrides = tuple(overrides)
        self.years = years
        self._first_day = date(years.start, 1, 1)
        self._last_day = date(years.stop - 1, 12, 31)
        self._vn = pyholidays.VN(years=years, language="vi")
        self._days: dict[date, DayInfo] = {}       # non-ordinary days only
        self._build()

    # ---- construction
    def _classify(self, d: date, local_off, local_work, counter_rules) -> DayInfo:
        wd = d.weekday()
        base = self.office.sessions[wd]
        if d in local_off:
            ld = local_off[d]
            return DayInfo(d, KIND_LOCAL_OFF, ld.name, (), basis=ld.basis)
        if d in local_work:
            ld = local_work[d]
            return DayInfo(d, KIND_LOCAL_WORKING, ld.name, ld.sessions or self.office.makeup_sessions,
                           basis=ld.basis)
        if d in self._weekend_workdays:
            return DayInfo(d, KIND_MAKEUP, self._makeup_name(d), base or self.office.makeup_sessions)
        hol = self._vn.get(d)
        if hol is not None:
            return DayInfo(d, KIND_HOLIDAY if base else KIND_WEEKEND, hol, ())
        if base:
            return DayInfo(d, KIND_WORKING, None, base)
        for rule in counter_rules:
            if wd in rule.weekdays and rule.start <= d and (rule.end is None or d <= rule.end):
                if rule.counts_toward_deadlines:
                    return DayInfo(d, KIND_COUNTER, rule.name, rule.sessions, basis=rule.basis)
                return DayInfo(d, KIND_COUNTER, rule.name, (), rule.sessions, basis=rule.basis)
        return DayInfo(d, KIND_WEEKEND, None, ())

    def _makeup_name(self, d: date) -> str:
        token = d.strftime("%d/%m/%Y")
        for hd, name in sorted(self._vn.items()):
            if token in name:
                return f"Ngày làm việc bù (cho ngày nghỉ {hd.strftime('%d/%m/%Y')})"
        return "Ngày làm việc bù"

    def _build(self) -> None:
        local_off: dict[date, LocalDay] = {}
        local_work: dict[date, LocalDay] = {}
        counter_rules: list[CounterRule] = []
        for ov in self.overrides:      # later files win over earlier ones for the same date
            for ld in ov.days_off:
                local_work.pop(ld.date, None)
                local_off[ld.date] = ld
            for ld in ov.working_days:
                local_off.pop(ld.date, None)
                local_work[ld.date] = ld
            counter_rules.extend(ov.counter_sessions)
        self._weekend_workdays = set(getattr(self._vn, "weekend_workdays", ()) or ())

        starts: list[int] = []
        ends: list[int] = []
        cum_before: list[int] = []
        cum_end: list[int] = []
        total = 0
        day_start_us = _us(datetime.combine(self._first_day, time(0), TZ))
        d = self._first_day
        offset0 = TZ.utcoffset(datetime.combine(d, time(12)))
        one_day = timedelta(days=1)
        fingerprint = []
        while d <= self._last_day:
            info = self._classify(d, local_off, local_work, counter_rules)
            if TZ.utcoffset(datetime.combine(d, time(12))) != offset0:   # never since 1975
                day_start_us = _us(datetime.combine(d, time(0), TZ))
            for s, e in info.sessions:
                starts.append(day_start_us + s * 60 * _US)
                ends.append(day_start_us + e * 60 * _US)
                cum_before.append(total)
                total += (e - s) * 60 * _US
                cum_end.append(total)
            if info.kind != KIND_WORKING:
                self._days[d] = info
                fingerprint.append([d.isoformat(), info.kind, info.name, _fmt_sessions(info.sessions),
                                    _fmt_sessions(info.counter_sessions)])
            d += one_day
            day_start_us += _DAY_US
        self._starts, self._ends, self._cum_before, self._cum_end = starts, ends, cum_before, cum_end
        self._range_us = (_us(datetime.combine(self._first_day, time(0), TZ)),
                          _us(datetime.combine(self._last_day + one_day, time(0), TZ)))
        payload = json.dumps({
            "algorithm": ALGORITHM_VERSION, "years": [self.years.start, self.years.stop],
            "office": self.office.id, "sessions": [_fmt_sessions(s) for s in self.office.sessions],
            "makeup": _fmt_sessions(self.office.makeup_sessions), "days": fingerprint,
        }, ensure_ascii=False, sort_keys=True)
        self.version = f"{self.office.id}-{hashlib.sha256(payload.encode()).hexdigest()[:12]}"

    def __repr__(self) -> str:
        return f"WorkingCalendar({self.version})"

    # ---- low level: working-time coordinate
    def _check(self, u: int) -> int:
        if not self._range_us[0] <= u < self._range_us[1]:
            raise CalendarRangeError(
                f"{_dt(u).isoformat()} is outside the calendar years {self.years.start}–{self.years.stop - 1}")
        return u

    def _w(self, u: int) -> int:
        """Working microseconds from the start of the covered range up to instant `u`."""
        if not self._range_us[0] <= u < self._range_us[1]:
            self._check(u)
        k = bisect_right(self._starts, u) - 1
        if k < 0:
            return 0
        e = self._ends[k]
        return self._cum_before[k] + (u if u < e else e) - self._starts[k]

    def _inv(self, w: int) -> int:
        """The earliest instant whose working coordinate reaches `w` (> 0)."""
        k = bisect_left(self._cum_end, w)
        if k == len(self._cum_end):
            raise CalendarRangeError(f"the result falls after the calendar's last year {self.years.stop - 1}")
        return self._starts[k] + w - self._cum_before[k]

    # ---- public API
    def day_info(self, d: date) -> DayInfo:
        """What `d` is for this office (kind, Vietnamese name, sessions)."""
        if not self._first_day <= d <= self._last_day:
            raise CalendarRangeError(f"{d} is outside the calendar years {self.years.start}–{self.years.stop - 1}")
        info = self._days.get(d)
        return info if info is not None else DayInfo(d, KIND_WORKING, None, self.office.sessions[d.weekday()])

    def is_working_day(self, d: date) -> bool:
        """True when `d` has office hours that count as working time."""
        return self.day_info(d).is_working

    def is_working_instant(self, t: datetime) -> bool:
        """True when `t` is inside a working session (start inclusive, end exclusive)."""
        u = self._check(_us(t))
        k = bisect_right(self._starts, u) - 1
        return k >= 0 and u < self._ends[k]

    def is_counter_open(self, t: datetime) -> bool:
        """Working time, or a counter session of the override file that is not working time."""
        if self.is_working_instant(t):
            return True
        local = t.astimezone(TZ)
        minute = local.hour * 60 + local.minute
        return any(s <= minute < e for s, e in self.day_info(local.date()).counter_sessions)

    def next_working_instant(self, t: datetime) -> datetime:
        """`t` itself if it is working time, else the start of the next session."""
        u = self._check(_us(t))
        k = bisect_right(self._starts, u) - 1
        if k >= 0 and u < self._ends[k]:
            return t.astimezone(UTC)
        if k + 1 >= len(self._starts):
            raise CalendarRangeError(f"no working time after {t.isoformat()} in the calendar's years")
        return _dt(self._starts[k + 1])

    def add_working(self, t: datetime, duration: timedelta) -> datetime:
        """The earliest instant at which `duration` of working time has elapsed since `t`."""
        if duration < timedelta(0):
            raise ValueError(f"negative working duration {duration}")
        u = _us(t)
        if not duration:
            self._check(u)
            return t.astimezone(UTC)
        d = (duration.days * 86_400 + duration.seconds) * _US + duration.microseconds
        return _dt(self._inv(self._w(u) + d))

    def working_between(self, a: datetime, b: datetime) -> timedelta:
        """Working time in [a, b]; negative when b is before a."""
        return timedelta(microseconds=self._w(_us(b)) - self._w(_us(a)))

    def end_of_working_day(self, d: date) -> datetime:
        """End of office hours on `d`, or, if `d` is not a working day, of the next working day."""
        day = self.day_info(d)
        while not day.is_working:
            nxt = day.date + timedelta(days=1)
            if nxt > self._last_day:
                raise CalendarRangeError(f"no working day after {d} in the calendar's years")
            day = self.day_info(nxt)
        end_minute = day.sessions[-1][1]
        return (datetime.combine(day.date, time(0), TZ) + timedelta(minutes=end_minute)).astimezone(UTC)

    def next_working_day(self, d: date) -> date:
        """The first working day strictly after `d`."""
        return self.end_of_working_day(d + timedelta(days=1)).astimezone(TZ).date()

    def due_at(self, received_at: datetime, limit: Limit | str,
               pauses: Sequence[tuple[datetime, datetime | None]] = (), *,
               now: datetime | None = None) -> datetime:
        """The legal due instant (DESIGN.md §5) of a dossier received at `received_at`.

        Pauses `(start, end)` stop the clock: only pause time before the due instant counts, so a
        pause can only move the due date later. `end=None` is a pause still running: it lasts
        until `now` when given, else it has not added anything yet (the earliest possible due).
        """
        if not isinstance(limit, Limit):
            limit = parse_limit(limit)
        if not pauses and (limit.unit == "wd" or limit.unit == "wh"):   # hot path: _w, _inv inlined
            try:
                d = received_at - _EPOCH
            except TypeError:
                raise ValueError(f"naive datetime {received_at!r}: instants must carry a UTC offset") from None
            u = (d.days * 86_400 + d.seconds) * _US + d.microseconds
            lo, hi = self._range_us
            if not lo <= u < hi:
                self._check(u)
            starts = self._starts
            k = bisect_right(starts, u) - 1
            if k < 0:
                w = 0
            else:
                e = self._ends[k]
                w = self._cum_before[k] + (u if u < e else e) - starts[k]
            w += limit.value * (8 * _HOUR_US if limit.unit == "wd" else _HOUR_US)
            k = bisect_left(self._cum_end, w)
            if k == len(starts):
                raise CalendarRangeError(f"the result falls after the calendar's last year {self.years.stop - 1}")
            return _EPOCH + timedelta(microseconds=starts[k] + w - self._cum_before[k])
        return self._due(received_at, limit, pauses, now)[0]

    def due_trace(self, received_at: datetime, limit: Limit | str,
                  pauses: Sequence[tuple[datetime, datetime | None]] = (), *,
                  now: datetime | None = None) -> tuple[datetime, list[dict], datetime]:
        """`due_at` and how it got there, for explanations: (due instant, the pauses merged and
        clipped — each `{start, end, counted, calendar, working}`, `counted` when it moved the
        due instant, the durations as timedeltas — and the instant counting started)."""
        if not isinstance(limit, Limit):
            limit = parse_limit(limit)
        due, trace, start = self._due(received_at, limit, pauses, now)
        return due, [{"start": _dt(p["start"]), "end": _dt(p["end"]), "counted": p["counted"],
                      "calendar": timedelta(microseconds=p["calendar"]),
                      "working": timedelta(microseconds=p["working"])} for p in trace], _dt(start)

    # ---- deadline arithmetic with a trace (due_trace gives it to explanations)
    def _norm_pauses(self, r: int, pauses, now: datetime | None) -> list[tuple[int, int, int]]:
        """Merged pauses as (start, end, index of the first input pause), clipped to start ≥ r."""
        now_us = None if now is None else _us(now)
        spans = []
        for i, pause in enumerate(pauses):
            try:
                start, end = pause
            except (TypeError, ValueError):
                raise ValueError(f"pause #{i + 1}: expected a (start, end) pair") from None
            s = _us(start)
            if end is None:
                e = s if now_us is None else max(s, now_us)
            else:
                e = _us(end)
                if e < s:
                    raise ValueError(f"pause #{i + 1}: end {end.isoformat()} is before start {start.isoformat()}")
            if e <= r:
                continue
            spans.append((max(s, r), e, i))
        spans.sort()
        merged: list[list[int]] = []
        for s, e, i in spans:
            if merged and s <= merged[-1][1]:
                merged[-1][1] = max(merged[-1][1], e)
            else:
                merged.append([s, e, i])
        return [tuple(m) for m in merged]

    def _cd_due(self, u: int, n: int) -> int:
        local_day = _dt(u).astimezone(TZ).date()
        return _us(self.end_of_working_day(local_day + timedelta(days=n)))

    def _due(self, received_at: datetime, limit: Limit, pauses, now):
        r = _us(received_at)
        self._check(r)
        spans = self._norm_pauses(r, pauses, now)
        trace: list[dict] = []
        start = _us(self.next_working_instant(received_at))
        if limit.unit == "cd":
            # counting starts at the start instant; paused calendar time shifts the day count
            shift = 0
            due = self._cd_due(start, limit.value)
            for s, e, i in spans:
                counted = s < due
                trace.append({"start": s, "end": e, "counted": counted, "calendar": e - s,
                              "working": self._w(e) - self._w(s)})
                if counted:
                    shift += e - s
                    due = self._cd_due(start + shift, limit.value)
            return _dt(due), trace, start
        if limit.unit == "same-day":
            local = received_at.astimezone(TZ)
            if self.is_working_day(local.date()) and local.time() < SAME_DAY_CUTOFF:
                nominal = _us(self.end_of_working_day(local.date()))
            else:
                nominal = _us(self.end_of_working_day(self.next_working_day(local.date())))
            target = self._w(nominal)
        else:
            per = 8 * _HOUR_US if limit.unit == "wd" else _HOUR_US
            target = self._w(r) + limit.value * per
        for s, e, i in spans:
            ws = self._w(s)
            counted = ws < target      # the pause starts before the (current) due instant
            worked = self._w(e) - ws
            trace.append({"start": s, "end": e, "counted": counted, "calendar": e - s, "working": worked})
            if counted:
                target += worked
        return _dt(self._inv(target)), trace, start

