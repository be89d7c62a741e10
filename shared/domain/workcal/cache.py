"""`calendar_for`: the calendar of an office, built once per process and rebuilt when one of its
files changes (the offices file, the office's override files, the overrides given)."""
from __future__ import annotations

import functools
from pathlib import Path
from time import monotonic
from typing import Iterable

from shared.domain.workcal.calendar import WorkingCalendar
from shared.domain.workcal.errors import CalendarConfigError, UnknownOfficeError
from shared.domain.workcal.files import OFFICES_FILE, load_offices, load_overrides


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

