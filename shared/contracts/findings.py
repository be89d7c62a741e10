"""The `sla.findings` message contract (DESIGN.md §7), defined once for its writer and its reader.

sla builds every message it publishes with `message()` (shared/domain/engine/rules.py,
services/sla/repository.py); notify reads each one with `parse()` (services/notify/parsing.py).
A field is added here, or it does not flow.

| field | type | required | notes |
|---|---|---|---|
| `finding_id` | code | yes | deterministic (rule set, rule, dossier, discriminator) |
| `rule` | rule code | yes | e.g. `OVERDUE` (LEGAL.md) |
| `state` | `open`/`escalated`/`resolved` | yes | |
| `severity` | `info`/`warning`/`critical` | yes | |
| `dossier_code` | code | yes | also the Kafka key |
| `procedure_code` | string or null | | |
| `agency_code` | code | yes | the responsible agency |
| `responsible_role` | `officer`/`one_stop_chief`/`agency_head`/`parent_head` | yes | |
| `legal_basis` | string | yes | Vietnamese citation |
| `detected_at` | instant | yes | ISO 8601 with offset |
| `due_at` | instant or null | | |
| `overdue_working_hours` | number or null | | where it applies |
| `details` | object | | rule-specific facts; never personal data |
| `title`, `requirement` | string | | Vietnamese texts of the rule set |
| `confidence` | `high`/`medium`/`low` | | how sure the rule is of the facts |
| `ruleset` | string | | the rule set the dossier was received under |
| `revision` | integer ≥ 1 | yes | +1 at every change of the finding; readers keep the highest |
| `resolved_at` | instant | | only when `state` is `resolved` |
| `article`, `verified_against` | string | | the article that judged it; what its wording was checked against |
| `form_data` | object | | only for the rules of `FORM_DATA_RULES`: what the form attached to their alert prints (`applicant_name`, `reason`, `proposed_at`, `requested_at`); never an ID number, phone, e-mail or address |

The rows down to `details` are DESIGN.md §7 (`DOCUMENTED`); the others extend it. The reader
ignores fields it does not know (a writer deployed before its reader must not dead-letter every
message); the writer never sends one (tests/unit/test_findings_contract.py).
"""
from __future__ import annotations

import re
from datetime import datetime, timezone
from typing import Any, Mapping

STATES = ("open", "escalated", "resolved")
SEVERITIES = ("info", "warning", "critical")
ROLES = ("officer", "one_stop_chief", "agency_head", "parent_head")
CONFIDENCES = ("high", "medium", "low")

DOCUMENTED = ("finding_id", "rule", "state", "severity", "dossier_code", "procedure_code",
              "agency_code", "responsible_role", "legal_basis", "detected_at", "due_at",
              "overdue_working_hours", "details")
FIELDS = ("finding_id", "rule", "state", "severity", "dossier_code", "procedure_code", "agency_code",
          "responsible_role", "legal_basis", "title", "requirement", "confidence", "detected_at",
          "due_at", "overdue_working_hours", "details", "ruleset", "revision", "resolved_at",
          "article", "verified_against", "form_data")
REQUIRED = ("finding_id", "rule", "state", "severity", "dossier_code", "agency_code",
            "responsible_role", "legal_basis", "detected_at", "revision")

# The rules whose alert carries a pre-filled form (services/notify/documents.py), and that form (a
# rule set's `forms` key). Only their messages carry `form_data`: the applicant's name goes to the
# form the head prints, and nowhere else (docs/law.md).
FORM_DATA_RULES = {"DUE_SOON": "apology", "APOLOGY_MISSING": "apology",
                   "RECEIVED_INCOMPLETE": "supplement_request",
                   "ONLINE_RECEIPT_LATE": "supplement_request",
                   "STOP_NOTICE_MISSING": "stop_notice"}
FORM_DATA_TEXTS = {"applicant_name": 300, "reason": 1000}
FORM_DATA_INSTANTS = ("proposed_at", "requested_at")

_CODE = re.compile(r"^[A-Za-z0-9._/:-]{1,128}$")
_RULE = re.compile(r"^[A-Z][A-Z0-9_]{0,63}$")
_TEXT_MAX = 1000


class FindingError(ValueError):
    """A `sla.findings` message outside the contract: `field` names the first bad field."""

    def __init__(self, field: str, message: str):
        self.field = field
        super().__init__(f"{field}: {message}")


def message(fields: Mapping[str, Any]) -> dict:
    """The message for a finding: exactly the contract's fields found in `fields` (a finding's
    fields or its stored document), in the contract's order; bookkeeping is left out."""
    return {k: fields[k] for k in FIELDS if k in fields}


def _instant(value: Any, field: str) -> datetime | None:
    if value is None:
        return None
    if isinstance(value, datetime):     # a message built in process, not read from the wire
        t = value
    elif isinstance(value, str):
        try:
            t = datetime.fromisoformat(value)
        except ValueError:
            raise FindingError(field, "not an ISO 8601 instant") from None
    else:
        raise FindingError(field, "expected an ISO 8601 string with offset")
    if t.tzinfo is None or t.utcoffset() is None:
        raise FindingError(field, "naive instant: a UTC offset is required")
    try:
        return t.astimezone(timezone.utc)
    except OverflowError:
        raise FindingError(field, "instant out of range once in UTC") from None


def _one_of(value: Any, field: str, allowed: tuple) -> Any:
    if value not in allowed:
        raise FindingError(field, f"expected one of {', '.join(allowed)}")
    return value


def _text(value: Any, field: str) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str):
        raise FindingError(field, "expected a string")
    return value[:_TEXT_MAX] or None


def _form_data(value: Any, rule: str) -> dict | None:
    """`form_data` checked: known keys only (others dropped), texts cut to their length, instants
    as ISO 8601 UTC strings; dropped for a rule whose alert carries no form."""
    if value is None:
        return None
    if not isinstance(value, dict):
        raise FindingError("form_data", "expected an object")
    if rule not in FORM_DATA_RULES:
        return None                      # the name must not travel with any other finding
    out: dict[str, Any] = {}
    for name, size in FORM_DATA_TEXTS.items():
        v = value.get(name)
        if v is not None:
            if not isinstance(v, str):
                raise FindingError(f"form_data.{name}", "expected a string")
            if v[:size]:
                out[name] = v[:size]
    for name in FORM_DATA_INSTANTS:
        t = _instant(value.get(name), f"form_data.{name}")
        if t is not None:
            out[name] = t.isoformat()
    return out or None


def parse(value: Any) -> dict:
    """A message read from `sla.findings`, checked against the contract: the contract's fields
    only (unknown ones dropped), instants as aware UTC datetimes, absent optional fields None
    (`details` {}). Raises FindingError naming the field."""
    if not isinstance(value, dict):
        raise FindingError("$", "expected a JSON object")
    for name in REQUIRED:
        if value.get(name) is None:
            raise FindingError(name, "required")
    out: dict[str, Any] = {}
    for name in ("finding_id", "dossier_code", "agency_code"):
        v = value[name]
        if not isinstance(v, str) or not _CODE.match(v):
            raise FindingError(name, "expected a code of [A-Za-z0-9._/:-], 1-128 characters")
        out[name] = v
    rule = value["rule"]
    if not isinstance(rule, str) or not _RULE.match(rule):
        raise FindingError("rule", "expected a rule code such as OVERDUE")
    out["rule"] = rule
    out["state"] = _one_of(value["state"], "state", STATES)
    out["severity"] = _one_of(value["severity"], "severity", SEVERITIES)
    out["responsible_role"] = _one_of(value["responsible_role"], "responsible_role", ROLES)
    conf = value.get("confidence")
    out["confidence"] = None if conf is None else _one_of(conf, "confidence", CONFIDENCES)
    legal = _text(value["legal_basis"], "legal_basis")
    if legal is None:
        raise FindingError("legal_basis", "required, a citation")
    out["legal_basis"] = legal
    for name in ("procedure_code", "title", "requirement", "ruleset", "article", "verified_against"):
        out[name] = _text(value.get(name), name)
    for name in ("detected_at", "due_at", "resolved_at"):
        out[name] = _instant(value.get(name), name)
    if out["resolved_at"] is not None and out["state"] != "resolved":
        raise FindingError("resolved_at", "only with state resolved")
    owh = value.get("overdue_working_hours")
    if owh is not None and (isinstance(owh, bool) or not isinstance(owh, (int, float)) or owh < 0):
        raise FindingError("overdue_working_hours", "expected a non-negative number or null")
    out["overdue_working_hours"] = owh
    details = value.get("details")
    if details is not None and not isinstance(details, dict):
        raise FindingError("details", "expected an object")
    out["details"] = details or {}
    out["form_data"] = _form_data(value.get("form_data"), rule)
    rev = value["revision"]
    if isinstance(rev, bool) or not isinstance(rev, int) or rev < 1:
        raise FindingError("revision", "expected an integer of at least 1")
    out["revision"] = rev
    return {k: out[k] for k in FIELDS}
