"""Benchmark: evaluating the rules of LEGAL.md on 100,000 dossier states.

Run on demand: `pytest tests/perf/test_rules_perf.py -m perf -s` (or MOTCUA_PERF=1).
Prints the engine's rate beside a baseline measured in the same run: the bare overdue test
(`now > state.due_at`) over the same states, i.e. the floor of any per-dossier check, and the
ratio between them. No rate is asserted (the machines are shared): compare ratios between runs.
"""
from __future__ import annotations

import random
import time
import uuid
from dataclasses import replace
from datetime import datetime, timedelta
from pathlib import Path

import pytest
import yaml

from shared.domain import workcal
from shared.domain.catalog import catalog_from_records
from shared.domain.engine import EngineContext, default_rulesets, evaluate, reconcile, replay
from shared.contracts.events import load_stored

pytestmark = pytest.mark.perf

N = 100_000
SCEN = Path(__file__).resolve().parent.parent / "unit" / "engine_scenarios"
BASE = datetime.fromisoformat("2024-11-04T08:00:00+07:00")


def _ctx() -> EngineContext:
    records = yaml.safe_load((SCEN / "catalog.yaml").read_text(encoding="utf-8"))
    return EngineContext(catalog=catalog_from_records(records), calendars=workcal.calendar_for,
                         rulesets=default_rulesets())


def _history(rng: random.Random, code: str) -> list[dict]:
    t = BASE + timedelta(minutes=rng.randrange(0, 10 * 24 * 60))
    proc = rng.choice(["T.5WD", "T.5WD-W16", "T.4WD-P50", "T.2WD-R", "T.SAME"])
    raw = [("received", t, {"procedure_code": proc, "channel": rng.choice(["direct", "online"]),
                            "components": rng.choice([["to-khai", "cccd"], ["to-khai"]]),
                            "handling_agency_code": "000.00.20.H56",
                            "applicant": {"kind": "citizen", "name": "Hồ Văn Em"}}, "000.00.17.H56")]
    steps = [
        ("transferred", {"to_agency_code": "000.00.20.H56"}, "000.00.17.H56"),
        ("assigned", {"officer": {"id": "cb-1"}}, "000.00.20.H56"),
        ("supplement_requested", {"stage": "handling", "components": ["cccd"], "reason": "Thiếu"}, "000.00.20.H56"),
        ("supplement_received", {"components": ["cccd"]}, "000.00.17.H56"),
        ("consultation_requested", {"to_agency_code": "000.00.30.H56", "due_in": {"value": 2, "unit": "wd"}}, "000.00.20.H56"),
        ("apology_issued", {"new_appointment_at": (t + timedelta(days=9)).isoformat(), "reason": "Chậm"}, "000.00.20.H56"),
        ("resolved", {"outcome": "approved"}, "000.00.20.H56"),
    ]
    for kind, data, agency in steps[:rng.randrange(0, len(steps) + 1)]:
        t += timedelta(minutes=rng.randrange(30, 2 * 24 * 60))
        raw.append((kind, t, data, agency))
    return [load_stored({"event_id": str(uuid.UUID(int=rng.getrandbits(122))), "type": f"dossier.{k}",
                         "dossier_code": code, "occurred_at": at.isoformat(), "recorded_at": at.isoformat(),
                         "agency_code": ag, "data": d}) for k, at, d, ag in raw]


def test_evaluate_100k_states():
    ctx = _ctx()
    rng = random.Random(61_107)
    t0 = time.perf_counter()
    templates = [replay(_history(rng, f"TPL-{i}"), ctx) for i in range(500)]
    replay_rate = 500 / (time.perf_counter() - t0)
    states = [replace(templates[i % len(templates)], dossier_code=f"PERF-{i:06d}") for i in range(N)]
    nows = [BASE + timedelta(hours=rng.randrange(0, 30 * 24)) for _ in range(N)]

    t0 = time.perf_counter()
    overdue_baseline = sum(1 for s, now in zip(states, nows) if s.due_at is not None and now > s.due_at
                           and s.resolved_at is None)
    base_s = time.perf_counter() - t0

    t0 = time.perf_counter()
    findings = 0
    with_next = 0
    for s, now in zip(states, nows):
        ev = evaluate(s, now, ctx)
        findings += len(ev.findings)
        with_next += ev.next_check_at is not None
    eval_s = time.perf_counter() - t0

    # the same with the calendar looked up once (calendar_for re-checks its files at every call)
    cal = workcal.calendar_for("default")
    memo = replace(ctx, calendars=lambda office: cal)
    t0 = time.perf_counter()
    for s, now in zip(states, nows):
        evaluate(s, now, memo)
    memo_s = time.perf_counter() - t0

    t0 = time.perf_counter()
    for s, now in zip(states[:10_000], nows[:10_000]):
        reconcile({}, evaluate(s, now, ctx), now)
    rec_s = time.perf_counter() - t0

    print(f"\n{'':34}{'seconds':>10}{'per second':>14}")
    print(f"{'baseline: now > due_at':34}{base_s:10.3f}{N / base_s:14,.0f}")
    print(f"{'evaluate (15 rules)':34}{eval_s:10.3f}{N / eval_s:14,.0f}")
    print(f"{'evaluate, calendar memoized':34}{memo_s:10.3f}{N / memo_s:14,.0f}")
    print(f"{'evaluate + reconcile (10k)':34}{rec_s:10.3f}{10_000 / rec_s:14,.0f}")
    print(f"{'replay (500 histories)':34}{'':>10}{replay_rate:14,.0f}")
    print(f"evaluate costs {eval_s / base_s:,.0f}x the baseline ({eval_s / N * 1e6:.1f} us per dossier), "
          f"{memo_s / base_s:,.0f}x with the calendar memoized")
    print(f"findings: {findings:,}; overdue by the baseline test: {overdue_baseline:,}; "
          f"states with a next check: {with_next:,}")
    assert findings > 0 and with_next > 0
