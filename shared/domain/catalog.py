"""Procedure catalog (thủ tục hành chính): file format, loader and queries.

The format is documented in docs/catalog.md. A catalog file (YAML or JSON) is a list of
procedures; a procedure code may appear several times, once per version, each with its own
`effective_from` / `effective_to` (inclusive) dates, which must not overlap.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import date, datetime
from pathlib import Path
from typing import Iterable

from shared.domain import PACKAGE_DATA
from shared.domain.codes import COMPONENT_ID, PROCEDURE_CODE
from shared.domain.datafile import (Collector, DataFileError, check_keys, content_hash, load_file,
                                    open_entry, text)
from shared.domain.instants import TZ, ensure_utc
from shared.domain.limits import Limit, parse_limit

SUPPLEMENT_POLICIES = ("pause", "restart")
DEFAULT_WARNING = ("wh", 8)          # LEGAL.md DUE_SOON: 8 working hours unless the procedure says otherwise
_WARNING = re.compile(r"^(?:(\d+)wh|(\d+)%)$")
_DATE = re.compile(r"^(\d{4})-(\d\d)-(\d\d)$")     # YYYY-MM-DD, what YAML reads as a date
_INSTANT = re.compile(r"^\d{4}-\d{1,2}-\d{1,2}(?:[Tt]|[ \t]+)\d{1,2}:")
_STEP_ROLE = re.compile(r"^[a-z0-9][a-z0-9._-]{0,63}$")

_PROCEDURE_KEYS = {
    "code": True, "name": True, "field": True, "limit": True, "components": True,
    "level": False, "supplement_policy": False, "warning": False, "steps": False,
    "effective_from": False, "effective_to": False, "source": False, "sample": False,
    "note": False,
}
_COMPONENT_KEYS = {"id": True, "name": True, "required": False, "any_of": False, "note": False}
_ALTERNATIVE_KEYS = {"id": True, "name": True}
_STEP_KEYS = {"role": True, "name": True, "share": True}


# ----------------------------------------------------------------------------- errors

class CatalogError(DataFileError):
    """A catalog file is invalid (see DataFileError)."""


# ----------------------------------------------------------------------------- model

@dataclass(frozen=True)
class Component:
    """A paper of the dossier. It is satisfied by its own id or by any id in `alternatives`."""
    id: str
    name: str
    required: bool = True
    alternatives: tuple[str, ...] = ()
    alternative_names: tuple[str, ...] = ()   # parallel to `alternatives`
    note: str | None = None

    @property
    def ids(self) -> tuple[str, ...]:
        """Every id that satisfies this component, its own first."""
        return (self.id,) + self.alternatives

    def satisfied_by(self, submitted: Iterable[str]) -> bool:
        s = set(submitted)
        return any(i in s for i in self.ids)


@dataclass(frozen=True)
class Step:
    """An inter-agency step (liên thông) and its share of the procedure's time limit."""
    role: str                       # slug of the agency role, e.g. `van-phong-dang-ky-dat-dai`
    name: str                       # Vietnamese description
    share: str                      # as written: `3wd`, `24wh`, `30%`
    share_limit: Limit | None = None
    share_pct: int | None = None


@dataclass(frozen=True)
class Procedure:
    code: str
    name: str
    field: str
    limit: Limit
    components: tuple[Component, ...]
    level: str | None = None
    supplement_policy: str = "pause"
    warning: tuple[str, int] = DEFAULT_WARNING
    steps: tuple[Step, ...] = ()
    effective_from: date = date.min
    effective_to: date | None = None
    source: str = ""
    sample: bool = False
    note: str | None = None

    def in_force(self, on: date) -> bool:
        return self.effective_from <= on and (self.effective_to is None or on <= self.effective_to)

    @property
    def known_ids(self) -> frozenset[str]:
        """Every component id the procedure lists, alternatives included."""
        return frozenset(i for c in self.components for i in c.ids)

    def required_groups(self) -> tuple[tuple[str, ...], ...]:
        """One tuple per required component: the ids any one of which satisfies it."""
        return tuple(c.ids for c in self.components if c.required)

    def required_component_ids(self) -> tuple[str, ...]:
        """The primary ids of the required components."""
        return tuple(c.id for c in self.components if c.required)

    def missing_components(self, submitted_ids: Iterable[str]) -> list[str]:
        """Primary ids of required components that none of `submitted_ids` satisfies."""
        s = set(submitted_ids)
        return [c.id for c in self.components if c.required and not c.satisfied_by(s)]

    def unknown_components(self, ids: Iterable[str]) -> list[str]:
        """The ids (in input order, without repeats) the procedure does not list."""
        known, out = self.known_ids, []
        for i in ids:
            if i not in known and i not in out:
                out.append(i)
        return out

    def component(self, component_id: str) -> Component | None:
        """The component that `component_id` (own id or alternative) belongs to."""
        for c in self.components:
            if component_id in c.ids:
                return c
        return None

    def component_name(self, component_id: str) -> str | None:
        """Vietnamese name of a component id (alternatives have their own names)."""
        for c in self.components:
            if component_id == c.id:
                return c.name
            if component_id in c.alternatives:
                return c.alternative_names[c.alternatives.index(component_id)]
        return None

    def warning_window(self) -> tuple[str, int]:
        """(`wh`, hours) or (`pct`, percent of the limit)."""
        return self.warning


class Catalog:
    """The procedures of a catalog file, by code and date."""

    def __init__(self, procedures: Iterable[Procedure], records: list[dict], source: str = ""):
        self._by_code: dict[str, list[Procedure]] = {}
        for p in procedures:
            self._by_code.setdefault(p.code, []).append(p)
        for versions in self._by_code.values():
            versions.sort(key=lambda p: p.effective_from)
        self.records = records            # normalised, JSON-ready; what a store keeps
        self.source = source
        self.version = content_hash(records)

    def get(self, code: str, on: date | datetime | None = None) -> Procedure | None:
        """The version of `code` in force on `on` (a date, or an aware instant read in
        Vietnam's time zone); without `on`, the version with the latest `effective_from`."""
        versions = self._by_code.get(code)
        if not versions:
            return None
        if on is None:
            return versions[-1]
        if isinstance(on, datetime):
            on = ensure_utc(on).astimezone(TZ).date()
        for p in versions:
            if p.in_force(on):
                return p
        return None

    def versions(self, code: str) -> list[Procedure]:
        return list(self._by_code.get(code, ()))

    def __contains__(self, code: object) -> bool:
        return code in self._by_code

    def __iter__(self):
        """Every procedure version, by code then date."""
        for code in sorted(self._by_code):
            yield from self._by_code[code]

    def __len__(self) -> int:
        """Number of distinct procedure codes."""
        return len(self._by_code)

    def codes(self) -> list[str]:
        return sorted(self._by_code)

    def missing_components(self, code: str, submitted_ids: Iterable[str],
                           on: date | datetime | None = None) -> list[str]:
        p = self._require(code, on)
        return p.missing_components(submitted_ids)

    def unknown_components(self, code: str, ids: Iterable[str],
                           on: date | datetime | None = None) -> list[str]:
        p = self._require(code, on)
        return p.unknown_components(ids)

    def _require(self, code, on) -> Procedure:
        p = self.get(code, on)
        if p is None:
            raise KeyError(f"procedure {code!r} is not in the catalog" +
                           (f" on {on}" if on is not None else ""))
        return p

    def summary(self) -> dict:
        """Counts for `motcua catalog check`."""
        latest = [self.get(c) for c in self.codes()]
        by_field: dict[str, int] = {}
        for p in latest:
            by_field[p.field] = by_field.get(p.field, 0) + 1
        return {
            "version": self.version,
            "procedures": len(latest),
            "versions": sum(len(v) for v in self._by_code.values()),
            "sourced": sum(1 for p in latest if not p.sample),
            "sample": sum(1 for p in latest if p.sample),
            "by_field": dict(sorted(by_field.items())),
        }


# ----------------------------------------------------------------------------- loading

def _date(col, entry, fieldname, value) -> date | None:
    if value is None:
        return None
    if isinstance(value, datetime):
        col.add(entry, fieldname, "must be a date (YYYY-MM-DD), not an instant")
        return None
    if isinstance(value, date):
        return value
    if isinstance(value, str):
        m = _DATE.match(value.strip())
        if m:
            try:
                return date(*map(int, m.groups()))
            except ValueError as exc:       # 2026-13-01, 2025-02-30
                col.add(entry, fieldname, f"{value.strip()} is not a date: {exc}")
                return None
        if _INSTANT.match(value.strip()):
            col.add(entry, fieldname, "must be a date (YYYY-MM-DD), not an instant")
            return None
    col.add(entry, fieldname, f"must be a date YYYY-MM-DD, found {value!r}")
    return None


def _parse_warning(col, entry, value) -> tuple[str, int] | None:
    m = _WARNING.match(str(value).strip()) if isinstance(value, (str, int)) else None
    if not m:
        col.add(entry, "warning", f"must be Nwh (working hours) or N% (of the limit), found {value!r}")
        return None
    if m.group(1) is not None:
        n = int(m.group(1))
        if n <= 0:
            col.add(entry, "warning", "the number of working hours must be positive")
            return None
        return ("wh", n)
    n = int(m.group(2))
    if not 0 < n < 100:
        col.add(entry, "warning", f"a percentage must be between 1% and 99%, found {n}%")
        return None
    return ("pct", n)


def _parse_component(col, entry, idx, raw, seen: dict[str, str]) -> tuple[Component, dict] | None:
    prefix = f"components[{idx}]"
    if not isinstance(raw, dict):
        col.add(entry, prefix, f"must be a mapping with id, name, required, found {raw!r}")
        return None
    before = len(col.errors)
    check_keys(col, entry, prefix + ".", raw, _COMPONENT_KEYS)

    def check_id(fieldname, value):
        if not isinstance(value, str) or not COMPONENT_ID.match(value):
            col.add(entry, fieldname, f"component id must match [a-z0-9][a-z0-9._-]* "
                                       f"(at most 64 characters), found {value!r}")
            return None
        if value in seen:
            col.add(entry, fieldname, f"component id {value!r} is already used by {seen[value]}")
            return None
        seen[value] = fieldname
        return value

    cid = check_id(f"{prefix}.id", raw.get("id"))
    name = text(col, entry, f"{prefix}.name", raw.get("name"))
    required = raw.get("required", True)
    if not isinstance(required, bool):
        col.add(entry, f"{prefix}.required", f"must be true or false, found {required!r}")
    note = text(col, entry, f"{prefix}.note", raw.get("note"), required=False)
    alts, alt_names, alt_records = [], [], []
    any_of = raw.get("any_of", [])
    if not isinstance(any_of, list):
        col.add(entry, f"{prefix}.any_of", "must be a list of alternatives {id, name}")
        any_of = []
    for j, alt in enumerate(any_of):
        aprefix = f"{prefix}.any_of[{j}]"
        if not isinstance(alt, dict):
            col.add(entry, aprefix, f"must be a mapping {{id, name}}, found {alt!r}")
            continue
        check_keys(col, entry, aprefix + ".", alt, _ALTERNATIVE_KEYS)
        aid = check_id(f"{aprefix}.id", alt.get("id"))
        aname = text(col, entry, f"{aprefix}.name", alt.get("name"))
        if aid and aname:
            alts.append(aid)
            alt_names.append(aname)
            alt_records.append({"id": aid, "name": aname})
    if len(col.errors) > before:
        return None
    comp = Component(cid, name, required, tuple(alts), tuple(alt_names), note)
    record = {"id": cid, "name": name, "required": required}
    if alt_records:
        record["any_of"] = alt_records
    if note:
        record["note"] = note
    return comp, record


def _parse_step(col, entry, idx, raw, limit: Limit | None) -> tuple[Step, dict] | None:
    prefix = f"steps[{idx}]"
    if not isinstance(raw, dict):
        col.add(entry, prefix, f"must be a mapping with role, name, share, found {raw!r}")
        return None
    before = len(col.errors)
    check_keys(col, entry, prefix + ".", raw, _STEP_KEYS)
    role = raw.get("role")
    if not isinstance(role, str) or not _STEP_ROLE.match(role):
        col.add(entry, f"{prefix}.role", f"must be a slug [a-z0-9][a-z0-9._-]*, found {role!r}")
    name = text(col, entry, f"{prefix}.name", raw.get("name"))
    share = str(raw.get("share", "")).strip()
    share_limit = share_pct = None
    if share.endswith("%"):
        try:
            share_pct = int(share[:-1])
        except ValueError:
            share_pct = -1
        if not 0 < share_pct <= 100:
            col.add(entry, f"{prefix}.share", f"a percentage must be between 1% and 100%, found {share!r}")
    elif "share" in raw:
        try:
            share_limit = parse_limit(share)
        except ValueError as exc:
            col.add(entry, f"{prefix}.share", f"{exc} or N%")
        else:
            if share_limit.unit == "same-day":
                col.add(entry, f"{prefix}.share", "a step's share cannot be same-day")
    if len(col.errors) > before:
        return None
    return Step(role, name, share, share_limit, share_pct), {"role": role, "name": name, "share": share}


def _check_shares(col, entry, limit: Limit, steps: list[Step]) -> None:
    pct = sum(s.share_pct for s in steps if s.share_pct is not None)
    if pct > 100:
        col.add(entry, "steps", f"the steps' shares add up to {pct}% of the limit, more than 100%")
    same_unit = [s.share_limit.value for s in steps if s.share_limit and s.share_limit.unit == limit.unit]
    if limit.unit != "same-day" and sum(same_unit) > limit.value:
        col.add(entry, "steps", f"the steps' shares add up to {sum(same_unit)}{limit.unit}, "
                                f"more than the limit {limit}")


def _parse_procedure(col, idx, raw) -> tuple[Procedure, dict] | None:
    opened = open_entry(col, idx, raw, "procedure", _PROCEDURE_KEYS)
    if opened is None:
        return None
    entry, before = opened
    code = raw.get("code")
    if isinstance(code, float):
        col.add(entry, "code", f"{code!r} was read as a number: quote the code, e.g. \"1.001193\"")
    elif "code" in raw and (not isinstance(code, str) or not PROCEDURE_CODE.match(code)):
        col.add(entry, "code", f"must be a procedure code such as \"1.001193\", found {code!r}")
    name = text(col, entry, "name", raw.get("name")) if "name" in raw else None
    fieldname = text(col, entry, "field", raw.get("field")) if "field" in raw else None
    level = text(col, entry, "level", raw.get("level"), required=False)
    note = text(col, entry, "note", raw.get("note"), required=False)
    limit = None
    if "limit" in raw:
        try:
            limit = parse_limit(raw["limit"])
        except ValueError as exc:
            col.add(entry, "limit", str(exc))
    policy = raw.get("supplement_policy", "pause")
    if policy not in SUPPLEMENT_POLICIES:
        col.add(entry, "supplement_policy", f"must be pause or restart, found {policy!r}")
    warning = DEFAULT_WARNING
    if raw.get("warning") is not None:
        warning = _parse_warning(col, entry, raw["warning"])
    sample = raw.get("sample", False)
    if not isinstance(sample, bool):
        col.add(entry, "sample", f"must be true or false, found {sample!r}")
    source = raw.get("source")
    if source is None:
        if sample is not True:
            col.add(entry, "source", "required unless the entry is marked sample: true "
                                     "(say where the procedure was published)")
        source = ""
    else:
        source = text(col, entry, "source", source) or ""
    eff_from = _date(col, entry, "effective_from", raw.get("effective_from"))
    eff_to = _date(col, entry, "effective_to", raw.get("effective_to"))
    if eff_from and eff_to and eff_to < eff_from:
        col.add(entry, "effective_to", f"{eff_to} is before effective_from {eff_from}")

    components, comp_records, seen = [], [], {}
    raw_components = raw.get("components")
    if "components" in raw and not isinstance(raw_components, list):
        col.add(entry, "components", "must be a list of components")
        raw_components = []
    for j, c in enumerate(raw_components or []):
        parsed = _parse_component(col, entry, j, c, seen)
        if parsed:
            components.append(parsed[0])
            comp_records.append(parsed[1])

    steps, step_records = [], []
    raw_steps = raw.get("steps", [])
    if not isinstance(raw_steps, list):
        col.add(entry, "steps", "must be a list of steps {role, name, share}")
        raw_steps = []
    for j, s in enumerate(raw_steps):
        parsed = _parse_step(col, entry, j, s, limit)
        if parsed:
            steps.append(parsed[0])
            step_records.append(parsed[1])
    if limit and steps:
        _check_shares(col, entry, limit, steps)

    if len(col.errors) > before:
        return None
    proc = Procedure(code=code, name=name, field=fieldname, limit=limit,
                     components=tuple(components), level=level, supplement_policy=policy,
                     warning=warning, steps=tuple(steps), effective_from=eff_from or date.min,
                     effective_to=eff_to, source=source, sample=sample, note=note)
    record = {
        "code": code, "name": name, "field": fieldname, "level": level, "limit": str(limit),
        "components": comp_records, "supplement_policy": policy,
        "warning": f"{warning[1]}wh" if warning[0] == "wh" else f"{warning[1]}%",
        "steps": step_records,
        "effective_from": eff_from.isoformat() if eff_from else None,
        "effective_to": eff_to.isoformat() if eff_to else None,
        "source": source or None, "sample": sample, "note": note,
    }
    return proc, record


def _dating(raw) -> tuple[str, date, date | None] | None:
    """(code, effective_from, effective_to) of a raw entry when those three are valid."""
    if not isinstance(raw, dict):
        return None
    code = raw.get("code")
    if not isinstance(code, str) or not PROCEDURE_CODE.match(code):
        return None
    quiet = Collector("", CatalogError)
    start = _date(quiet, None, "effective_from", raw.get("effective_from"))
    end = _date(quiet, None, "effective_to", raw.get("effective_to"))
    return None if quiet.errors else (code, start or date.min, end)


def catalog_from_records(records: list, file: str = "<records>") -> Catalog:
    """Validate a list of procedure mappings (as read from a file or a store)."""
    col = Collector(file, CatalogError)
    procedures, normalised = [], []
    dated: list[tuple[int, str, date, date | None]] = []    # every entry whose dating is readable
    for i, raw in enumerate(records):
        parsed = _parse_procedure(col, i, raw)
        if parsed:
            procedures.append(parsed[0])
            normalised.append(parsed[1])
            p = parsed[0]
            dated.append((i, p.code, p.effective_from, p.effective_to))
        else:
            # an entry with other errors still takes part in the overlap check, so that one
            # run reports every problem (not the overlap only once the rest is fixed)
            d = _dating(raw)
            if d is not None:
                dated.append((i, *d))
    # versions of one code must not overlap
    by_code: dict[str, list[tuple[int, date, date | None]]] = {}
    for i, code, start, end in dated:
        by_code.setdefault(code, []).append((i, start, end))
    for code, versions in by_code.items():
        versions.sort(key=lambda v: (v[1], v[0]))
        for (i, a_from, a_to), (j, b_from, _) in zip(versions, versions[1:]):
            if b_from == date.min:
                col.add(f"#{j + 1} ({code})", "effective_from",
                        f"code {code} is also entry #{i + 1}, and neither says from when: give "
                        f"each version of a code its effective_from (and the earlier one an "
                        f"effective_to), or remove the duplicate")
            elif a_to is None or a_to >= b_from:
                start = "the beginning" if a_from == date.min else a_from
                col.add(f"#{j + 1} ({code})", "effective_from",
                        f"versions of {code} overlap: the version of entry #{i + 1}, in force "
                        f"from {start}, runs until {a_to or 'further notice'}; give it an "
                        f"effective_to before {b_from}")
    col.raise_if_any()
    return Catalog(procedures, normalised, source=file)


def load_catalog(path: str | Path) -> Catalog:
    """Load and validate a catalog file (YAML or JSON); CatalogError names file, entry, field."""
    return load_file(path, CatalogError, "procedures", catalog_from_records)


def default_catalog() -> Catalog:
    """The catalog shipped in shared/data/catalog.yaml."""
    return load_catalog(PACKAGE_DATA / "catalog.yaml")
