"""Rehearsal mode (issue 12): the clock commands of `motcua local` on a stack's state directory
(nothing is started), and the scripted month of `motcua demo --month` (pure)."""
from __future__ import annotations

import json
from datetime import datetime, timezone

import pytest

from shared.cli import local as cli_local
from shared.domain.catalog import default_catalog
from shared.cli import main
from shared.platform.clock import FileClock
from shared.dev.demo_month import month_script, play
from shared.domain.directory import default_directory
from shared.dev.stackconfig import StackConfig
from shared.domain.instants import TZ

START = datetime(2026, 11, 2, 0, 0, tzinfo=timezone.utc)      # Monday 07:00 in Vietnam


@pytest.fixture
def stack_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("MOTCUA_LOCAL_DIR", str(tmp_path / "state"))
    monkeypatch.setenv("MOTCUA_LOCAL_NAME", "rehearsal")
    monkeypatch.delenv("MOTCUA_CLOCK_FILE", raising=False)
    # no MongoDB, whatever the shell exported: the commands fall back to the files at once
    from helpers.net import closed_port
    monkeypatch.setenv("MONGO_URI", f"mongodb://127.0.0.1:{closed_port()}/")
    monkeypatch.setenv("MONGO_TIMEOUT_MS", "50")
    return tmp_path


def test_clock_commands_need_a_rehearsal_stack(stack_dir, capsys):
    assert main(["local", "clock"]) != 0
    assert "system clock" in capsys.readouterr().err


def test_clock_file_is_recorded_shown_moved_and_exported(stack_dir, capsys, monkeypatch):
    cfg = StackConfig.from_env()
    path = cli_local._start_clock(cfg, str(stack_dir / "clock.txt"), "2026-11-02T07:00+07:00")
    import os
    assert os.environ["MOTCUA_CLOCK_FILE"] == path         # what the services started next inherit
    assert main(["local", "clock", "advance", "1d"]) == 0
    assert "REHEARSAL" in capsys.readouterr().out and FileClock(path).now() == START.replace(day=3)
    assert main(["local", "clock", "set", "2026-11-09T09:10+07:00"]) == 0
    out = capsys.readouterr().out
    assert "2026-11-09 09:10 Mon" in out
    assert main(["local", "clock", "set", "2026-11-09T09:10"]) != 0            # no offset
    assert main(["local", "clock", "advance", "soon"]) != 0
    main(["local", "env"])
    assert f"export MOTCUA_CLOCK_FILE={path}" in capsys.readouterr().out
    main(["local", "status"])
    assert "clock: REHEARSAL" in capsys.readouterr().out
    main(["local", "down"])
    main(["local", "status"])
    assert "clock: system time" in capsys.readouterr().out


def test_month_script_has_every_kind_of_work_in_order():
    steps = month_script(default_catalog(), default_directory(), START)
    ats = [s.at for s in steps]
    assert ats == sorted(ats) and ats[0] >= START
    assert (ats[-1] - START).days < 30
    types = [e["type"] for s in steps for e in s.events]
    for t in ("dossier.received", "dossier.supplement_requested", "dossier.supplement_received",
              "dossier.apology_issued", "dossier.resolved", "dossier.returned"):
        assert t in types, t
    assert sum(len(s.acks) for s in steps) == 1
    for s in steps:                                       # every event at its step's instant
        assert all(e["occurred_at"] == s.at.isoformat() for e in s.events)
    mornings = [s for s in steps if s.at.astimezone(TZ).strftime("%H:%M") == "07:40"]
    assert len(mornings) >= 20 and all(s.wait == 11.0 for s in mornings)   # the digest window
    assert 300 <= sum(s.wait for s in steps) <= 480                       # "in minutes"


def test_play_sets_the_clock_posts_and_acknowledges(tmp_path):
    clock = FileClock(tmp_path / "c.txt")
    clock.set(START)
    steps = month_script(default_catalog(), default_directory(), START, days=8)
    seen = []
    done = play(steps, clock, post=lambda e: seen.append((clock.now(), e["occurred_at"])),
                acknowledge=lambda code: seen.append((clock.now(), code)), say=lambda _: None,
                sleep=lambda s: None)
    assert done["acks"] == 1 and done["events"] == len([x for x in seen if "T" in str(x[1])])
    assert all(now.isoformat() == at for now, at in seen if "T" in str(at))
    assert clock.now() == steps[-1].at


def test_demo_month_without_the_rehearsal_clock_is_a_clear_error(stack_dir, capsys):
    assert main(["demo", "--month", "--dry-run"]) != 0
    assert "motcua local up --clock FILE" in capsys.readouterr().err


def test_demo_month_dry_run_prints_the_steps(stack_dir, capsys, monkeypatch):
    FileClock(stack_dir / "c.txt").set(START)
    monkeypatch.setenv("MOTCUA_CLOCK_FILE", str(stack_dir / "c.txt"))
    assert main(["demo", "--month", "--dry-run", "--days", "7"]) == 0
    lines = [json.loads(x) for x in capsys.readouterr().out.splitlines()]
    assert lines and lines[0]["at"] >= START.isoformat()
