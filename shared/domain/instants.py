"""Instants and the office time zone, defined once for the domain and the services.

All instants in the code and in MongoDB are aware datetimes in UTC; the offices' rules are in
Vietnam's time zone (`TZ`). Two normalisers, for two kinds of input:
- `ensure_utc`: an instant the code was given (an event, a clock, an argument): a naive datetime
  is a programming error and raises.
- `stored_utc`: an instant read back from the store, where BSON carries no zone (a client
  without `tz_aware` returns naive UTC): naive is read as UTC; None stays None.
"""
from __future__ import annotations

from datetime import datetime, timezone
from zoneinfo import ZoneInfo

TZ = ZoneInfo("Asia/Ho_Chi_Minh")
UTC = timezone.utc


def ensure_utc(t: datetime, what: str | None = None) -> datetime:
    """`t` in UTC; ValueError when it is naive (or, with `what` naming it, not a datetime)."""
    if what is not None and not isinstance(t, datetime):
        raise ValueError(f"{what} must be a datetime, got {type(t).__name__}")
    if t.tzinfo is None or t.utcoffset() is None:
        if what is not None:
            raise ValueError(f"{what} is naive: instants must carry a UTC offset")
        raise ValueError(f"naive datetime {t!r}: instants must carry a UTC offset")
    return t.astimezone(UTC)


def stored_utc(t: datetime | None) -> datetime | None:
    """An instant read from the store, in UTC: naive values are read as UTC; None stays None."""
    if t is None:
        return None
    if t.tzinfo is None or t.utcoffset() is None:
        return t.replace(tzinfo=UTC)
    return t.astimezone(UTC)
