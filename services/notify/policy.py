"""The routing policy (a YAML/JSON file ops edit): who receives which finding, when and how.

Pure: loading validates the whole file and raises `PolicyError` naming the file, the path of the
offending key and what is wrong; unknown keys are errors. See `shared/data/routing.yaml` for the
shipped default (it follows LEGAL.md's responsible roles) and the format.
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass, replace
from datetime import time
from pathlib import Path
from typing import Any

import yaml

from shared.domain import PACKAGE_DATA
from shared.contracts.findings import SEVERITIES

# `responsible` = the role the finding names (officer/agency_head → head, one_stop_chief,
# parent_head); `head` = the acting head instead of the head while one is set.
ROLES = ("responsible", "head", "deputies", "one_stop_chief", "parent_head")
CHANNELS = ("email", "sms")
MODES = ("immediate", "digest")
RULE_CODES = (
    "RECEIVED_INCOMPLETE", "RECEIVED_EXTRA", "SUPPLEMENT_REPEATED", "SUPPLEMENT_OUT_OF_LIST",
    "TRANSFER_LATE", "DUE_SOON", "APOLOGY_MISSING", "APOLOGY_LATE", "OVERDUE",
    "RESCHEDULED_TWICE", "RESULT_NOT_RETURNED", "BYPASSED_ONE_STOP", "CONSULTATION_OVERDUE",
    "SUPPLEMENT_STALLED", "BACKDATED_EVENT",
    "ONLINE_RECEIPT_LATE", "SUPPLEMENT_REQUEST_LATE", "SUPPLEMENT_HELD_DATA",   # nd118-2025
    "STOP_NOTICE_MISSING",
)
DEFAULT_POLICY_FILE = PACKAGE_DATA / "routing.yaml"
_NAME = re.compile(r"^[a-z0-9][a-z0-9_-]{0,63}$")
_ENV = re.compile(r"^[A-Z][A-Z0-9_]{0,127}$")


class PolicyError(ValueError):
    """An invalid routing policy; `path` is the dotted key path, e.g. `rules.OVERDUE.critical.roles`."""

    def __init__(self, file: str, path: str, message: str):
        self.file, self.path, self.message = file, path, message
        super().__init__(f"{file}: {path or '<top>'}: {message}")


@dataclass(frozen=True)
class Route:
    """What happens to findings of one rule and severity."""
    roles: tuple[str, ...] = ("responsible",)
    channels: tuple[str, ...] = ("email",)
    mode: str = "immediate"                      # or "digest": only listed in the daily digest
    any_hour: bool = False                       # deliver outside the recipient's working hours
    escalate_after_wh: float | None = None       # working hours unacknowledged → parent head
    max_level: int = 1                           # how many ancestors up escalation may go
    repeat_every_wh: float | None = None         # re-send while open and unacknowledged
    max_repeats: int = 3
    resolved_notice: bool = True


@dataclass(frozen=True)
class Webhook:
    """A JSON webhook receiving every alert for agencies in the subtree of `agency`."""
    name: str
    url: str
    secret_env: str                              # the HMAC secret is read from this variable
    agency: str | None = None                    # None: all agencies
    rules: tuple[str, ...] = ()                  # empty: all rules
    min_severity: str = "info"


@dataclass(frozen=True)
class Policy:
    defaults: dict[str, Route]                   # severity -> route
    rules: dict[str, dict[str, Route]]           # rule -> severity -> route
    webhooks: tuple[Webhook, ...] = ()
    sms_url_template: str | None = None          # e.g. http://gw/send?to={phone}&text={text}
    sms_method: str = "POST"
    digest_time: time = time(7, 30)              # local (Asia/Ho_Chi_Minh) time on working days
    digest_roles: tuple[str, ...] = ("head",)
    digest_catch_up_hours: float = 2.0           # a worker down at digest time still sends it this late
    retry_attempts: int = 5
    retry_base_seconds: float = 2.0
    retry_max_seconds: float = 600.0
    ack_ttl_hours: float = 168.0
    source: str = "<memory>"

    def route(self, rule: str, severity: str) -> Route:
        """The route for a rule and severity: the rule's own entry, else the severity default."""
        per_rule = self.rules.get(rule, {})
        return per_rule.get(severity) or self.defaults[severity]


def _check_keys(file, path, obj, allowed):
    if not isinstance(obj, dict):
        raise PolicyError(file, path, f"expected a mapping, got {type(obj).__name__}")
    unknown = sorted(set(obj) - set(allowed))
    if unknown:
        raise PolicyError(file, f"{path}.{unknown[0]}".lstrip("."),
                          f"unknown key (allowed: {', '.join(sorted(allowed))})")


def _hours(file, path, value, *, allow_none=True) -> float | None:
    """Working hours: a number, or `Nwh` / `Nwd` (8 working hours a day)."""
    if value is None and allow_none:
        return None
    if isinstance(value, bool):
        raise PolicyError(file, path, "expected working hours such as 16 or '16wh' or '2wd'")
    if isinstance(value, (int, float)):
        hours = float(value)
    else:
        m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*(wh|wd)\s*", str(value))
        if not m:
            raise PolicyError(file, path, f"invalid duration {value!r}: expected e.g. 16, '16wh' or '2wd'")
        hours = float(m.group(1)) * (8 if m.group(2) == "wd" else 1)
    if hours <= 0:
        raise PolicyError(file, path, "must be positive")
    return hours


def _list(file, path, value, allowed, what) -> tuple[str, ...]:
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not value:
        raise PolicyError(file, path, f"expected a non-empty list of {what}")
    for i, v in enumerate(value):
        if v not in allowed:
            raise PolicyError(file, f"{path}[{i}]", f"unknown {what[:-1]} {v!r} (allowed: {', '.join(allowed)})")
    return tuple(dict.fromkeys(value))


def _bool(file, path, value) -> bool:
    if not isinstance(value, bool):
        raise PolicyError(file, path, "expected true or false")
    return value


def _int(file, path, value, lo, hi) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
        raise PolicyError(file, path, f"expected an integer from {lo} to {hi}")
    return value


_ROUTE_KEYS = ("roles", "channels", "mode", "any_hour", "escalate_after", "max_level",
               "repeat_every", "max_repeats", "resolved_notice")


def _route(file, path, obj, base: Route) -> Route:
    _check_keys(file, path, obj, _ROUTE_KEYS)
    r = base
    if "roles" in obj:
        r = replace(r, roles=_list(file, f"{path}.roles", obj["roles"], ROLES, "roles"))
    if "channels" in obj:
        r = replace(r, channels=_list(file, f"{path}.channels", obj["channels"], CHANNELS, "channels"))
    if "mode" in obj:
        if obj["mode"] not in MODES:
            raise PolicyError(file, f"{path}.mode", f"expected one of {', '.join(MODES)}")
        r = replace(r, mode=obj["mode"])
    if "any_hour" in obj:
        r = replace(r, any_hour=_bool(file, f"{path}.any_hour", obj["any_hour"]))
    if "escalate_after" in obj:
        r = replace(r, escalate_after_wh=_hours(file, f"{path}.escalate_after", obj["escalate_after"]))
    if "max_level" in obj:
        r = replace(r, max_level=_int(file, f"{path}.max_level", obj["max_level"], 0, 10))
    if "repeat_every" in obj:
        r = replace(r, repeat_every_wh=_hours(file, f"{path}.repeat_every", obj["repeat_every"]))
    if "max_repeats" in obj:
        r = replace(r, max_repeats=_int(file, f"{path}.max_repeats", obj["max_repeats"], 0, 100))
    if "resolved_notice" in obj:
        r = replace(r, resolved_notice=_bool(file, f"{path}.resolved_notice", obj["resolved_notice"]))
    return r


def parse_policy(data: Any, file: str = "<memory>") -> Policy:
    """Validate a loaded policy document and build the `Policy`; `PolicyError` on the first problem."""
    top = ("version", "critical_any_hour", "defaults", "rules", "webhooks", "sms", "digest",
           "retry", "ack_ttl_hours")
    _check_keys(file, "", data, top)
    if data.get("version", 1) != 1:
        raise PolicyError(file, "version", "only version 1 is supported")
    critical_any_hour = _bool(file, "critical_any_hour", data.get("critical_any_hour", True))
    defaults_doc = data.get("defaults") or {}
    _check_keys(file, "defaults", defaults_doc, SEVERITIES)
    defaults = {}
    for sev in SEVERITIES:
        base = Route(any_hour=(sev == "critical" and critical_any_hour))
        defaults[sev] = _route(file, f"defaults.{sev}", defaults_doc.get(sev) or {}, base)
    rules: dict[str, dict[str, Route]] = {}
    rules_doc = data.get("rules") or {}
    _check_keys(file, "rules", rules_doc, RULE_CODES)
    for code, per_sev in rules_doc.items():
        _check_keys(file, f"rules.{code}", per_sev or {}, SEVERITIES)
        rules[code] = {sev: _route(file, f"rules.{code}.{sev}", entry or {}, defaults[sev])
                       for sev, entry in (per_sev or {}).items()}
    webhooks = []
    names = set()
    wh_doc = data.get("webhooks") or []
    if not isinstance(wh_doc, list):
        raise PolicyError(file, "webhooks", "expected a list")
    for i, w in enumerate(wh_doc):
        p = f"webhooks[{i}]"
        _check_keys(file, p, w, ("name", "url", "secret_env", "agency", "rules", "min_severity"))
        for req in ("name", "url", "secret_env"):
            if req not in w:
                raise PolicyError(file, f"{p}.{req}", "required")
        if not isinstance(w["name"], str) or not _NAME.match(w["name"]) or w["name"] in names:
            raise PolicyError(file, f"{p}.name", "expected a unique name of [a-z0-9_-]")
        names.add(w["name"])
        if not isinstance(w["url"], str) or not re.match(r"^https?://", w["url"]):
            raise PolicyError(file, f"{p}.url", "expected an http:// or https:// URL")
        if not isinstance(w["secret_env"], str) or not _ENV.match(w["secret_env"]):
            raise PolicyError(file, f"{p}.secret_env", "expected an environment variable name")
        if w.get("min_severity", "info") not in SEVERITIES:
            raise PolicyError(file, f"{p}.min_severity", f"expected one of {', '.join(SEVERITIES)}")
        rules_list = _list(file, f"{p}.rules", w["rules"], RULE_CODES, "rules") if w.get("rules") else ()
        webhooks.append(Webhook(w["name"], w["url"], w["secret_env"], w.get("agency"), rules_list,
                                w.get("min_severity", "info")))
    kwargs: dict[str, Any] = {}
    sms = data.get("sms") or {}
    _check_keys(file, "sms", sms, ("url_template", "method"))
    if "url_template" in sms:
        tpl = sms["url_template"]
        if not isinstance(tpl, str) or not re.match(r"^https?://", tpl):
            raise PolicyError(file, "sms.url_template", "expected an http(s) URL template")
        try:
            tpl.format(phone="x", text="y")
        except (KeyError, IndexError, ValueError) as exc:
            raise PolicyError(file, "sms.url_template", f"only {{phone}} and {{text}} may be used ({exc})")
        kwargs["sms_url_template"] = tpl
    if "method" in sms:
        if sms["method"] not in ("GET", "POST"):
            raise PolicyError(file, "sms.method", "expected GET or POST")
        kwargs["sms_method"] = sms["method"]
    digest = data.get("digest") or {}
    _check_keys(file, "digest", digest, ("time", "roles", "catch_up_hours"))
    if "time" in digest:
        m = re.fullmatch(r"([01]\d|2[0-3]):([0-5]\d)", str(digest["time"]))
        if not m:
            raise PolicyError(file, "digest.time", "expected HH:MM (local time, 24 h)")
        kwargs["digest_time"] = time(int(m.group(1)), int(m.group(2)))
    if "roles" in digest:
        kwargs["digest_roles"] = _list(file, "digest.roles", digest["roles"],
                                       ("head", "deputies", "one_stop_chief"), "roles")
    if "catch_up_hours" in digest:
        v = digest["catch_up_hours"]
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not 0 < v <= 24:
            raise PolicyError(file, "digest.catch_up_hours", "expected a number of hours from 0 to 24")
        kwargs["digest_catch_up_hours"] = float(v)
    retry = data.get("retry") or {}
    _check_keys(file, "retry", retry, ("attempts", "base_seconds", "max_seconds"))
    if "attempts" in retry:
        kwargs["retry_attempts"] = _int(file, "retry.attempts", retry["attempts"], 1, 50)
    for key in ("base_seconds", "max_seconds"):
        if key in retry:
            v = retry[key]
            if isinstance(v, bool) or not isinstance(v, (int, float)) or v <= 0:
                raise PolicyError(file, f"retry.{key}", "expected a positive number of seconds")
            kwargs[f"retry_{key}"] = float(v)
    if "ack_ttl_hours" in data:
        v = data["ack_ttl_hours"]
        if isinstance(v, bool) or not isinstance(v, (int, float)) or v <= 0:
            raise PolicyError(file, "ack_ttl_hours", "expected a positive number of hours")
        kwargs["ack_ttl_hours"] = float(v)
    return Policy(defaults=defaults, rules=rules, webhooks=tuple(webhooks), source=file, **kwargs)


def load_policy(path: str | Path | None = None) -> Policy:
    """Load and validate a policy file (YAML or JSON); the shipped default when `path` is None."""
    path = Path(path) if path else DEFAULT_POLICY_FILE
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise PolicyError(str(path), "", f"cannot read: {exc.strerror or exc}") from None
    try:
        data = json.loads(text) if path.suffix == ".json" else yaml.safe_load(text)
    except (ValueError, yaml.YAMLError) as exc:
        raise PolicyError(str(path), "", f"not valid {'JSON' if path.suffix == '.json' else 'YAML'}: {exc}") from None
    return parse_policy(data if data is not None else {}, str(path))
