"""shared/domain/instants.py: the office time zone and the two UTC normalisers, defined once."""
from __future__ import annotations

import re
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from shared.domain.instants import TZ, ensure_utc, stored_utc

ROOT = Path(__file__).resolve().parents[2]


def test_ensure_utc_converts_aware_and_refuses_naive():
    t = datetime(2026, 3, 3, 9, 0, tzinfo=timezone(timedelta(hours=7)))
    assert ensure_utc(t) == t and ensure_utc(t).tzinfo == timezone.utc and ensure_utc(t).hour == 2
    with pytest.raises(ValueError, match="naive datetime .*must carry a UTC offset"):
        ensure_utc(datetime(2026, 3, 3))
    with pytest.raises(ValueError, match="now is naive: instants must carry a UTC offset"):
        ensure_utc(datetime(2026, 3, 3), "now")
    with pytest.raises(ValueError, match="now must be a datetime, got str"):
        ensure_utc("2026-03-03", "now")


def test_stored_utc_reads_naive_as_utc_and_keeps_none():
    assert stored_utc(None) is None
    assert stored_utc(datetime(2026, 3, 3, 2)) == datetime(2026, 3, 3, 2, tzinfo=timezone.utc)
    got = stored_utc(datetime(2026, 3, 3, 9, tzinfo=TZ))
    assert got.tzinfo == timezone.utc and got.hour == 2


def test_the_time_zone_is_defined_in_one_place():
    pattern = re.compile(r"ZoneInfo\(\s*[\"']Asia/Ho_Chi_Minh")
    found = [str(p.relative_to(ROOT)) for top in ("services", "shared") for p in (ROOT / top).rglob("*.py")
             if pattern.search(p.read_text(encoding="utf-8"))]
    assert found == ["shared/domain/instants.py"]
    from services.notify import templates
    from shared.domain.engine import state
    from shared.domain.workcal import calendar
    assert calendar.TZ is state.TZ is templates.TZ is TZ
