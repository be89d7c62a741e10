"""Working time of the agencies notify writes to: when an alert may go, when a reminder is due,
how late a finding is now (each agency's office calendar, shared.domain.workcal)."""
from __future__ import annotations

import logging
from datetime import datetime, timedelta
from typing import Any, Callable

from shared.domain.instants import stored_utc

log = logging.getLogger("motcua.notify")


class WorkTime:
    """Calendar arithmetic per agency; a calendar that fails never swallows an alert."""

    def __init__(self, directory, calendars: Callable[[str], Any] | None = None):
        self.directory = directory
        self.calendar = calendars or self._default_calendars

    def _default_calendars(self, agency_code: str):
        from shared.domain.workcal import calendar_for
        agency = self.directory.get(agency_code) if self.directory is not None else None
        return calendar_for(getattr(agency, "office", None) or "default")

    def next_working(self, agency_code: str, now: datetime) -> datetime:
        try:
            return self.calendar(agency_code).next_working_instant(now)
        except Exception:   # a calendar out of range must not swallow the alert
            log.exception("calendar failed; sending now", extra={"fields": {"agency": agency_code}})
            return now

    def add_working(self, agency_code: str, now: datetime, hours: float) -> datetime | None:
        try:
            return self.calendar(agency_code).add_working(now, timedelta(hours=hours))
        except Exception:
            log.exception("calendar failed; schedule skipped", extra={"fields": {"agency": agency_code}})
            return None

    def late_hours(self, f: dict, now: datetime) -> float | None:
        """How late the finding is at `now`, in working hours: sla republishes its figure only
        on material changes, so the stored one is as old as the last revision. Same arithmetic
        as the rules (working time from the finding's due instant to now, the agency's
        calendar); a resolved finding keeps its final figure."""
        stored = f.get("overdue_working_hours")
        due = stored_utc(f.get("due_at"))
        if stored is None or due is None or f.get("state") == "resolved" or now <= due:
            return stored
        try:
            h = self.calendar(f["agency_code"]).working_between(due, now).total_seconds() / 3600
        except Exception:   # a calendar out of range: the last figure sla sent
            log.exception("calendar failed; stored lateness shown", extra={"fields": {"agency": f["agency_code"]}})
            return stored
        return max(float(stored), round(h, 4))

    def as_of(self, f: dict, now: datetime) -> dict:
        """The finding with its figures computed for `now` (what a mail sent now must say)."""
        late = self.late_hours(f, now)
        return f if late == f.get("overdue_working_hours") else dict(f, overdue_working_hours=late)

    def agency_name(self, code: str) -> str:
        a = self.directory.get(code) if self.directory is not None else None
        return a.name if a is not None else code
