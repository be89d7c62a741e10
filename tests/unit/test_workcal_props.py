"""Property tests of the working-time calendar (hypothesis), and a differential test against a
naive day-by-day reference built only on python-holidays' `is_working_day`."""
from __future__ import annotations

from datetime import datetime, time, timedelta, timezone

import holidays
from hypothesis import given, settings, strategies as st

from shared.domain.limits import Limit
from shared.domain.instants import TZ
from shared.domain.workcal import calendar_for

from helpers.workcal import day_by_day_add

UTC = timezone.utc
CAL = calendar_for()
VN = holidays.VN(years=range(2015, 2041))

instants = st.datetimes(min_value=datetime(2016, 1, 1), max_value=datetime(2034, 12, 31),
                        timezones=st.just(UTC))
durations = st.timedeltas(min_value=timedelta(0), max_value=timedelta(hours=700))
limits = st.one_of(
    st.builds(Limit, st.integers(1, 60), st.just("wd")),
    st.builds(Limit, st.integers(1, 200), st.just("wh")),
    st.builds(Limit, st.integers(1, 90), st.just("cd")),
    st.just(Limit(0, "same-day")),
)


@settings(max_examples=300, deadline=None)
@given(instants, st.integers(1, 60))
def test_wd_matches_day_by_day_reference(t, n):
    assert CAL.due_at(t, Limit(n, "wd")) == day_by_day_add(VN, t, timedelta(hours=8 * n))


@settings(max_examples=300, deadline=None)
@given(instants, durations)
def test_add_working_matches_reference(t, d):
    if d == timedelta(0):
        return
    assert CAL.add_working(t, d) == day_by_day_add(VN, t, d)


@settings(max_examples=300, deadline=None)
@given(instants, durations)
def test_working_between_inverts_add_working(a, d):
    assert CAL.working_between(a, CAL.add_working(a, d)) == d


@settings(max_examples=300, deadline=None)
@given(instants, durations, durations)
def test_add_working_is_additive(a, d1, d2):
    assert CAL.add_working(CAL.add_working(a, d1), d2) == CAL.add_working(a, d1 + d2)


@settings(max_examples=300, deadline=None)
@given(instants, instants, durations, durations)
def test_add_working_is_monotonic(a, b, d1, d2):
    a, b = min(a, b), max(a, b)
    d1, d2 = min(d1, d2), max(d1, d2)
    assert CAL.add_working(a, d1) <= CAL.add_working(b, d1)
    assert CAL.add_working(a, d1) <= CAL.add_working(a, d2)
    assert CAL.add_working(a, d1) >= a


def _pauses(draw_base, offsets):
    """Disjoint, sorted pauses from (gap, length) pairs in minutes; the first may start up to
    ~2 days before the receipt (the calendar clips it)."""
    out, t = [], draw_base - timedelta(minutes=3000)
    for gap, length in offsets:
        start = t + timedelta(minutes=gap)
        out.append((start, start + timedelta(minutes=length)))
        t = start + timedelta(minutes=length)
    return out


pause_specs = st.lists(st.tuples(st.integers(0, 20000), st.integers(0, 8000)), max_size=4)


@settings(max_examples=300, deadline=None)
@given(instants, limits, pause_specs, st.data())
def test_pauses_never_shorten_and_more_pauses_never_shorten(r, limit, specs, data):
    pauses = _pauses(r, specs)
    plain = CAL.due_at(r, limit)
    with_pauses = CAL.due_at(r, limit, pauses)
    assert with_pauses >= plain
    if pauses:
        subset = data.draw(st.lists(st.sampled_from(pauses), unique=True))
        assert CAL.due_at(r, limit, subset) <= with_pauses


@settings(max_examples=300, deadline=None)
@given(instants, st.builds(Limit, st.integers(1, 60), st.sampled_from(["wd", "wh"])), pause_specs)
def test_running_time_to_due_equals_limit(r, limit, specs):
    """Working time from receipt to due, minus the paused working time before due, is the limit."""
    pauses = _pauses(r, specs)
    due = CAL.due_at(r, limit, pauses)
    paused = timedelta(0)
    for s, e in pauses:
        s, e = max(s, r), min(e, due)
        if e > s:
            paused += CAL.working_between(s, e)
    per = timedelta(hours=8 if limit.unit == "wd" else 1)
    assert CAL.working_between(r, due) - paused == limit.value * per


@settings(max_examples=200, deadline=None)
@given(instants, st.integers(1, 90))
def test_cd_due_is_end_of_a_working_day_on_or_after_the_nth_day(r, n):
    due = CAL.due_at(r, Limit(n, "cd")).astimezone(TZ)
    nth = CAL.next_working_instant(r).astimezone(TZ).date() + timedelta(days=n)
    assert due.date() >= nth and VN.is_working_day(due.date())
    assert due.time() == time(17, 0)
    d = nth
    while d < due.date():            # every day skipped is a day off
        assert not VN.is_working_day(d)
        d += timedelta(days=1)
