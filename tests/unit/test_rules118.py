"""Rule set nd118-2025 beside nd61-107: the rule-file format (article, verified_against, clock
model, forms, absent rules), the binding by receipt instant, and the finding's article."""
from __future__ import annotations

import uuid
from datetime import datetime
from pathlib import Path

import pytest
import yaml

from shared.domain import workcal
from shared.domain.catalog import catalog_from_records
from shared.domain.engine import (EngineContext, RuleDataError, default_rulesets, evaluate, load_ruleset,
                           replay)
from shared.domain.engine.ruledata import RULES_DIR
from shared.contracts.events import load_stored

SCEN = Path(__file__).parent / "engine_scenarios"


@pytest.fixture(scope="module")
def ctx() -> EngineContext:
    records = yaml.safe_load((SCEN / "catalog.yaml").read_text(encoding="utf-8"))
    return EngineContext(catalog=catalog_from_records(records), calendars=workcal.calendar_for,
                         rulesets=default_rulesets())


def _ev(etype, at, data=None, code="D-118"):
    data = dict(data or {})
    if etype == "received":
        data.setdefault("procedure_code", "T.5WD")
        data.setdefault("channel", "direct")
        data.setdefault("components", ["to-khai", "cccd"])
        data.setdefault("applicant", {"kind": "citizen", "name": "Lê Văn Cường"})
    return load_stored({"event_id": str(uuid.uuid4()), "type": f"dossier.{etype}", "dossier_code": code,
                        "occurred_at": at, "recorded_at": at, "agency_code": "000.00.17.H56", "data": data})


def _write(tmp_path, mutate) -> Path:
    raw = yaml.safe_load((RULES_DIR / "nd118-2025.yaml").read_text(encoding="utf-8"))
    mutate(raw)
    p = tmp_path / "nd118-2025.yaml"
    p.write_text(yaml.safe_dump(raw, allow_unicode=True), encoding="utf-8")
    return p


def _rule(raw, code):
    return next(r for r in raw["rules"] if r["code"] == code)


def test_shipped_nd118_2025():
    rs = load_ruleset(RULES_DIR / "nd118-2025.yaml")
    assert rs.id == "nd118-2025" and rs.absent == ()
    assert rs.supplement_in_handling == "restart"
    assert "09/6/2025" in rs.verified_against and "367/2025" in rs.verified_against
    for spec in rs.rules.values():
        # a rule read against more than the decree says so; it never drops the amendments caveat
        assert spec.article and (spec.verified_against == rs.verified_against
                                 or "367/2025" in spec.verified_against)
        assert "118/2025/NĐ-CP" in spec.citation
        assert "{form:" not in spec.requirement
    assert rs.form("stop_notice").label == "Thông báo dừng giải quyết hồ sơ (Mẫu số 05 Thông tư 03/2025/TT-VPCP)"
    assert rs.form("apology").number == "04"
    assert str(rs["ONLINE_RECEIPT_LATE"].params["within"]) == "8wh"
    assert str(rs["SUPPLEMENT_REQUEST_LATE"].params["within"]) == "3wd"
    assert str(rs["SUPPLEMENT_STALLED"].params["window"]) == "15cd"
    assert rs["SUPPLEMENT_STALLED"].params["stages"] == ("handling",)
    assert rs["SUPPLEMENT_REPEATED"].reception_responsible == "one_stop_chief"
    old = default_rulesets().get("nd61-107")
    assert old.form("stop_notice") is None and old.form("apology").number == "04"


@pytest.mark.parametrize("mutate, rule, fld, words", [
    (lambda r: r.update(absent=["NOT_A_RULE"]), None, "absent", "not a known rule"),
    (lambda r: r.update(absent=["OVERDUE"]), "OVERDUE", "code", "listed under `absent` and defined"),
    (lambda r: r["rules"].pop(), None, "rules", "missing rules: BACKDATED_EVENT (list a rule"),
    (lambda r: r.update(clock={"supplement_in_handling": "reset"}), None, "clock.supplement_in_handling", "must be one of"),
    (lambda r: r.update(clock={"supplement": "pause"}), None, "clock.supplement", "unknown key"),
    (lambda r: r["forms"].update(apology={"number": 4, "title": "x"}), None, "forms.apology.number", "two digits"),
    (lambda r: r["forms"].pop("stop_notice") and r["forms"].update(stop={"number": "05", "title": "x"}),
     None, "forms.stop", "unknown key"),
    (lambda r: _rule(r, "DUE_SOON").update(requirement="Gửi {form:apologie}"), "DUE_SOON", "requirement", "no such form"),
    (lambda r: _rule(r, "SUPPLEMENT_STALLED")["params"].update(stages=["counter"]), "SUPPLEMENT_STALLED",
     "params.stages", "non-empty list"),
    (lambda r: _rule(r, "ONLINE_RECEIPT_LATE")["params"].update(within="8cd"), "ONLINE_RECEIPT_LATE",
     "params.within", "unit must be"),
    (lambda r: _rule(r, "SUPPLEMENT_REPEATED").update(reception_responsible="clerk"), "SUPPLEMENT_REPEATED",
     "reception_responsible", "must be one of"),
])
def test_rule_file_errors_name_the_field(tmp_path, mutate, rule, fld, words):
    p = _write(tmp_path, mutate)
    with pytest.raises(RuleDataError) as exc:
        load_ruleset(p)
    assert (exc.value.rule, exc.value.field) == (rule, fld)
    assert words in str(exc.value)


def test_an_operator_can_change_the_clock_model_and_a_parameter_in_the_file(tmp_path, ctx):
    def edit(raw):
        raw["clock"] = {"supplement_in_handling": "pause"}
        _rule(raw, "SUPPLEMENT_REQUEST_LATE")["params"]["within"] = "5wd"
    p = _write(tmp_path, edit)
    (tmp_path / "rulesets.yaml").write_text(
        f"default: nd61-107\nbindings:\n  - {{id: nd61-107, file: {RULES_DIR / 'nd61-107.yaml'}, "
        f"effective_from: 2018-06-21}}\n  - {{id: nd118-2025, file: {p.name}, effective_from: 2025-07-01}}\n",
        encoding="utf-8")
    from shared.domain.engine import load_rulesets
    ctx2 = EngineContext(ctx.catalog, ctx.calendars, load_rulesets(tmp_path / "rulesets.yaml"))
    events = [_ev("received", "2025-07-07T09:00:00+07:00"),
              _ev("supplement_requested", "2025-07-11T09:00:00+07:00",
                  {"stage": "handling", "components": ["cccd"], "reason": "Thiếu"}),
              _ev("supplement_received", "2025-07-14T09:00:00+07:00", {"components": ["cccd"]})]
    shipped, edited = replay(events, ctx), replay(events, ctx2)
    assert shipped.supplement_policy == "restart" and edited.supplement_policy == "pause"
    # restart: 40wh from Mon 07-14 09:00 -> Mon 07-21 09:00; pause: 32wh spent, 8 left -> Tue 07-15 09:00
    assert shipped.due_at == datetime.fromisoformat("2025-07-21T09:00:00+07:00")
    assert edited.due_at == datetime.fromisoformat("2025-07-15T09:00:00+07:00")
    now = datetime.fromisoformat("2025-07-14T10:00:00+07:00")
    assert "SUPPLEMENT_REQUEST_LATE" in {f.rule for f in evaluate(shipped, now, ctx).findings}
    assert "SUPPLEMENT_REQUEST_LATE" not in {f.rule for f in evaluate(edited, now, ctx2).findings}


def test_a_dossier_keeps_the_rule_set_of_its_receipt_for_life(ctx):
    """Rebuild = replay: judged in 2026 by what bound on its receipt day, on both sides of 1/7/2025."""
    late_2026 = datetime.fromisoformat("2026-03-02T09:00:00+07:00")
    for at, expected in (("2025-06-30T23:59:59+07:00", "nd61-107"), ("2025-06-30T17:00:00+00:00", "nd118-2025")):
        s = replay([_ev("received", at)], ctx)
        assert s.ruleset == expected
        findings = evaluate(s, late_2026, ctx).findings
        assert findings and {f.ruleset for f in findings} == {expected}
        overdue = next(f for f in findings if f.rule == "OVERDUE").to_message()
        assert overdue["article"] == ("Điều 17, Điều 18" if expected == "nd61-107" else "Khoản 6 Điều 19")
        assert overdue["verified_against"]


def test_why_names_the_binding_and_the_next_one():
    sets = default_rulesets()
    before = sets.why(datetime.fromisoformat("2025-06-30T23:59:00+07:00"))
    assert before["ruleset"] == "nd61-107" and before["bound_from"] == "2018-06-21"
    assert before["next_binding"] == {"ruleset": "nd118-2025", "from": "2025-07-01"}
    assert before["supplement_in_handling"] == "procedure"
    after = sets.why(datetime.fromisoformat("2025-06-30T17:00:00+00:00"))
    assert after["ruleset"] == "nd118-2025" and after["received_local_date"] == "2025-07-01"
    assert "01/07/2025" in after["text"] and "nd118-2025" in after["text"]
    assert after["supplement_in_handling"] == "restart"
    ancient = sets.why(datetime.fromisoformat("2015-01-05T09:00:00+07:00"))
    assert ancient["bound_from"] is None and "mặc định" in ancient["text"]
