"""`motcua rules list|show` and `motcua deadline` saying which rule set judges a dossier and why,
with the rule set's clock model applied to a supplement during handling; the engine's deadline
explanation (what the sla API's /deadline returns) carries the same reason."""
from __future__ import annotations

import json
import uuid
from pathlib import Path

import pytest
import yaml

from shared import cli
from shared.domain import workcal
from shared.domain.catalog import catalog_from_records
from shared.domain.engine import EngineContext, default_rulesets, explain_deadline, replay
from shared.contracts.events import load_stored

SCEN = Path(__file__).parent / "engine_scenarios"


def run(capsys, *argv):
    rc = cli.main(list(argv))
    out = capsys.readouterr()
    return rc, out.out, out.err


def test_rules_list(capsys):
    rc, out, _ = run(capsys, "rules", "list")
    assert rc == 0 and "Từ 01/07/2025: nd118-2025" in out and "Từ 21/06/2018: nd61-107" in out
    rc, out, _ = run(capsys, "rules", "list", "--json")
    assert json.loads(out)["bindings"][-1] == {"effective_from": "2025-07-01", "ruleset": "nd118-2025",
                                               "title": default_rulesets().get("nd118-2025").title}


def test_rules_show_every_rule_with_article_and_verified_against(capsys):
    rc, out, _ = run(capsys, "rules", "show", "nd118-2025", "--json")
    data = json.loads(out)
    assert rc == 0 and data["clock"] == {"supplement_in_handling": "restart"}
    assert len(data["rules"]) == 19 and all(r["article"] and r["verified_against"] for r in data["rules"])
    assert data["forms"]["stop_notice"]["number"] == "05"
    rc, out, _ = run(capsys, "rules", "show", "nd118-2025", "--rule", "ONLINE_RECEIPT_LATE")
    assert "Điều khoản: Điểm c khoản 2 Điều 17" in out and "Tham số: within=8wh" in out
    assert "Đối chiếu với: Nguyên văn Nghị định 118/2025/NĐ-CP ngày 09/6/2025" in out
    rc, out, _ = run(capsys, "rules", "show", "nd61-107")
    assert "Không có trong bộ quy tắc này: ONLINE_RECEIPT_LATE" in out
    assert "Mẫu số 04 Phiếu xin lỗi và hẹn lại ngày trả kết quả" in out


def test_rules_show_by_receipt_instant_on_both_sides_of_the_boundary(capsys):
    rc, out, _ = run(capsys, "rules", "show", "--received", "2025-06-30T23:59:59+07:00", "--json")
    assert json.loads(out)["id"] == "nd61-107"
    rc, out, _ = run(capsys, "rules", "show", "--received", "2025-06-30T17:00:00Z", "--json")
    data = json.loads(out)
    assert data["id"] == "nd118-2025" and data["why"]["received_local_date"] == "2025-07-01"


@pytest.mark.parametrize("argv,message", [
    (["rules", "show"], "say which rule set"),
    (["rules", "show", "nd99-2030"], "unknown rule set"),
    (["rules", "show", "nd61-107", "--rule", "SUPPLEMENT_HELD_DATA"], "absent from this law"),
    (["rules", "show", "--received", "2025-07-01T08:00:00"], "no UTC offset"),
    (["rules", "list", "--rulesets", "/nonexistent/rulesets.yaml"], "cannot read"),
])
def test_rules_errors(capsys, argv, message):
    rc, _, err = run(capsys, *argv)
    assert rc == 2 and message in err


SUPPLEMENT = "2025-07-02T09:00:00+07:00/2025-07-03T09:00:00+07:00"


def test_deadline_picks_the_rule_set_of_the_receipt_and_its_clock_model(capsys):
    # nd61-107, pause: from Tue 07-01 07:30, 40wh -> Mon 07-07 17:00, +8wh paused -> Tue 07-08 17:00
    rc, out, _ = run(capsys, "deadline", "--received", "2025-06-30T23:59:00+07:00", "--limit", "5wd",
                     "--supplement", SUPPLEMENT, "--json")
    old = json.loads(out)
    assert old["due_at"] == "2025-07-08T10:00:00+00:00" and old["ruleset"] == "nd61-107"
    assert old["ruleset_reason"]["clock_model"] == "pause" and "nd61-107" in old["lines"][0]
    # nd118-2025, restart from the complete dossier Thu 07-03 09:00 -> Thu 07-10 09:00
    rc, out, _ = run(capsys, "deadline", "--received", "2025-07-01T00:00:00+07:00", "--limit", "5wd",
                     "--supplement", SUPPLEMENT)
    assert "Hạn giải quyết: 09:00 ngày 10/07/2025" in out
    assert "áp dụng bộ quy tắc nd118-2025" in out and "tính lại từ đầu" in out
    # naming a rule set overrides the binding, and says so
    rc, out, _ = run(capsys, "deadline", "--received", "2025-07-01T00:00:00+07:00", "--limit", "5wd",
                     "--supplement", SUPPLEMENT, "--ruleset", "nd61-107", "--json")
    forced = json.loads(out)
    assert forced["due_at"] == "2025-07-08T10:00:00+00:00" and "--ruleset" in forced["lines"][0]
    rc, _, err = run(capsys, "deadline", "--received", "2025-07-01T00:00:00+07:00", "--limit", "5wd",
                     "--ruleset", "nd0")
    assert rc == 2 and "unknown rule set" in err


def test_engine_explanation_says_which_rule_set_and_why():
    records = yaml.safe_load((SCEN / "catalog.yaml").read_text(encoding="utf-8"))
    ctx = EngineContext(catalog=catalog_from_records(records), calendars=workcal.calendar_for,
                        rulesets=default_rulesets())

    def ev(etype, at, data):
        return load_stored({"event_id": str(uuid.uuid4()), "type": f"dossier.{etype}", "dossier_code": "X-1",
                            "occurred_at": at, "recorded_at": at, "agency_code": "000.00.17.H56", "data": data})
    s = replay([ev("received", "2025-07-01T00:00:00+07:00",
                   {"procedure_code": "T.5WD", "channel": "direct", "components": ["to-khai", "cccd"],
                    "applicant": {"kind": "citizen", "name": "A"}}),
                ev("supplement_requested", "2025-07-02T09:00:00+07:00",
                   {"stage": "handling", "components": ["cccd"], "reason": "x"}),
                ev("supplement_received", "2025-07-03T09:00:00+07:00", {"components": ["cccd"]})], ctx)
    out = explain_deadline(s, ctx)
    why = out["ruleset_reason"]
    assert why["ruleset"] == "nd118-2025" and why["bound_from"] == "2025-07-01"
    assert why["clock_model"] == "restart" and "tính lại từ đầu" in why["text"]
    assert out["lines"][0] == why["text"] and out["engine"]["clock_model"] == "restart"
    # a binding file changed since receipt: the dossier keeps its rule set, and the text says so
    from shared.domain.engine.ruledata import RULES_DIR, load_rulesets
    import tempfile
    with tempfile.TemporaryDirectory() as tmp:
        p = Path(tmp) / "rulesets.yaml"
        p.write_text(f"default: nd61-107\nbindings:\n  - {{id: nd61-107, file: {RULES_DIR / 'nd61-107.yaml'}, "
                     f"effective_from: 2018-06-21}}\n  - {{id: nd118-2025, file: {RULES_DIR / 'nd118-2025.yaml'}, "
                     f"effective_from: 2025-08-01}}\n", encoding="utf-8")
        ctx2 = EngineContext(ctx.catalog, ctx.calendars, load_rulesets(p))
        why2 = explain_deadline(s, ctx2)["ruleset_reason"]
    assert why2["ruleset"] == "nd118-2025" and why2["binding_now"] == "nd61-107"
    assert "giữ bộ quy tắc đã áp dụng" in why2["text"]
