"""Working-time calendar: hand-checked scenarios (calendar_scenarios.yaml), holidays data,
explanations, override validation, the CLI."""
from __future__ import annotations

import json
import os
from datetime import date, datetime, timedelta, timezone
from pathlib import Path

import pytest
import yaml

from shared import cli
from shared.domain.limits import Limit
from shared.domain.instants import TZ
from shared.domain.workcal import (CalendarConfigError, CalendarRangeError, WorkingCalendar,
                                   calendar_for, explain_due)
from shared.domain.workcal.files import load_offices, load_overrides

HERE = Path(__file__).parent
SCENARIOS = yaml.safe_load((HERE / "calendar_scenarios.yaml").read_text(encoding="utf-8"))


def _t(value):
    if value is None:
        return None
    return value if isinstance(value, datetime) else datetime.fromisoformat(str(value))


@pytest.mark.parametrize("sc", SCENARIOS, ids=[s["name"] for s in SCENARIOS])
def test_scenario(sc):
    cal = calendar_for(sc.get("office", "default"))
    pauses = [(_t(a), _t(b)) for a, b in sc.get("pauses", [])]
    due = cal.due_at(_t(sc["received"]), sc["limit"], pauses, now=_t(sc.get("now")))
    assert due == _t(sc["due"]), sc["why"]
    assert due.tzinfo == timezone.utc


def test_scenarios_cover_the_brief():
    names = " ".join(s["name"] for s in SCENARIOS)
    for word in ("11:30", "13:00", "15:00", "17:00", "Friday", "Tết 2024", "Tết 2025", "Tết 2026",
                 "2024-05-04", "2025-04-26", "2026-08-22", "Hùng Kings", "pause", "same-day", "cd"):
        assert word in names


def test_python_holidays_knows_the_makeup_saturdays_and_hung_kings_2026():
    cal = calendar_for()
    for d in (date(2024, 5, 4), date(2025, 4, 26), date(2026, 8, 22)):
        info = cal.day_info(d)
        assert d.weekday() == 5 and info.kind == "makeup" and info.is_working
        assert info.name.startswith("Ngày làm việc bù")
    assert cal.day_info(date(2024, 5, 4)).name == "Ngày làm việc bù (cho ngày nghỉ 29/04/2024)"
    assert cal.day_info(date(2026, 4, 26)).kind == "weekend"          # Sunday
    observed = cal.day_info(date(2026, 4, 27))
    assert observed.kind == "holiday" and "Hùng Vương" in observed.name and "nghỉ bù" in observed.name
    assert not cal.is_working_day(date(2026, 4, 27))
    assert cal.is_working_day(date(2026, 4, 28))


@pytest.mark.parametrize("first,last", [
    (date(2024, 2, 8), date(2024, 2, 14)),
    (date(2025, 1, 27), date(2025, 1, 31)),
    (date(2026, 2, 16), date(2026, 2, 20)),
])
def test_tet_weekdays_are_off(first, last):
    cal = calendar_for()
    d = first
    while d <= last:
        assert not cal.is_working_day(d), d
        d += timedelta(days=1)
    assert cal.is_working_day(first - timedelta(days=1 if first.weekday() else 3))


def test_next_working_instant_and_between():
    cal = calendar_for()
    t = lambda s: datetime.fromisoformat(s)
    assert cal.next_working_instant(t("2024-11-04T11:30:00+07:00")) == t("2024-11-04T13:00:00+07:00")
    assert cal.next_working_instant(t("2024-11-04T11:29:59+07:00")) == t("2024-11-04T11:29:59+07:00")
    assert cal.next_working_instant(t("2024-11-08T17:00:00+07:00")) == t("2024-11-11T07:30:00+07:00")
    # Fri 16:00 → Mon 09:00: 1h + 1.5h
    assert cal.working_between(t("2024-11-08T16:00:00+07:00"), t("2024-11-11T09:00:00+07:00")) == timedelta(hours=2.5)
    assert cal.working_between(t("2024-11-11T09:00:00+07:00"), t("2024-11-08T16:00:00+07:00")) == -timedelta(hours=2.5)
    assert cal.end_of_working_day(date(2024, 11, 9)) == t("2024-11-11T17:00:00+07:00")
    assert cal.next_working_day(date(2024, 2, 7)) == date(2024, 2, 15)
    assert cal.add_working(t("2024-11-04T18:00:00+07:00"), timedelta(0)) == t("2024-11-04T18:00:00+07:00")


def test_inputs_in_any_offset_give_utc():
    cal = calendar_for()
    a = cal.due_at(datetime(2024, 11, 4, 0, 30, tzinfo=timezone.utc), Limit(1, "wd"))   # 07:30 local
    assert a == datetime(2024, 11, 4, 10, 0, tzinfo=timezone.utc)
    assert cal.due_at(datetime(2024, 11, 4, 7, 30, tzinfo=TZ), "1wd") == a


def test_bad_inputs_raise_specific_errors():
    cal = calendar_for()
    with pytest.raises(ValueError, match="naive"):
        cal.due_at(datetime(2024, 11, 4, 8), "1wd")
    with pytest.raises(ValueError, match="before start"):
        cal.due_at(datetime(2024, 11, 4, 8, tzinfo=TZ), "1wd",
                   [(datetime(2024, 11, 4, 9, tzinfo=TZ), datetime(2024, 11, 4, 8, tzinfo=TZ))])
    with pytest.raises(ValueError, match="negative"):
        cal.add_working(datetime(2024, 11, 4, 8, tzinfo=TZ), timedelta(hours=-1))
    with pytest.raises(CalendarRangeError, match="2015"):
        cal.due_at(datetime(2014, 11, 4, 8, tzinfo=TZ), "1wd")
    with pytest.raises(CalendarRangeError):
        cal.due_at(datetime(2040, 12, 20, 8, tzinfo=TZ), "60wd")
    with pytest.raises(ValueError, match="invalid time limit"):
        cal.due_at(datetime(2024, 11, 4, 8, tzinfo=TZ), "5 days")


def test_version_changes_with_inputs_and_cache():
    assert calendar_for() is calendar_for("default")
    assert calendar_for().version.startswith("default-")
    assert calendar_for().version == WorkingCalendar(load_offices()["default"]).version
    assert calendar_for("summer-0700").version != calendar_for().version
    with_ov = calendar_for("default", HERE.parent.parent / "shared/data/overrides/example-province.yaml")
    assert with_ov.version != calendar_for().version


def test_explain_due_tet_2024_in_vietnamese():
    cal = calendar_for()
    info = explain_due(cal, datetime(2024, 2, 7, 18, 0, tzinfo=TZ), "2wd",
                       [(datetime(2024, 2, 15, 8, 0, tzinfo=TZ), datetime(2024, 2, 15, 9, 0, tzinfo=TZ))],
                       ruleset="nd61-107", catalog_version="cat-7")
    # start Thu 15/02 07:30 (after hours on 07/02, then Tết); 16h + 1h paused → Mon 19/02 08:30
    assert info["due_at"] == "2024-02-19T01:30:00+00:00"
    assert info["start_moved"] is True and info["start_at"] == "2024-02-15T00:30:00+00:00"
    assert info["calendar_version"] == cal.version
    assert info["ruleset"] == "nd61-107" and info["catalog_version"] == "cat-7"
    assert info["pauses"][0]["counted"] and info["pauses"][0]["working_seconds"] == 3600
    kinds = {d["date"]: (d["kind"], d["name"]) for d in info["days"]}
    assert kinds["2024-02-12"] == ("holiday", "Mùng ba Tết Nguyên Đán")
    assert kinds["2024-02-10"] == ("weekend", "Tết Nguyên Đán")
    assert kinds["2024-02-17"] == ("weekend", None)
    text = "\n".join(info["lines"])
    for phrase in ("Thời điểm tiếp nhận: 18:00 Thứ Tư, 07/02/2024",
                   "chuyển sang thời điểm làm việc kế tiếp",
                   "2 ngày làm việc (16 giờ làm việc)",
                   "không tính 1 giờ làm việc",
                   "Ngày nghỉ lễ, Tết: Thứ Hai, 12/02/2024 — Mùng ba Tết Nguyên Đán",
                   "Hạn giải quyết: 08:30 Thứ Hai, 19/02/2024",
                   "bộ quy tắc: nd61-107"):
        assert phrase in text


def test_explain_names_makeup_day_and_ignored_pause():
    cal = calendar_for()
    info = explain_due(cal, datetime(2024, 5, 3, 13, 0, tzinfo=TZ), "1wd",
                       [(datetime(2024, 5, 6, 8, 0, tzinfo=TZ), datetime(2024, 5, 6, 9, 0, tzinfo=TZ))],
                       ruleset="nd61-107", catalog_version="-")
    assert info["due_at"] == "2024-05-04T04:30:00+00:00"
    assert not info["pauses"][0]["counted"]
    text = "\n".join(info["lines"])
    assert "Ngày làm việc bù: Thứ Bảy, 04/05/2024 — Ngày làm việc bù (cho ngày nghỉ 29/04/2024)" in text
    assert "không làm thay đổi hạn" in text


# --------------------------------------------------------------------------- config validation

def _write(tmp_path, text, name="ov.yaml"):
    p = tmp_path / name
    p.write_text(text, encoding="utf-8")
    return p


@pytest.mark.parametrize("text,entry,field", [
    ("province: X\nholidays: []\n", "(top level)", "holidays"),
    ("days_off: []\n", "(top level)", "province"),
    ("province: X\ndays_off:\n  - {date: 2025-13-01, name: a}\n", "days_off[0]", "date"),
    ("province: X\ndays_off:\n  - {date: 2025-12-01}\n", "days_off[0]", "name"),
    ("province: X\ndays_off:\n  - {date: 2025-12-01, name: a, reason: b}\n", "days_off[0]", "reason"),
    ("province: X\ndays_off:\n  - {from: 2025-12-05, to: 2025-12-01, name: a}\n", "days_off[0]", "to"),
    ("province: X\ndays_off:\n  - {date: 2025-12-01, name: a}\nworking_days:\n  - {date: 2025-12-01, name: b}\n",
     "working_days[0]", "date"),
    ("province: X\nworking_days:\n  - {date: 2025-12-06, name: b, sessions: ['13:00-12:00']}\n",
     "working_days[0]", "sessions[0]"),
    ("province: X\ncounter_sessions:\n  - {from: 2025-01-01, sessions: ['07:30-11:30'], name: s, weekdays: [mon]}\n",
     "counter_sessions[0]", "weekdays"),
    ("province: X\ncounter_sessions:\n  - {from: 2025-01-01, sessions: ['7h30-11h30'], name: s}\n",
     "counter_sessions[0]", "sessions[0]"),
    ("province: X\ncounter_sessions:\n  - {from: 2025-01-01, sessions: ['07:30-11:30'], name: s, counts_toward_deadlines: maybe}\n",
     "counter_sessions[0]", "counts_toward_deadlines"),
    ("province: X\ndays_off:\n  - {date: 2050-01-01, name: a}\n", "days_off[0]", "date"),
])
def test_override_errors_name_file_entry_field(tmp_path, text, entry, field):
    p = _write(tmp_path, text)
    with pytest.raises(CalendarConfigError) as exc:
        load_overrides(p)
    assert exc.value.entry == entry and exc.value.field == field
    assert str(p) in str(exc.value)


def test_invalid_yaml_and_missing_file(tmp_path):
    with pytest.raises(CalendarConfigError, match="invalid YAML"):
        load_overrides(_write(tmp_path, "province: [x\n"))
    with pytest.raises(CalendarConfigError, match="no such override file"):
        calendar_for("default", tmp_path / "missing.yaml")


@pytest.mark.parametrize("text,field", [
    ("offices:\n  a: {name: A, hours: 8}\n", "hours"),
    ("offices:\n  a: {sessions: {mon: ['07:30-11:30']}}\n", "name"),
    ("offices:\n  a: {name: A, sessions: {monday: ['07:30-11:30']}}\n", "monday"),
    ("offices:\n  a: {name: A, sessions: {mon: ['07:30-11:30', '11:00-12:00']}}\n", "sessions.mon[1]"),
    ("offices:\n  a: {name: A, sessions: {}}\n", "sessions"),
    ("offices:\n  a: {name: A, overrides: [nope.yaml]}\n", "overrides"),
])
def test_offices_errors(tmp_path, text, field):
    with pytest.raises(CalendarConfigError) as exc:
        load_offices(_write(tmp_path, text, "offices.yaml"))
    assert exc.value.field == field


def test_shipped_data_is_valid():
    offices = load_offices()
    assert {"default", "summer-0700", "example-saturday-counter"} <= set(offices)
    for p in (HERE.parent.parent / "shared/data/overrides").glob("*.yaml"):
        assert load_overrides(p).province


def test_override_local_decisions_win_and_counter_sessions_can_count(tmp_path):
    p = _write(tmp_path, """
province: Tỉnh Thử
days_off:
  - {from: 2024-11-06, to: 2024-11-07, name: Nghỉ theo quyết định, basis: QĐ 1}
working_days:
  - {date: 2024-09-02, name: Làm việc}
counter_sessions:
  - {from: 2024-11-01, to: 2024-11-30, sessions: ['08:00-11:00'], counts_toward_deadlines: true, name: Sáng thứ Bảy}
""")
    cal = WorkingCalendar(load_offices()["default"], [load_overrides(p)])
    assert not cal.is_working_day(date(2024, 11, 6)) and not cal.is_working_day(date(2024, 11, 7))
    assert cal.day_info(date(2024, 11, 6)).basis == "QĐ 1"
    assert cal.is_working_day(date(2024, 9, 2))                      # national holiday overridden
    assert cal.is_working_day(date(2024, 11, 9)) and not cal.is_working_day(date(2024, 12, 7))
    # Tue 05/11 13:00, 1wd: Tue 4h; Wed/Thu off; Fri 08/11 4h → 11:30
    assert cal.due_at(datetime(2024, 11, 5, 13, tzinfo=TZ), "1wd") == datetime(2024, 11, 8, 11, 30, tzinfo=TZ)
    # Fri 08/11 16:00, 4wh: Fri 1h, Sat 09/11 08:00-11:00 3h → 11:00
    assert cal.due_at(datetime(2024, 11, 8, 16, tzinfo=TZ), "4wh") == datetime(2024, 11, 9, 11, 0, tzinfo=TZ)


# --------------------------------------------------------------------------- CLI

def test_cli_json(capsys):
    rc = cli.main(["deadline", "--received", "2024-02-07T09:00:00+07:00", "--limit", "5wd", "--json"])
    assert rc == 0
    out = json.loads(capsys.readouterr().out)
    assert out["due_at"] == "2024-02-21T02:00:00+00:00"
    assert any("Mùng ba Tết Nguyên Đán" in line for line in out["lines"])


def test_cli_human_output_with_pause(capsys):
    rc = cli.main(["deadline", "--received", "2024-11-04T07:30:00+07:00", "--limit", "1wd",
                   "--pause", "2024-11-04T16:00:00+07:00/2024-11-05T08:30:00+07:00"])
    assert rc == 0
    out = capsys.readouterr().out
    assert "Hạn giải quyết: 09:30 ngày 05/11/2024" in out


@pytest.mark.parametrize("argv,message", [
    (["--received", "2024-11-04T07:30:00", "--limit", "1wd"], "no UTC offset"),
    (["--received", "yesterday", "--limit", "1wd"], "not an ISO 8601"),
    (["--received", "2024-11-04T07:30:00+07:00", "--limit", "1week"], "invalid time limit"),
    (["--received", "2024-11-04T07:30:00+07:00", "--limit", "1wd", "--pause",
      "2024-11-05T08:00:00+07:00/2024-11-04T08:00:00+07:00"], "end is before the start"),
    (["--received", "2024-11-04T07:30:00+07:00", "--limit", "1wd", "--pause", "2024-11-05T08:00:00+07:00"],
     "expected START/END"),
    (["--received", "2024-11-04T07:30:00+07:00", "--limit", "1wd", "--pause", "2024-11-05T08:00:00+07:00/"],
     "needs --now"),
    (["--received", "2024-11-04T07:30:00+07:00", "--limit", "1wd", "--office", "mars"], "unknown office"),
])
def test_cli_errors(capsys, argv, message):
    assert cli.main(["deadline", *argv]) == 2
    assert message in capsys.readouterr().err


def test_explain_cd_with_open_pause_and_counter_session():
    cal = calendar_for("example-saturday-counter")
    received = datetime(2025, 3, 1, 9, 0, tzinfo=TZ)                 # Saturday counter session
    pauses = [(datetime(2025, 3, 3, 8, 0, tzinfo=TZ), None)]
    now = datetime(2025, 3, 5, 10, 0, tzinfo=TZ)
    info = explain_due(cal, received, "30cd", pauses, ruleset="nd61-107", catalog_version="-", now=now)
    # start Mon 03/03 07:30; paused 08:00 Mon → 10:00 Wed = 2 days 2 hours; 05/03 + 30 = Fri 04/04
    assert info["due_at_local"] == "2025-04-04T17:00:00+07:00"
    assert cal.due_at(received, "30cd", pauses, now=now) == datetime(2025, 4, 4, 17, 0, tzinfo=TZ)
    assert info["pauses"][0]["calendar_seconds"] == 50 * 3600
    text = "\n".join(info["lines"])
    assert "không tính 2 ngày 2 giờ theo lịch" in text
    assert "như thể tính tiếp từ 10:00 Thứ Tư, 05/03/2025" in text
    assert "Phiên tiếp nhận ngoài ngày làm việc: Thứ Bảy, 01/03/2025" in text
    assert "không tính vào thời hạn" in text
    assert not cal.is_working_instant(received) and cal.is_counter_open(received)
    assert not cal.is_counter_open(datetime(2025, 3, 1, 13, 0, tzinfo=TZ))


def test_calendar_for_sees_a_changed_override_file_after_the_recheck_interval(tmp_path, monkeypatch):
    from shared.domain.workcal import cache

    path = _write(tmp_path, "province: Tỉnh A\ndays_off:\n  - {date: 2026-11-25, name: Nghỉ A}\n")
    first = calendar_for("default", path)
    assert not first.is_working_day(date(2026, 11, 25))
    path.write_text("province: Tỉnh A\ndays_off:\n  - {date: 2026-11-26, name: Nghỉ B}\n", encoding="utf-8")
    monkeypatch.setattr(cache, "RECHECK_SECONDS", 3600.0)
    assert calendar_for("default", path) is first          # within the interval: no stat, same calendar
    monkeypatch.setattr(cache, "RECHECK_SECONDS", 0.0)
    os.utime(path, ns=(path.stat().st_atime_ns, path.stat().st_mtime_ns + 10**9))
    second = calendar_for("default", path)
    assert second.version != first.version
    assert second.is_working_day(date(2026, 11, 25)) and not second.is_working_day(date(2026, 11, 26))
