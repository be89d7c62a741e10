"""A `sla.findings` message in, the finding as notify stores it out (contract: shared/contracts/findings.py)."""
from __future__ import annotations

from typing import Any

from shared.contracts import findings
from shared.contracts.events import redact

# a findings message outside the contract: dead-lettered with reason invalid_finding
FindingError = findings.FindingError


def parse_finding(value: Any) -> dict:
    """The stored form of a `sla.findings` message (the contract of shared/contracts/findings.py), or
    FindingError naming the field."""
    msg = findings.parse(value)
    return {
        "_id": msg["finding_id"], "rule": msg["rule"], "state": msg["state"],
        "severity": msg["severity"], "dossier_code": msg["dossier_code"],
        "agency_code": msg["agency_code"], "responsible_role": msg["responsible_role"],
        "detected_at": msg["detected_at"], "due_at": msg["due_at"],
        "overdue_working_hours": msg["overdue_working_hours"], "details": redact(msg["details"]),
        "revision": msg["revision"], "procedure_code": msg["procedure_code"],
        "legal_basis": msg["legal_basis"], "title": msg["title"], "ruleset": msg["ruleset"],
    }
