"""The Vietnamese working-time calendar and legal due dates (DESIGN.md §5, LEGAL.md "The clock").

The public API is below; the modules behind it have one job each:
`files` (the offices and override files, validated), `calendar` (`WorkingCalendar`: working time
and its arithmetic), `cache` (`calendar_for`: one calendar per office and files, rebuilt when a
file changes), `explain` (the calendar in Vietnamese), `errors`.

Conventions (documented in docs/legal-engine.md "The working-time calendar"):
- inputs are aware datetimes (naive ones raise `ValueError`); outputs are aware UTC datetimes;
- precision is exact to the microsecond (datetime's resolution): nothing is rounded, so seconds
  and microseconds of the receipt instant are carried into the due instant;
- `Nwd` = N × 8 working hours, whatever the office's daily hours (DESIGN.md: offices configure
  their hours, not the arithmetic); `Nwh` = N working hours;
- a limit reached exactly at the end of a session is due at that instant (17:00, 11:30);
- the calendar covers `files.YEARS` (2015–2040); instants outside raise `CalendarRangeError`.
"""
from shared.domain.workcal.cache import calendar_for
from shared.domain.workcal.calendar import WorkingCalendar
from shared.domain.workcal.errors import (CalendarConfigError, CalendarError, CalendarRangeError,
                                          UnknownOfficeError)
from shared.domain.workcal.explain import explain_due, working_hours_vi

__all__ = ["calendar_for", "WorkingCalendar", "explain_due", "working_hours_vi", "CalendarError",
           "CalendarConfigError", "CalendarRangeError", "UnknownOfficeError"]
