"""Rules as data: the rule files of `shared/data/rules/` and their binding by effective date.

A rule file (`nd61-107.yaml`) lists every rule of LEGAL.md with its Vietnamese title, citation,
confidence, severity, responsible role, what the law requires now, and its parameters.
`rulesets.yaml` binds rule sets to the dates from which they apply. Both are validated strictly:
unknown keys, unknown or missing rules and malformed values are `RuleDataError`s that name the
file, the rule and the field.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta
from pathlib import Path
from types import MappingProxyType
from typing import Any, Mapping

import yaml

from shared.findings import CONFIDENCES, ROLES, SEVERITIES
from shared.limits import Limit, parse_limit

RULES_DIR = Path(__file__).resolve().parent.parent / "data" / "rules"

RULE_CODES = (
    "RECEIVED_INCOMPLETE", "RECEIVED_EXTRA", "SUPPLEMENT_REPEATED", "SUPPLEMENT_OUT_OF_LIST",
    "TRANSFER_LATE", "DUE_SOON", "APOLOGY_MISSING", "APOLOGY_LATE", "OVERDUE",
    "RESCHEDULED_TWICE", "RESULT_NOT_RETURNED", "BYPASSED_ONE_STOP", "CONSULTATION_OVERDUE",
    "SUPPLEMENT_STALLED", "BACKDATED_EVENT",
)

# Parameters each rule accepts: name -> (kind, allowed units). kind: "duration" | "clock_time".
PARAM_SPECS: dict[str, dict[str, tuple[str, tuple[str, ...]]]] = {
    "TRANSFER_LATE": {"cutoff": ("clock_time", ()), "online_grace": ("duration", ("wh", "wd"))},
    "DUE_SOON": {"default_window": ("duration", ("wh", "wd"))},
    "APOLOGY_MISSING": {"notice": ("duration", ("wh", "wd"))},
    "APOLOGY_LATE": {"notice": ("duration", ("wh", "wd"))},
    "OVERDUE": {"escalate_after": ("duration", ("wh", "wd"))},
    "RESULT_NOT_RETURNED": {"grace": ("duration", ("wh", "wd"))},
    "SUPPLEMENT_STALLED": {"window": ("duration", ("cd", "wd", "wh"))},
    "BACKDATED_EVENT": {"tolerance": ("duration", ("wh", "wd"))},
}
REQUIRED_PARAMS = {code: tuple(spec) for code, spec in PARAM_SPECS.items()}

_RULE_KEYS = {"code", "title", "citation", "confidence", "severity", "responsible", "requirement",
              "params", "escalate_to", "note"}
_FILE_KEYS = {"id", "title", "source", "rules", "note"}
_BINDING_KEYS = {"id", "file", "effective_from", "note"}
_RULESETS_KEYS = {"default", "bindings"}
_ID = re.compile(r"^[a-z0-9][a-z0-9._-]{0,63}$")
_CLOCK = re.compile(r"^([01]\d|2[0-3]):([0-5]\d)$")


class RuleDataError(ValueError):
    """A rule file or the binding file is invalid: says which file, rule and field."""

    def __init__(self, file: str, rule: str | None, field_: str | None, message: str):
        self.file, self.rule, self.field, self.message = file, rule, field_, message
        where = file + (f", rule {rule}" if rule else "") + (f", field {field_}" if field_ else "")
        super().__init__(f"{where}: {message}")


def working_hours(limit: Limit) -> timedelta:
    """A working-time duration (`Nwh`, `Nwd` = N x 8 working hours)."""
    if limit.unit == "wh":
        return timedelta(hours=limit.value)
    if limit.unit == "wd":
        return timedelta(hours=8 * limit.value)
    raise ValueError(f"{limit} is not a working-time duration")


@dataclass(frozen=True)
class RuleSpec:
    code: str
    title: str                      # Vietnamese, as in LEGAL.md
    citation: str                   # Vietnamese legal basis
    confidence: str
    severity: str
    responsible: str                # role
    requirement: str                # what the law requires now (Vietnamese, used in alerts)
    params: Mapping[str, Any] = field(default_factory=dict)   # Limit or datetime.time values
    escalate_to: str | None = None

    def duration(self, name: str) -> Limit:
        return self.params[name]


@dataclass(frozen=True)
class RuleSet:
    id: str
    title: str
    source: str
    rules: Mapping[str, RuleSpec]

    def __getitem__(self, code: str) -> RuleSpec:
        return self.rules[code]


def _read_yaml(path: Path) -> Any:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise RuleDataError(str(path), None, None, f"cannot read the file ({exc.strerror})") from None
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise RuleDataError(str(path), None, None, f"not valid YAML: {exc}") from None


def _text(fname, code, key, value) -> str:
    if not isinstance(value, str) or not value.strip():
        raise RuleDataError(fname, code, key, "must be a non-empty text")
    return value.strip()


def _param(fname: str, code: str, name: str, value: Any) -> Any:
    kind, units = PARAM_SPECS[code][name]
    if kind == "clock_time":
        if isinstance(value, int) and not isinstance(value, bool):   # YAML 1.1 reads 15:00 as 900
            value = f"{value // 60:02d}:{value % 60:02d}"
        m = _CLOCK.match(str(value))
        if not m:
            raise RuleDataError(fname, code, f"params.{name}", f"{value!r} is not a time of day HH:MM")
        return time(int(m.group(1)), int(m.group(2)))
    try:
        limit = parse_limit(str(value))
    except ValueError as exc:
        raise RuleDataError(fname, code, f"params.{name}", str(exc)) from None
    if limit.unit not in units:
        raise RuleDataError(fname, code, f"params.{name}",
                            f"{value!r}: unit must be one of {', '.join(units)}")
    return limit


def parse_rule(fname: str, raw: Any, index: int) -> RuleSpec:
    if not isinstance(raw, dict):
        raise RuleDataError(fname, f"#{index + 1}", None, "a rule must be a mapping")
    code = raw.get("code")
    if code not in RULE_CODES:
        raise RuleDataError(fname, f"#{index + 1}", "code",
                            f"{code!r} is not a known rule (known: {', '.join(RULE_CODES)})")
    unknown = sorted(set(raw) - _RULE_KEYS)
    if unknown:
        raise RuleDataError(fname, code, unknown[0], f"unknown key (allowed: {', '.join(sorted(_RULE_KEYS))})")
    for key in ("title", "citation", "confidence", "severity", "responsible", "requirement"):
        if key not in raw:
            raise RuleDataError(fname, code, key, "missing")
    for key, allowed in (("confidence", CONFIDENCES), ("severity", SEVERITIES), ("responsible", ROLES)):
        if raw[key] not in allowed:
            raise RuleDataError(fname, code, key, f"{raw[key]!r} must be one of {', '.join(allowed)}")
    escalate_to = raw.get("escalate_to")
    if escalate_to is not None and escalate_to not in ROLES:
        raise RuleDataError(fname, code, "escalate_to", f"{escalate_to!r} must be one of {', '.join(ROLES)}")
    params_raw = raw.get("params") or {}
    if not isinstance(params_raw, dict):
        raise RuleDataError(fname, code, "params", "must be a mapping")
    spec = PARAM_SPECS.get(code, {})
    params = {}
    for name, value in params_raw.items():
        if name not in spec:
            allowed = ", ".join(spec) or "none"
            raise RuleDataError(fname, code, f"params.{name}", f"unknown parameter (allowed: {allowed})")
        params[name] = _param(fname, code, name, value)
    for name in REQUIRED_PARAMS.get(code, ()):
        if name not in params:
            raise RuleDataError(fname, code, f"params.{name}", "missing")
    if code == "OVERDUE" and escalate_to is None:
        raise RuleDataError(fname, code, "escalate_to", "missing (who receives the escalation)")
    return RuleSpec(code=code, title=_text(fname, code, "title", raw["title"]),
                    citation=_text(fname, code, "citation", raw["citation"]),
                    confidence=raw["confidence"], severity=raw["severity"],
                    responsible=raw["responsible"],
                    requirement=_text(fname, code, "requirement", raw["requirement"]),
                    params=MappingProxyType(params), escalate_to=escalate_to)


def load_ruleset(path: str | Path) -> RuleSet:
    """Load and validate one rule file; every rule of LEGAL.md must be there exactly once."""
    path = Path(path)
    fname = str(path)
    raw = _read_yaml(path)
    if not isinstance(raw, dict):
        raise RuleDataError(fname, None, None, "the file must be a mapping with id, title, rules")
    unknown = sorted(set(raw) - _FILE_KEYS)
    if unknown:
        raise RuleDataError(fname, None, unknown[0], f"unknown key (allowed: {', '.join(sorted(_FILE_KEYS))})")
    rid = raw.get("id")
    if not isinstance(rid, str) or not _ID.match(rid):
        raise RuleDataError(fname, None, "id", "missing or not a lowercase identifier")
    rules_raw = raw.get("rules")
    if not isinstance(rules_raw, list):
        raise RuleDataError(fname, None, "rules", "missing or not a list")
    rules: dict[str, RuleSpec] = {}
    for i, item in enumerate(rules_raw):
        spec = parse_rule(fname, item, i)
        if spec.code in rules:
            raise RuleDataError(fname, spec.code, "code", "defined twice")
        rules[spec.code] = spec
    missing = [c for c in RULE_CODES if c not in rules]
    if missing:
        raise RuleDataError(fname, None, "rules", f"missing rules: {', '.join(missing)}")
    return RuleSet(id=rid, title=_text(fname, None, "title", raw.get("title")),
                   source=str(raw.get("source") or ""), rules=MappingProxyType(rules))


class RuleSets:
    """Rule sets bound by effective date. `for_date(d)` gives the set a dossier received on `d`
    (Vietnam's date) is judged by; `get(id)` the set a stored dossier recorded."""

    def __init__(self, sets: dict[str, RuleSet], bindings: list[tuple[date, str]], default: str):
        if default not in sets:
            raise ValueError(f"default rule set {default!r} is not loaded")
        self._sets = dict(sets)
        self._bindings = sorted(bindings)
        self.default = default

    def get(self, ruleset_id: str) -> RuleSet:
        try:
            return self._sets[ruleset_id]
        except KeyError:
            raise KeyError(f"unknown rule set {ruleset_id!r} (loaded: {', '.join(sorted(self._sets))})") from None

    def for_date(self, on: date) -> RuleSet:
        if isinstance(on, datetime):
            raise TypeError("for_date takes a date in Vietnam's time zone, not an instant")
        chosen = self.default
        for start, rid in self._bindings:
            if start <= on:
                chosen = rid
        return self._sets[chosen]

    @property
    def ids(self) -> list[str]:
        return sorted(self._sets)


def load_rulesets(path: str | Path | None = None) -> RuleSets:
    """Load `rulesets.yaml` (default: the shipped one) and every rule file it binds."""
    path = Path(path) if path is not None else RULES_DIR / "rulesets.yaml"
    fname = str(path)
    raw = _read_yaml(path)
    if not isinstance(raw, dict):
        raise RuleDataError(fname, None, None, "the file must be a mapping with default and bindings")
    unknown = sorted(set(raw) - _RULESETS_KEYS)
    if unknown:
        raise RuleDataError(fname, None, unknown[0], f"unknown key (allowed: {', '.join(sorted(_RULESETS_KEYS))})")
    bindings_raw = raw.get("bindings")
    if not isinstance(bindings_raw, list) or not bindings_raw:
        raise RuleDataError(fname, None, "bindings", "missing or empty list")
    sets: dict[str, RuleSet] = {}
    bindings: list[tuple[date, str]] = []
    seen_dates: set[date] = set()
    for i, b in enumerate(bindings_raw):
        where = f"binding #{i + 1}"
        if not isinstance(b, dict):
            raise RuleDataError(fname, where, None, "must be a mapping with id, file, effective_from")
        unknown = sorted(set(b) - _BINDING_KEYS)
        if unknown:
            raise RuleDataError(fname, where, unknown[0], f"unknown key (allowed: {', '.join(sorted(_BINDING_KEYS))})")
        for key in ("id", "file", "effective_from"):
            if key not in b:
                raise RuleDataError(fname, where, key, "missing")
        eff = b["effective_from"]
        if isinstance(eff, str):
            try:
                eff = date.fromisoformat(eff)
            except ValueError:
                raise RuleDataError(fname, where, "effective_from", f"{eff!r} is not a date YYYY-MM-DD") from None
        if not isinstance(eff, date) or isinstance(eff, datetime):
            raise RuleDataError(fname, where, "effective_from", "must be a date YYYY-MM-DD")
        if eff in seen_dates:
            raise RuleDataError(fname, where, "effective_from", f"two bindings start on {eff}")
        seen_dates.add(eff)
        rule_path = Path(b["file"])
        if not rule_path.is_absolute():
            rule_path = path.parent / rule_path
        rs = sets.get(b["id"]) or load_ruleset(rule_path)
        if rs.id != b["id"]:
            raise RuleDataError(fname, where, "id", f"{b['id']!r} but {rule_path.name} declares id {rs.id!r}")
        sets[rs.id] = rs
        bindings.append((eff, rs.id))
    default = raw.get("default")
    if default not in sets:
        raise RuleDataError(fname, None, "default", f"{default!r} is not one of the bound rule sets")
    return RuleSets(sets, bindings, default)


_DEFAULT: RuleSets | None = None


def default_rulesets() -> RuleSets:
    """The shipped rule sets (loaded once; immutable)."""
    global _DEFAULT
    if _DEFAULT is None:
        _DEFAULT = load_rulesets()
    return _DEFAULT
