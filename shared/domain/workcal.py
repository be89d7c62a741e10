"""The Vietnamese working-time calendar and legal due dates (DESIGN.md §5, LEGAL.md "The clock").

A `WorkingCalendar` knows, for one office, which instants are working time: the office's sessions
per weekday (`shared/data/offices.yaml`), minus public holidays, plus the make-up working
Saturdays of government swap decisions (both from python-holidays' `VN` calendar, in Vietnamese),
plus the local decisions of a province override file (`shared/data/overrides/`).

Conventions (documented in docs/legal-engine.md "The working-time calendar"):
- inputs are aware datetimes (naive ones raise `ValueError`); outputs are aware UTC datetimes;
- precision is exact to the microsecond (datetime's resolution): nothing is rounded, so seconds
  and microseconds of the receipt instant are carried into the due instant;
- `Nwd` = N × 8 working hours, whatever the office's daily hours (DESIGN.md: offices configure
  their hours, not the arithmetic); `Nwh` = N working hours;
- a limit reached exactly at the end of a session is due at that instant (17:00, 11:30);
- the calendar covers `YEARS` (2015–2040); instants outside raise `CalendarRangeError`.

Speed: every session of the covered years is precomputed into flat arrays (UTC start, end,
cumulative working time), so working time up to an instant and its inverse are one `bisect`
each — nothing steps day by day.
"""
from __future__ import annotations

import functools
import hashlib
import json
import re
from bisect import bisect_left, bisect_right
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from pathlib import Path
from time import monotonic
from typing import Any, Iterable, Sequence

import holidays as pyholidays
import yaml

from shared.domain import PACKAGE_DATA
from shared.domain.instants import TZ, UTC
from shared.domain.limits import Limit, parse_limit

YEARS = range(2015, 2041)
ALGORITHM_VERSION = "1"          # bump when the arithmetic changes (changes every `version`)
OFFICES_FILE = PACKAGE_DATA / "offices.yaml"

WORKING_DAY = timedelta(hours=8)   # 1wd, DESIGN.md §5
SAME_DAY_CUTOFF = time(15, 0)      # same-day: received before 15:00 on a working day

_US = 1_000_000
_DAY_US = 86_400 * _US
_HOUR_US = 3_600 * _US
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_WEEKDAY_KEYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
WEEKDAY_VI = ("Thứ Hai", "Thứ Ba", "Thứ Tư", "Thứ Năm", "Thứ Sáu", "Thứ Bảy", "Chủ nhật")
DEFAULT_SESSIONS = ((450, 690), (780, 1020))   # 07:30–11:30, 13:00–17:00, minutes of the day

# kinds of days that are not ordinary (office-hours) days, as `DayInfo.kind`
KIND_WORKING = "working"            # ordinary working day (office hours)
KIND_WEEKEND = "weekend"            # no office hours that weekday
KIND_HOLIDAY = "holiday"            # public holiday on a day with office hours
KIND_MAKEUP = "makeup"              # make-up working day (government swap)
KIND_LOCAL_OFF = "local_off"        # day off by a local (province) decision
KIND_LOCAL_WORKING = "local_working"  # working day by a local decision
KIND_COUNTER = "counter_session"    # weekend day with a counter session (override file)


class CalendarError(ValueError):
    """Bad calendar input."""


class CalendarRangeError(CalendarError):
    """An instant outside the years the calendar covers."""


class UnknownOfficeError(CalendarError):
    """An office id that the offices file does not define (a directory naming a mistyped office)."""

    def __init__(self, office: str, known: Iterable[str]):
        self.office = office
        super().__init__(f"unknown office {office!r}: known offices are {', '.join(sorted(known))}")


class CalendarConfigError(CalendarError):
    """An invalid offices or override file; names the file, the entry and the field."""

    def __init__(self, file: str | Path, entry: str, field: str, message: str):
        self.file, self.entry, self.field, self.message = str(file), entry, field, message
        where = f"{file}: {entry}" + (f": field '{field}'" if field else "")
        super().__init__(f"{where}: {message}")


# --------------------------------------------------------------------------- configuration

@dataclass(frozen=True)
class Office:
    """Office hours of one office: sessions (minutes of the day) per weekday, Monday first."""
    id: str
    name: str
    sessions: tuple[tuple[tuple[int, int], ...], ...]      # 7 entries
    makeup_sessions: tuple[tuple[int, int], ...]           # hours of a make-up working day
    overrides: tuple[Path, ...] = ()


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


_HHMM = re.compile(r"^([01]\d|2[0-4]):([0-5]\d)$")


def _parse_sessions(value: Any, file, entry: str, fld: str) -> tuple[tuple[int, int], ...]:
    if not isinstance(value, list):
        raise CalendarConfigError(file, entry, fld, 'expected a list of "HH:MM-HH:MM" sessions')
    out: list[tuple[int, int]] = []
    for i, item in enumerate(value):
        parts = str(item).split("-") if isinstance(item, str) else []
        if len(parts) != 2 or not all(_HHMM.match(p.strip()) for p in parts):
            raise CalendarConfigError(file, entry, f"{fld}[{i}]",
                                      f'invalid session {item!r}: expected "HH:MM-HH:MM"')
        start, end = (int(p.strip()[:2]) * 60 + int(p.strip()[3:]) for p in parts)
        if start >= end or end > 1440:
            raise CalendarConfigError(file, entry, f"{fld}[{i}]",
                                      f"invalid session {item!r}: must start before it ends, by 24:00")
        if out and start < out[-1][1]:
            raise CalendarConfigError(file, entry, f"{fld}[{i}]",
                                      f"session {item!r} overlaps or precedes the previous one")
        out.append((start, end))
    return tuple(out)


def _check_keys(obj: Any, allowed: set[str], required: set[str], file, entry: str) -> dict:
    if not isinstance(obj, dict):
        raise CalendarConfigError(file, entry, "", f"expected a mapping, got {type(obj).__name__}")
    for key in obj:
        if key not in allowed:
            raise CalendarConfigError(file, entry, str(key),
                                      f"unknown key (allowed: {', '.join(sorted(allowed))})")
    for key in sorted(required):
        if key not in obj:
            raise CalendarConfigError(file, entry, key, "required")
    return obj


class _Loader(yaml.SafeLoader):
    """Safe YAML loading that keeps dates as text, so a bad date is reported with its entry/field."""


_Loader.add_constructor("tag:yaml.org,2002:timestamp", lambda loader, node: loader.construct_scalar(node))


def _read_yaml(path: Path):
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise CalendarConfigError(path, "(file)", "", f"cannot read: {exc.strerror or exc}") from None
    try:
        return yaml.load(text, Loader=_Loader)  # noqa: S506 (a SafeLoader subclass)
    except yaml.YAMLError as exc:
        raise CalendarConfigError(path, "(file)", "", f"invalid YAML: {exc}") from None


def load_offices(path: str | Path | None = None) -> dict[str, Office]:
    """Offices by id from an offices file (default `shared/data/offices.yaml`), validated."""
    path = Path(path) if path is not None else OFFICES_FILE
    doc = _read_yaml(path)
    _check_keys(doc, {"offices"}, {"offices"}, path, "(top level)")
    offices_doc = doc["offices"]
    if not isinstance(offices_doc, dict) or not offices_doc:
        raise CalendarConfigError(path, "offices", "", "expected a non-empty mapping of office id → office")
    offices: dict[str, Office] = {}
    for oid, spec in offices_doc.items():
        entry = f"office {oid!r}"
        if not isinstance(oid, str) or not re.match(r"^[a-z0-9][a-z0-9._-]{0,63}$", oid):
            raise CalendarConfigError(path, entry, "", "office ids are 1–64 chars [a-z0-9._-]")
        _check_keys(spec, {"name", "sessions", "makeup_sessions", "overrides", "description"},
                    {"name"}, path, entry)
        if not isinstance(spec["name"], str) or not spec["name"].strip():
            raise CalendarConfigError(path, entry, "name", "expected a non-empty string")
        if "sessions" in spec:
            week = spec["sessions"]
            _check_keys(week, set(_WEEKDAY_KEYS), set(), path, f"{entry} sessions")
            sessions = tuple(_parse_sessions(week.get(k, []) or [], path, entry, f"sessions.{k}")
                             for k in _WEEKDAY_KEYS)
        else:
            sessions = (DEFAULT_SESSIONS,) * 5 + ((), ())
        if not any(sessions):
            raise CalendarConfigError(path, entry, "sessions", "the office never works")
        if "makeup_sessions" in spec:
            makeup = _parse_sessions(spec["makeup_sessions"], path, entry, "makeup_sessions")
        else:
            makeup = sessions[0] or DEFAULT_SESSIONS
        refs = spec.get("overrides", []) or []
        if not isinstance(refs, list) or not all(isinstance(r, str) for r in refs):
            raise CalendarConfigError(path, entry, "overrides", "expected a list of file paths")
        override_paths = tuple((path.parent / r).resolve() for r in refs)
        for r, p in zip(refs, override_paths):
            if not p.is_file():
                raise CalendarConfigError(path, entry, "overrides", f"no such override file {r!r}")
        offices[oid] = Office(oid, spec["name"].strip(), sessions, makeup, override_paths)
    return offices


def office_ids(path: str | Path | None = None) -> frozenset[str]:
    """The ids of the offices of an offices file (default `shared/data/offices.yaml`), the ones
    `calendar_for` knows: what a directory's `office` may name."""
    return frozenset(load_offices(path))


@dataclass(frozen=True)
class LocalDay:
    date: date
    name: str
    basis: str | None
    sessions: tuple[tuple[int, int], ...] | None   # working days only; None = makeup hours


@dataclass(frozen=True)
class CounterRule:
    start: date
    end: date | None
    weekdays: tuple[int, ...]
    sessions: tuple[tuple[int, int], ...]
    counts_toward_deadlines: bool
    name: str
    basis: str | None


@dataclass(frozen=True)
class Overrides:
    """A province override file, validated (format at the top of shared/data/overrides/example-province.yaml)."""
    path: str
    province: str
    days_off: tuple[LocalDay, ...] = ()
    working_days: tuple[LocalDay, ...] = ()
    counter_sessions: tuple[CounterRule, ...] = ()
    sample: bool = False


def _as_date(value: Any, file, entry: str, fld: str) -> date:
    if isinstance(value, datetime):
        raise CalendarConfigError(file, entry, fld, f"expected a date YYYY-MM-DD, got a datetime {value!r}")
    if isinstance(value, date):
        return value
    if isinstance(value, str):
        try:
            return date.fromisoformat(value)
        except ValueError:
            pass
    raise CalendarConfigError(file, entry, fld, f"expected a date YYYY-MM-DD, got {value!r}")


def _opt_str(spec: dict, key: str, file, entry: str, required: bool = False) -> str | None:
    value = spec.get(key)
    if value is None and not required:
        return None
    if not isinstance(value, str) or not value.strip():
        raise CalendarConfigError(file, entry, key, "expected a non-empty string")
    return value.strip()


def _date_span(spec: dict, file, entry: str) -> list[date]:
    """`date: D` or `from: D1, to: D2` (inclusive) → the dates."""
    if "date" in spec and ("from" in spec or "to" in spec):
        raise CalendarConfigError(file, entry, "date", "give either 'date' or 'from'/'to', not both")
    if "date" in spec:
        return [_as_date(spec["date"], file, entry, "date")]
    if "from" not in spec or "to" not in spec:
        raise CalendarConfigError(file, entry, "date", "required ('date', or 'from' and 'to')")
    start = _as_date(spec["from"], file, entry, "from")
    end = _as_date(spec["to"], file, entry, "to")
    if end < start:
        raise CalendarConfigError(file, entry, "to", f"{end} is before 'from' {start}")
    if (end - start).days > 366:
        raise CalendarConfigError(file, entry, "to", "a span of more than a year is not a day off")
    return [start + timedelta(days=i) for i in range((end - start).days + 1)]


def load_overrides(path: str | Path) -> Overrides:
    """Read and validate a province override file; `CalendarConfigError` names file/entry/field."""
    path = Path(path)
    doc = _read_yaml(path)
    _check_keys(doc, {"province", "description", "sample", "days_off", "working_days",
                      "counter_sessions"}, {"province"}, path, "(top level)")
    province = _opt_str(doc, "province", path, "(top level)", required=True)
    sample = doc.get("sample", False)
    if not isinstance(sample, bool):
        raise CalendarConfigError(path, "(top level)", "sample", "expected true or false")
    seen: dict[date, str] = {}

    def local_days(key: str, working: bool) -> tuple[LocalDay, ...]:
        items = doc.get(key) or []
        if not isinstance(items, list):
            raise CalendarConfigError(path, key, "", "expected a list")
        out = []
        for i, spec in enumerate(items):
            entry = f"{key}[{i}]"
            allowed = {"date", "from", "to", "name", "basis"} | ({"sessions"} if working else set())
            _check_keys(spec, allowed, {"name"}, path, entry)
            name = _opt_str(spec, "name", path, entry, required=True)
            basis = _opt_str(spec, "basis", path, entry)
            sessions = (_parse_sessions(spec["sessions"], path, entry, "sessions")
                        if working and "sessions" in spec else None)
            if sessions == ():
                raise CalendarConfigError(path, entry, "sessions", "a working day needs sessions")
            for d in _date_span(spec, path, entry):
                if d.year not in YEARS:
                    raise CalendarConfigError(path, entry, "date",
                                              f"{d} is outside the calendar years {YEARS.start}–{YEARS.stop - 1}")
                if d in seen:
                    raise CalendarConfigError(path, entry, "date", f"{d} is already listed in {seen[d]}")
                seen[d] = entry
                out.append(LocalDay(d, name, basis, sessions))
        return tuple(out)

    days_off = local_days("days_off", working=False)
    working_days = local_days("working_days", working=True)

    rules = []
    items = doc.get("counter_sessions") or []
    if not isinstance(items, list):
        raise CalendarConfigError(path, "counter_sessions", "", "expected a list")
    for i, spec in enumerate(items):
        entry = f"counter_sessions[{i}]"
        _check_keys(spec, {"from", "to", "weekdays", "sessions", "counts_toward_deadlines", "name",
                           "basis"}, {"from", "sessions", "name"}, path, entry)
        start = _as_date(spec["from"], path, entry, "from")
        end = None if spec.get("to") is None else _as_date(spec["to"], path, entry, "to")
        if end is not None and end < start:
            raise CalendarConfigError(path, entry, "to", f"{end} is before 'from' {start}")
        wds = spec.get("weekdays", ["sat"])
        if not isinstance(wds, list) or not wds or any(w not in ("sat", "sun") for w in wds):
            raise CalendarConfigError(path, entry, "weekdays", "expected a list of 'sat' and/or 'sun'")
        sessions = _parse_sessions(spec["sessions"], path, entry, "sessions")
        if not sessions:
            raise CalendarConfigError(path, entry, "sessions", "at least one session")
        counts = spec.get("counts_toward_deadlines", False)
        if not isinstance(counts, bool):
            raise CalendarConfigError(path, entry, "counts_toward_deadlines", "expected true or false")
        rules.append(CounterRule(start, end, tuple(_WEEKDAY_KEYS.index(w) for w in wds), sessions,
                                 counts, _opt_str(spec, "name", path, entry, required=True),
                                 _opt_str(spec, "basis", path, entry)))
    return Overrides(str(path), province, days_off, working_days, tuple(rules), sample)


# --------------------------------------------------------------------------- the calendar

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

    # ---- deadline arithmetic with a trace (explain_due uses the trace)
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


# --------------------------------------------------------------------------- factory

def _resolve_overrides(overrides) -> tuple[str, ...]:
    if overrides is None:
        return ()
    if isinstance(overrides, (str, Path)):
        overrides = [overrides]
    return tuple(str(Path(p).resolve()) for p in overrides)


def _stamp(path: str) -> tuple[str, int, int]:
    try:
        st = Path(path).stat()
    except OSError:
        raise CalendarConfigError(path, "(file)", "", "no such override file") from None
    return (path, st.st_mtime_ns, st.st_size)


@functools.lru_cache(maxsize=64)
def _calendar_cached(office: str, stamps: tuple, offices_stamp: tuple) -> WorkingCalendar:
    offices = load_offices(offices_stamp[0])
    if office not in offices:
        raise UnknownOfficeError(office, offices)
    spec = offices[office]
    files = [str(p) for p in spec.overrides] + [s[0] for s in stamps]
    return WorkingCalendar(spec, [load_overrides(f) for f in files])


# calendar_for() is on the hot path of every rule evaluation: the files behind a calendar are
# stat()ed again at most this often per (office, overrides, offices file).
RECHECK_SECONDS = 1.0
_recent: dict[tuple, tuple[WorkingCalendar, float]] = {}


def calendar_for(office: str = "default", overrides: str | Path | Iterable[str | Path] | None = None,
                 *, offices_file: str | Path | None = None) -> WorkingCalendar:
    """The calendar of an office from offices.yaml, with its own override files and `overrides`
    applied after them. Cached; a changed file (mtime/size) builds a new calendar, seen within
    RECHECK_SECONDS."""
    if overrides is None or isinstance(overrides, (str, Path)):
        key = (office, overrides and str(overrides), offices_file and str(offices_file))
    else:
        overrides = [str(p) for p in overrides]
        key = (office, tuple(overrides), offices_file and str(offices_file))
    hit = _recent.get(key)
    now = monotonic()
    if hit is not None and now - hit[1] < RECHECK_SECONDS:
        return hit[0]
    stamps = tuple(_stamp(p) for p in _resolve_overrides(overrides))
    cal = _calendar_cached(office, stamps, _stamp(str(Path(offices_file or OFFICES_FILE).resolve())))
    _recent[key] = (cal, now)
    return cal


# --------------------------------------------------------------------------- explanation

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


def _vi_duration(us: int, days: bool = False) -> str:
    minutes, rest = divmod(us, 60 * _US)
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
    due, trace, start_us = cal._due(received_at, limit, pauses, now)
    received_utc = received_at.astimezone(UTC)
    start = _dt(start_us)
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
        ps, pe = _dt(p["start"]), _dt(p["end"])
        item = {"start": ps.isoformat(), "end": pe.isoformat(), "counted": p["counted"],
                "working_seconds": p["working"] / _US, "calendar_seconds": p["calendar"] / _US}
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
