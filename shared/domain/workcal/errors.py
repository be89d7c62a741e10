"""The calendar's errors: all are `ValueError`s, so bad input is a clear error wherever it enters."""
from __future__ import annotations

from pathlib import Path
from typing import Iterable


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

