"""Benchmark: due-date computations per second, precomputed tables vs a day-by-day baseline.

Run on demand: `pytest tests/perf/test_calendar_perf.py -m perf -s` (or MOTCUA_PERF=1).
Random receipt instants in 2018–2026, limits 1–60 working days, default office. The rate is
printed, not asserted (the machines are shared); the assertions are that both agree and that the
tables beat the baseline of the same run by the target ratio.
"""
from __future__ import annotations

import os
import random
import time as clock
from datetime import datetime, timedelta, timezone

import holidays
import pytest

from shared.domain.limits import Limit
from shared.domain.workcal import calendar_for

from helpers.workcal import day_by_day_add

pytestmark = [pytest.mark.perf]


@pytest.fixture(autouse=True)
def _only_on_demand(request):
    """Skipped in a plain `pytest` run (also if tests/perf/conftest.py is missing)."""
    markexpr = request.config.getoption("markexpr") or ""
    if os.environ.get("MOTCUA_PERF") != "1" and ("perf" not in markexpr or "not perf" in markexpr):
        pytest.skip("benchmark: run with -m perf or MOTCUA_PERF=1")


N_FAST = 200_000
N_BASELINE = 5_000


def _cases(n: int, seed: int):
    rnd = random.Random(seed)
    start = datetime(2018, 1, 1, tzinfo=timezone.utc)
    span = int((datetime(2027, 1, 1, tzinfo=timezone.utc) - start).total_seconds())
    return [(start + timedelta(seconds=rnd.randrange(span)), Limit(rnd.randint(1, 60), "wd"))
            for _ in range(n)]


def test_due_dates_per_second_vs_day_by_day_baseline():
    cal = calendar_for()
    vn = holidays.VN(years=range(2015, 2041))
    cases = _cases(N_FAST, seed=20241105)

    # same answers on a sample first (a fast wrong answer is worth nothing)
    for r, lim in cases[:500]:
        assert cal.due_at(r, lim) == day_by_day_add(vn, r, timedelta(hours=8 * lim.value))

    t0 = clock.perf_counter()
    for r, lim in cases:
        cal.due_at(r, lim)
    fast_rate = N_FAST / (clock.perf_counter() - t0)

    t0 = clock.perf_counter()
    for r, lim in cases[:N_BASELINE]:
        day_by_day_add(vn, r, timedelta(hours=8 * lim.value))
    base_rate = N_BASELINE / (clock.perf_counter() - t0)

    ratio = fast_rate / base_rate
    print(f"\ncalendar due_at (precomputed tables): {fast_rate:12,.0f} due dates/s  ({N_FAST:,} cases)")
    print(f"baseline (day by day, is_working_day): {base_rate:12,.0f} due dates/s  ({N_BASELINE:,} cases)")
    print(f"ratio: {ratio:.1f}×   target: ≥ 20×")
    assert ratio >= 20
