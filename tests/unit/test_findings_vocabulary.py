"""The findings vocabulary (states, severities, responsible roles) is defined once, in
shared/contracts/findings.py, and every writer and reader of findings uses it."""
from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_the_vocabulary_is_written_once():
    literals = [re.compile(r"\(\s*\"info\",\s*\"warning\",\s*\"critical\"\s*\)"),
                re.compile(r"\(\s*\"open\",\s*\"escalated\",\s*\"resolved\"\s*\)"),
                re.compile(r"\(\s*\"officer\",\s*\"one_stop_chief\",\s*\"agency_head\",\s*\"parent_head\"\s*\)")]
    found = sorted({str(p.relative_to(ROOT)) for top in ("services", "shared") for p in (ROOT / top).rglob("*.py")
                    for lit in literals if lit.search(p.read_text(encoding="utf-8"))})
    assert found == ["shared/contracts/findings.py"]


def test_rules_api_and_notify_share_it():
    from services.notify import planning, policy, routing
    from services.sla import api
    from shared.contracts import findings
    from shared.domain.engine import ruledata

    assert ruledata.SEVERITIES is policy.SEVERITIES is routing.SEVERITIES is api.SEVERITIES is findings.SEVERITIES
    assert ruledata.ROLES is findings.ROLES
    assert api.STATES is findings.STATES
    assert planning.SEVERITIES is findings.SEVERITIES      # notify reads messages with findings.parse
