"""The calendar's files, read and validated: the offices file (`shared/data/offices.yaml`: each
office's sessions per weekday) and the province override files (`shared/data/overrides/`: local
days off, working days, counter sessions). Every error names the file, the entry and the field
(`CalendarConfigError`)."""
from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any

import yaml

from shared.domain import PACKAGE_DATA
from shared.domain.datafile import TextDatesLoader
from shared.domain.workcal.errors import CalendarConfigError

YEARS = range(2015, 2041)          # the years a calendar covers; override dates outside are errors
OFFICES_FILE = PACKAGE_DATA / "offices.yaml"
WEEKDAY_KEYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
DEFAULT_SESSIONS = ((450, 690), (780, 1020))   # 07:30–11:30, 13:00–17:00, minutes of the day


@dataclass(frozen=True)
class Office:
    """Office hours of one office: sessions (minutes of the day) per weekday, Monday first."""
    id: str
    name: str
    sessions: tuple[tuple[tuple[int, int], ...], ...]      # 7 entries
    makeup_sessions: tuple[tuple[int, int], ...]           # hours of a make-up working day
    overrides: tuple[Path, ...] = ()



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


def _read_yaml(path: Path):
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise CalendarConfigError(path, "(file)", "", f"cannot read: {exc.strerror or exc}") from None
    try:
        return yaml.load(text, Loader=TextDatesLoader)  # noqa: S506 (a SafeLoader subclass)
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
            _check_keys(week, set(WEEKDAY_KEYS), set(), path, f"{entry} sessions")
            sessions = tuple(_parse_sessions(week.get(k, []) or [], path, entry, f"sessions.{k}")
                             for k in WEEKDAY_KEYS)
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
        rules.append(CounterRule(start, end, tuple(WEEKDAY_KEYS.index(w) for w in wds), sessions,
                                 counts, _opt_str(spec, "name", path, entry, required=True),
                                 _opt_str(spec, "basis", path, entry)))
    return Overrides(str(path), province, days_off, working_days, tuple(rules), sample)

