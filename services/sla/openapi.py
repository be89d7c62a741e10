"""OpenAPI 3 description of the sla read API (`services/sla/api.py`), served at `/openapi.json`.
Written by hand: the API is small and reads only; tests/unit/test_sla_openapi.py drives every
query parameter from it with schemathesis (no answer may be a 5xx)."""
from __future__ import annotations

from functools import lru_cache

from shared.platform.apidoc import common_errors, document, err, path, query
from shared.domain.engine.ruledata import RULE_CODES

SEVERITIES = ["info", "warning", "critical"]
OPEN = {"type": "object", "additionalProperties": True}


def _get(summary: str, params: list, ok: str, extra: dict | None = None) -> dict:
    return {"get": {"summary": summary, "security": [{"bearer": []}], "parameters": params,
                    "responses": {"200": {"description": ok, "content": {"application/json": {"schema": OPEN}}},
                                  **common_errors(), **(extra or {})}}}


@lru_cache(maxsize=1)
def build_spec() -> dict:
    code = path("code", "dossier code", {"type": "string", "minLength": 1, "maxLength": 128})
    not_found = {"404": err("no such dossier visible to this key")}
    agency = query("agency", "agency code: its subtree (must be known and inside the key's subtree; "
                   "default: the key's agency)", {"type": "string", "maxLength": 128})
    paths = {
        "/v1/dossiers/{code}": _get("A dossier's state and timeline (personal data redacted)", [code],
                                    "the dossier", not_found),
        "/v1/dossiers/{code}/findings": _get("Findings of a dossier, each with `alerting` (acknowledgement "
                                             "and escalation as notify recorded them)", [code], "findings",
                                             not_found),
        "/v1/dossiers/{code}/deadline": _get("The legal due date and its explanation", [code], "explanation",
                                             {**not_found, "409": err("no legal due date (not received, or "
                                                                      "procedure unknown)")}),
        "/v1/findings": _get("Open findings of a subtree, filtered and paged", [
            agency,
            query("rule", "a rule code", {"type": "string", "enum": list(RULE_CODES)}),
            query("severity", "severity", {"type": "string", "enum": SEVERITIES}),
            query("field", "a field (lĩnh vực) of the procedure catalog"),
            query("procedure", "a procedure code of the catalog"),
            query("state", "comma-separated states (default open,escalated)",
                  {"type": "string", "pattern": "^(open|escalated|resolved)(,(open|escalated|resolved))*$"}),
            query("limit", "page size", {"type": "integer", "minimum": 1, "maximum": 500}),
            query("offset", "items skipped", {"type": "integer", "minimum": 0, "maximum": 10**9}),
        ], "a page of findings", {"422": err("unknown agency, rule, procedure or field (named)")}),
        "/v1/reports/on-time": _get("On-time report (Biểu 06/VPCP/KSTT); `Accept: text/csv` for CSV. A period "
                                    "that includes now is judged at now, a past one at its end", [
            agency,
            query("from", "first day (local), default the 1st of this month",
                  {"type": "string", "format": "date"}),
            query("to", "last day (local), default today", {"type": "string", "format": "date"}),
            query("group_by", "grouping", {"type": "string", "enum": ["agency", "field", "procedure"]}),
        ], "the report", {"422": err("unknown agency")}),
    }
    for p, summary in (("/healthz", "liveness"), ("/readyz", "MongoDB reachable"), ("/metrics", "Prometheus")):
        paths[p] = {"get": {"summary": summary, "responses": {"200": {"description": "ok"},
                                                               "503": {"description": "not ready"}}}}
    return document("motcua sla", "Trạng thái hồ sơ, vi phạm và báo cáo đúng hạn (read API of the sla "
                    "service).", paths)
