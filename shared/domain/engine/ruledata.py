"""Rules as data: the rule files of `shared/data/rules/` and their binding by effective date.

A rule file (`nd61-107.yaml`, `nd118-2025.yaml`) lists the rules of its law with their Vietnamese
title, citation, article, confidence, severity, responsible role, what the law requires now, and
parameters; what the text was verified against; the clock model (what a supplement requested
during handling does to the time limit); and the forms of the circular in force (`{form:KEY}` in a
requirement is replaced by the form's name and number). A rule the law does not have is listed
under `absent`, so that a forgotten rule is still an error. `rulesets.yaml` binds rule sets to the
dates from which they apply. Both are validated strictly: unknown keys, unknown or missing rules
and malformed values are `RuleDataError`s that name the file, the rule and the field.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta
from pathlib import Path
from types import MappingProxyType
from typing import Any, Mapping

import yaml

from shared.domain import PACKAGE_DATA
from shared.domain.instants import TZ
from shared.contracts.findings import CONFIDENCES, ROLES, SEVERITIES
from shared.domain.limits import Limit, parse_limit



def vn_date(t: datetime) -> date:
    """The date of an aware instant in Vietnam: what binds a rule set (a receipt at 00:00 on
    1/7/2025 in Vietnam is 30/6 17:00 UTC and is judged by the rule set of 1/7)."""
    if t.tzinfo is None or t.utcoffset() is None:
        raise ValueError("a receipt instant must carry a UTC offset")
    return t.astimezone(TZ).date()

RULES_DIR = PACKAGE_DATA / "rules"

RULE_CODES = (
    "RECEIVED_INCOMPLETE", "RECEIVED_EXTRA", "SUPPLEMENT_REPEATED", "SUPPLEMENT_OUT_OF_LIST",
    "TRANSFER_LATE", "DUE_SOON", "APOLOGY_MISSING", "APOLOGY_LATE", "OVERDUE",
    "RESCHEDULED_TWICE", "RESULT_NOT_RETURNED", "BYPASSED_ONE_STOP", "CONSULTATION_OVERDUE",
    "SUPPLEMENT_STALLED", "BACKDATED_EVENT",
    # Decree 118/2025 (nd118-2025 only; `absent` from nd61-107)
    "ONLINE_RECEIPT_LATE", "SUPPLEMENT_REQUEST_LATE", "SUPPLEMENT_HELD_DATA", "STOP_NOTICE_MISSING",
)
# What a supplement requested during handling does to the time limit (the rule set's clock model):
# pause (time already spent counts, Decree 61 Art. 17), restart (counted again from zero once the
# complete dossier is received, Decree 118 Art. 19(5)), or procedure (the catalog's
# `supplement_policy` of the procedure, `pause` by default).
CLOCK_MODELS = ("pause", "restart", "procedure")
# Forms a rule set names (`forms.<key>`); `{form:<key>}` in a requirement text.
FORM_KEYS = ("receipt", "supplement_request", "refusal", "apology", "stop_notice", "control_slip",
             "tracking_book")
STAGES = ("reception", "handling")

# Parameters each rule accepts: name -> (kind, allowed units). kind: "duration" | "clock_time".
PARAM_SPECS: dict[str, dict[str, tuple[str, tuple[str, ...]]]] = {
    "TRANSFER_LATE": {"cutoff": ("clock_time", ()), "online_grace": ("duration", ("wh", "wd"))},
    "DUE_SOON": {"default_window": ("duration", ("wh", "wd"))},
    "APOLOGY_MISSING": {"notice": ("duration", ("wh", "wd"))},
    "APOLOGY_LATE": {"notice": ("duration", ("wh", "wd"))},
    "OVERDUE": {"escalate_after": ("duration", ("wh", "wd"))},
    "RESULT_NOT_RETURNED": {"grace": ("duration", ("wh", "wd"))},
    "SUPPLEMENT_STALLED": {"window": ("duration", ("cd", "wd", "wh")), "stages": ("stages", ())},
    "BACKDATED_EVENT": {"tolerance": ("duration", ("wh", "wd"))},
    "ONLINE_RECEIPT_LATE": {"within": ("duration", ("wh", "wd"))},
    "SUPPLEMENT_REQUEST_LATE": {"within": ("duration", ("wh", "wd"))},
}
OPTIONAL_PARAMS = {("SUPPLEMENT_STALLED", "stages")}
REQUIRED_PARAMS = {code: tuple(n for n in spec if (code, n) not in OPTIONAL_PARAMS)
                   for code, spec in PARAM_SPECS.items()}

_RULE_KEYS = {"code", "title", "citation", "article", "verified_against", "confidence", "severity",
              "responsible", "reception_responsible", "requirement", "params", "escalate_to", "note"}
_FILE_KEYS = {"id", "title", "source", "verified_against", "clock", "forms", "absent", "rules", "note"}
_CLOCK_KEYS = {"supplement_in_handling", "note"}
_FORMS_KEYS = {"circular", *FORM_KEYS}
_FORM_KEYS = {"number", "title"}
_PLACEHOLDER = re.compile(r"\{form:([a-z_]+)\}")
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
    article: str = ""               # the article(s) of the rule set's decree, e.g. "Khoản 5 Điều 19"
    verified_against: str = ""      # what the wording was checked against (file default if unset)
    reception_responsible: str | None = None   # role for a fault at reception (supplement rules)

    def duration(self, name: str) -> Limit:
        return self.params[name]


@dataclass(frozen=True)
class Form:
    key: str                        # receipt, supplement_request, apology, stop_notice, …
    number: str                     # "04"
    title: str                      # Vietnamese name of the form
    circular: str                   # "Thông tư 03/2025/TT-VPCP"

    @property
    def label(self) -> str:
        """'Phiếu … (Mẫu số 04 Thông tư 03/2025/TT-VPCP)'."""
        return f"{self.title} (Mẫu số {self.number} {self.circular})"


@dataclass(frozen=True)
class RuleSet:
    id: str
    title: str
    source: str
    rules: Mapping[str, RuleSpec]
    verified_against: str = ""
    supplement_in_handling: str = "procedure"          # the clock model (CLOCK_MODELS)
    forms: Mapping[str, Form] = field(default_factory=dict)
    absent: tuple[str, ...] = ()                        # rules this law does not have

    def __getitem__(self, code: str) -> RuleSpec:
        return self.rules[code]

    def form(self, key: str) -> Form | None:
        return self.forms.get(key)

    def supplement_policy(self, procedure_policy: str | None) -> str:
        """What a supplement during handling does under this rule set: pause or restart."""
        if self.supplement_in_handling == "procedure":
            return procedure_policy or "pause"
        return self.supplement_in_handling


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
    if kind == "stages":
        if not isinstance(value, list) or not value or any(v not in STAGES for v in value):
            raise RuleDataError(fname, code, f"params.{name}",
                                f"{value!r}: a non-empty list of {', '.join(STAGES)}")
        return tuple(dict.fromkeys(value))
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


def parse_rule(fname: str, raw: Any, index: int, forms: Mapping[str, Form] | None = None,
               verified_against: str = "") -> RuleSpec:
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
    reception = raw.get("reception_responsible")
    if reception is not None and reception not in ROLES:
        raise RuleDataError(fname, code, "reception_responsible",
                            f"{reception!r} must be one of {', '.join(ROLES)}")
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
    citation = _text(fname, code, "citation", raw["citation"])
    return RuleSpec(code=code, title=_text(fname, code, "title", raw["title"]), citation=citation,
                    confidence=raw["confidence"], severity=raw["severity"],
                    responsible=raw["responsible"],
                    requirement=_with_forms(fname, code, _text(fname, code, "requirement", raw["requirement"]),
                                            forms or {}),
                    params=MappingProxyType(params), escalate_to=escalate_to,
                    article=_text(fname, code, "article", raw["article"]) if "article" in raw else citation,
                    verified_against=(_text(fname, code, "verified_against", raw["verified_against"])
                                      if "verified_against" in raw else verified_against),
                    reception_responsible=reception)


def _with_forms(fname: str, code: str, text: str, forms: Mapping[str, Form]) -> str:
    """`{form:apology}` -> the rule set's form label; an unknown or undeclared form is an error."""
    def sub(m: re.Match) -> str:
        key = m.group(1)
        if key not in forms:
            declared = ", ".join(forms) or "none"
            raise RuleDataError(fname, code, "requirement",
                                f"{{form:{key}}}: the file declares no such form (declared: {declared})")
        return forms[key].label
    return _PLACEHOLDER.sub(sub, text)


def _parse_forms(fname: str, raw: Any) -> dict[str, Form]:
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise RuleDataError(fname, None, "forms", "must be a mapping with circular and the forms")
    unknown = sorted(set(raw) - _FORMS_KEYS)
    if unknown:
        raise RuleDataError(fname, None, f"forms.{unknown[0]}",
                            f"unknown key (allowed: {', '.join(sorted(_FORMS_KEYS))})")
    circular = _text(fname, None, "forms.circular", raw.get("circular"))
    out: dict[str, Form] = {}
    for key in FORM_KEYS:
        item = raw.get(key)
        if item is None:
            continue
        where = f"forms.{key}"
        if not isinstance(item, dict) or set(item) - _FORM_KEYS:
            raise RuleDataError(fname, None, where, "must be a mapping {number, title}")
        number = str(item.get("number") or "")
        if not re.fullmatch(r"\d{2}", number):
            raise RuleDataError(fname, None, f"{where}.number", f"{number!r}: two digits, quoted, e.g. \"04\"")
        out[key] = Form(key, number, _text(fname, None, f"{where}.title", item.get("title")), circular)
    return out


def _parse_clock(fname: str, raw: Any) -> str:
    if raw is None:
        return "procedure"
    if not isinstance(raw, dict):
        raise RuleDataError(fname, None, "clock", "must be a mapping {supplement_in_handling}")
    unknown = sorted(set(raw) - _CLOCK_KEYS)
    if unknown:
        raise RuleDataError(fname, None, f"clock.{unknown[0]}",
                            f"unknown key (allowed: {', '.join(sorted(_CLOCK_KEYS))})")
    model = raw.get("supplement_in_handling")
    if model not in CLOCK_MODELS:
        raise RuleDataError(fname, None, "clock.supplement_in_handling",
                            f"{model!r} must be one of {', '.join(CLOCK_MODELS)}")
    return model


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
    verified = (_text(fname, None, "verified_against", raw["verified_against"])
                if "verified_against" in raw else "")
    forms = _parse_forms(fname, raw.get("forms"))
    clock = _parse_clock(fname, raw.get("clock"))
    absent_raw = raw.get("absent") or []
    if not isinstance(absent_raw, list):
        raise RuleDataError(fname, None, "absent", "must be a list of rule codes")
    for code in absent_raw:
        if code not in RULE_CODES:
            raise RuleDataError(fname, None, "absent", f"{code!r} is not a known rule")
    absent = tuple(dict.fromkeys(absent_raw))
    rules: dict[str, RuleSpec] = {}
    for i, item in enumerate(rules_raw):
        spec = parse_rule(fname, item, i, forms, verified)
        if spec.code in rules:
            raise RuleDataError(fname, spec.code, "code", "defined twice")
        if spec.code in absent:
            raise RuleDataError(fname, spec.code, "code", "listed under `absent` and defined")
        rules[spec.code] = spec
    missing = [c for c in RULE_CODES if c not in rules and c not in absent]
    if missing:
        raise RuleDataError(fname, None, "rules",
                            f"missing rules: {', '.join(missing)} (list a rule this law does not have "
                            f"under `absent`)")
    return RuleSet(id=rid, title=_text(fname, None, "title", raw.get("title")),
                   source=str(raw.get("source") or ""), rules=MappingProxyType(rules),
                   verified_against=verified, supplement_in_handling=clock,
                   forms=MappingProxyType(forms), absent=absent)


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
        return self._sets[self.binding_for(on)[1]]

    def binding_for(self, on: date) -> tuple[date | None, str]:
        """(effective_from, rule set id) of the binding that applies on `on`; (None, default)
        before every binding."""
        chosen: tuple[date | None, str] = (None, self.default)
        for start, rid in self._bindings:
            if start <= on:
                chosen = (start, rid)
        return chosen

    def for_instant(self, t: datetime) -> RuleSet:
        """The rule set of a receipt instant: its date in Vietnam (Asia/Ho_Chi_Minh)."""
        return self.for_date(vn_date(t))

    def why(self, t: datetime) -> dict:
        """Which rule set judges a dossier received at `t`, and why (data + Vietnamese text)."""
        local = t.astimezone(TZ)
        start, rid = self.binding_for(local.date())
        rs = self._sets[rid]
        later = [(d, r) for d, r in self._bindings if d > local.date()]
        if start is None:
            basis = (f"trước mọi mốc áp dụng trong rulesets.yaml nên áp dụng bộ quy tắc mặc định "
                     f"{rid}")
        else:
            basis = f"từ ngày {start:%d/%m/%Y} áp dụng bộ quy tắc {rid}"
        text = (f"Hồ sơ tiếp nhận lúc {local:%H:%M:%S ngày %d/%m/%Y} (giờ Việt Nam); {basis} "
                f"({rs.title}). Hồ sơ luôn được đánh giá theo bộ quy tắc có hiệu lực tại thời điểm "
                f"tiếp nhận, kể cả khi tính lại.")
        return {"ruleset": rid, "title": rs.title, "received_local_date": local.date().isoformat(),
                "bound_from": start.isoformat() if start else None,
                "next_binding": ({"ruleset": later[0][1], "from": later[0][0].isoformat()}
                                 if later else None),
                "verified_against": rs.verified_against,
                "supplement_in_handling": rs.supplement_in_handling, "text": text}

    @property
    def bindings(self) -> list[tuple[date, str]]:
        return list(self._bindings)

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
