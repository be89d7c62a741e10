"""Table-driven scenarios of the legal engine (tests/unit/engine_scenarios/*.yaml).

Each scenario: a procedure, `steps` mixing events (arrival order, with occurred `at` and optional
`recorded`) and checks at an instant `now`: the exact set of rules open and escalated, and
optionally the legal due date, the next check instant, the status, the outcome, the reconcile
change kinds, and details of resolved findings. Expected instants are computed by hand (office
hours 07:30–11:30, 13:00–17:00, Asia/Ho_Chi_Minh; November 2024 has no public holiday).

Every rule has a `fires`, a `not_fires` and a `resolves` scenario (checked below).
"""
from __future__ import annotations

import re
from datetime import datetime, timedelta

import pytest

from shared.domain.engine import (RULE_CODES, DossierState, EngineContext, apply, default_rulesets, evaluate,
                           new_state, reconcile)
from shared.contracts.events import load_stored

from helpers.scenarios import KINDS, SCENARIOS, ctx, raw_event  # noqa: F401  (ctx: fixture)

def _t(text) -> datetime:
    t = text if isinstance(text, datetime) else datetime.fromisoformat(str(text))
    assert t.tzinfo is not None, f"scenario instant {text!r} must carry an offset"
    return t


def _event(sc: dict, index: int, step: dict, code: str, ctx) -> dict:
    return load_stored(raw_event(sc, index, step, code, ctx))       # exactly what sla gets from Kafka


def _same_instant(actual: datetime | None, expected) -> bool:
    if expected is None:
        return actual is None
    return actual is not None and abs(actual - _t(expected)) < timedelta(milliseconds=1)


def run_scenario(sc: dict, ctx) -> dict:
    """Runs the steps; returns what was seen per rule (for the coverage checks)."""
    code = "SC-" + re.sub(r"[^A-Za-z0-9._/-]", "-", sc["name"])[:60]
    state = new_state(code)
    stored: dict[str, dict] = {}
    events: list[dict] = []
    seen_open: set[str] = set()
    resolved: set[str] = set()
    for i, step in enumerate(sc["steps"]):
        where = f"{sc['_file']}: {sc['name']}: step {i + 1}"
        if "type" in step:
            ev = _event(sc, i, step, code, ctx)
            events.append(ev)
            state = apply(state, ev, ctx)
            assert apply(state, ev, ctx) == state, f"{where}: applying the event twice changed the state"
            continue
        now = _t(step["now"])
        evaluation = evaluate(state, now, ctx)
        changes = reconcile(stored, evaluation, now)
        for ch in changes:
            stored[ch.finding_id] = ch.message
            if ch.kind == "resolved":
                resolved.add(ch.message["rule"])
        opened = sorted(f.rule for f in evaluation.findings if f.state == "open")
        escalated = sorted(f.rule for f in evaluation.findings if f.state == "escalated")
        seen_open.update(opened + escalated)
        assert opened == sorted(step.get("open") or []), f"{where}: open rules at {now}"
        assert escalated == sorted(step.get("escalated") or []), f"{where}: escalated rules at {now}"
        if "due_at" in step:
            assert _same_instant(state.due_at, step["due_at"]), f"{where}: due_at {state.due_at}"
        if "next_check_at" in step:
            assert _same_instant(evaluation.next_check_at, step["next_check_at"]), \
                f"{where}: next_check_at {evaluation.next_check_at}"
        if "status" in step:
            assert state.status == step["status"], f"{where}: status {state.status}"
        if sc.get("ruleset"):
            got_rs = state.ruleset or (evaluation.findings[0].ruleset if evaluation.findings else None)
            assert got_rs in (None, sc["ruleset"]) and (state.ruleset or not state.received), \
                f"{where}: rule set {got_rs}"
            assert all(f.ruleset == sc["ruleset"] for f in evaluation.findings), f"{where}: finding rule set"
        if "anomaly" in step:
            assert any(step["anomaly"] in a for a in state.anomalies), f"{where}: anomalies {state.anomalies}"
        if "outcome" in step:
            got = state.outcome.kind if state.outcome else None
            assert got == step["outcome"], f"{where}: outcome {got}"
        for rule, kind in (step.get("changes") or {}).items():
            kinds = [ch.kind for ch in changes if ch.message["rule"] == rule]
            assert kind in kinds, f"{where}: expected a {kind} change of {rule}, got {kinds}"
        for rule, expected in (step.get("resolved_details") or {}).items():
            msgs = [ch.message for ch in changes if ch.kind == "resolved" and ch.message["rule"] == rule]
            assert msgs, f"{where}: {rule} was not resolved here"
            for k, v in expected.items():
                assert msgs[0]["details"].get(k) == v, f"{where}: {rule} details[{k}]"
        for k, v in (step.get("finding") or {}).items():       # {RULE.field: value}
            rule, fld = k.split(".", 1)
            f = next(f for f in evaluation.findings if f.rule == rule)
            got = getattr(f, fld) if fld != "due_at" else f.due_at
            if fld == "due_at":
                assert _same_instant(got, v), f"{where}: {k} = {got}"
            else:
                assert got == v, f"{where}: {k} = {got!r}"
        # every check also round-trips the state through its MongoDB document
        assert DossierState.from_doc(state.to_doc()) == state, f"{where}: to_doc/from_doc"
        for k, v in (step.get("finding_contains") or {}).items():   # {RULE.field: substring}
            rule, fld = k.split(".", 1)
            f = next(f for f in evaluation.findings if f.rule == rule)
            assert v in getattr(f, fld), f"{where}: {k} = {getattr(f, fld)!r}"
    # replaying the same events from scratch gives the identical state
    again = new_state(code)
    for ev in events:
        again = apply(again, ev, ctx)
    assert again == state, f"{sc['name']}: replay differs"
    return {"open": seen_open, "resolved": resolved}


@pytest.mark.parametrize("sc", SCENARIOS, ids=[f"{s['rule']}-{s['kind']}-{s['name']}" for s in SCENARIOS])
def test_scenario(sc, ctx):
    seen = run_scenario(sc, ctx)
    rule = sc["rule"]
    if sc["kind"] == "fires":
        assert rule in seen["open"], f"{sc['name']}: {rule} never fired"
    elif sc["kind"] == "not_fires":
        assert rule not in seen["open"], f"{sc['name']}: {rule} fired"
    elif sc["kind"] == "resolves":
        assert rule in seen["open"] and rule in seen["resolved"], f"{sc['name']}: {rule} did not open then resolve"
    elif sc["kind"] != "check":           # clock scenarios: only their own checks
        pytest.fail(f"{sc['name']}: unknown kind {sc['kind']!r}")


def test_every_rule_has_fires_not_fires_and_resolves_scenarios():
    have = {(s["rule"], s["kind"]) for s in SCENARIOS if s["rule"] in RULE_CODES}
    missing = [f"{r}/{k}" for r in RULE_CODES for k in KINDS if (r, k) not in have]
    assert not missing, f"rules without scenarios: {missing}"


def test_rules_new_in_118_have_scenarios_under_118_and_a_not_fires_under_61_107():
    sets = default_rulesets()
    new = sets.get("nd61-107").absent
    assert new and all(code in sets.get("nd118-2025").rules for code in new)
    have = {(s["rule"], s["kind"], s.get("ruleset")) for s in SCENARIOS}
    missing = [f"{r}/{k}" for r in new for k in KINDS if (r, k, "nd118-2025") not in have]
    missing += [f"{r}/not_fires under nd61-107" for r in new if (r, "not_fires", "nd61-107") not in have]
    assert not missing, f"scenarios missing: {missing}"
    # the rules 118 changed have a scenario under each rule set
    for rule in ("SUPPLEMENT_STALLED", "SUPPLEMENT_REPEATED", "APOLOGY_MISSING", "CLOCK"):
        assert {r for (c, _, r) in have if c == rule} >= {"nd61-107", "nd118-2025"}, rule
