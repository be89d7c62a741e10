"""Agency directory: agencies as a tree of any depth, their heads, one-stop chiefs and
contact channels; loader with specific errors and tree queries (its versions in MongoDB:
shared.platform.refdata.DirectoryStore).

The file format is documented in docs/catalog.md ("Agency directory").
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

from shared.domain import PACKAGE_DATA
from shared.domain.datafile import (Collector, DataFileError, check_keys, content_hash, load_file,
                                    open_entry, text)

AGENCY_CODE = re.compile(r"^[0-9A-Za-z][0-9A-Za-z._-]{0,63}$")
EMAIL = re.compile(r"^[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}$")
PHONE = re.compile(r"^\+?[0-9][0-9 .-]{5,19}$")
URL = re.compile(r"^https?://[^\s/$.?#][^\s]*$")
OFFICE = re.compile(r"^[a-z0-9][a-z0-9._-]{0,63}$")

_AGENCY_KEYS = {
    "code": True, "name": True, "parent": False, "head": False, "acting_head": False,
    "deputies": False, "one_stop_chief": False, "office": False, "contacts": False,
    "level": False, "short_name": False,
}
_PERSON_KEYS = {"name": True, "title": False, "email": False, "phone": False,
                "sms": False, "webhook": False}
_CONTACT_KEYS = {"email": False, "phone": False, "sms": False, "webhook": False}


class DirectoryError(DataFileError):
    """A directory file is invalid: `file`, `entry` ("#3 (000.00.00.H56)"), `field`, `message`
    name the first problem; `errors` holds every problem found (see DataFileError)."""


@dataclass(frozen=True)
class Person:
    """An official who receives alerts. Every channel is optional."""
    name: str
    title: str | None = None
    email: str | None = None
    phone: str | None = None
    sms: str | None = None          # number of the SMS gateway recipient (defaults to phone)
    webhook: str | None = None

    def channels(self) -> dict[str, str]:
        """The channels this person can be reached on: {"email": …, "sms": …, "webhook": …}."""
        out = {}
        if self.email:
            out["email"] = self.email
        if self.sms or self.phone:
            out["sms"] = self.sms or self.phone
        if self.webhook:
            out["webhook"] = self.webhook
        return out


@dataclass(frozen=True)
class Contacts:
    """Channels of the agency itself (its office mailbox, its system's webhook…)."""
    email: str | None = None
    phone: str | None = None
    sms: str | None = None
    webhook: str | None = None


@dataclass(frozen=True)
class Agency:
    code: str
    name: str
    parent: str | None = None
    head: Person | None = None
    acting_head: Person | None = None
    deputies: tuple[Person, ...] = ()
    one_stop_chief: Person | None = None
    office: str = "default"
    contacts: Contacts = Contacts()
    level: str | None = None        # a label only (e.g. "tỉnh", "sở", "xã"); no logic depends on it
    short_name: str | None = None

    @property
    def responsible_head(self) -> Person | None:
        """Who answers for the agency now: the acting head while one is set, else the head."""
        return self.acting_head or self.head


class Directory:
    """The agencies of a directory file, with tree queries."""

    def __init__(self, agencies: Iterable[Agency], records: list[dict], source: str = ""):
        self._by_code: dict[str, Agency] = {a.code: a for a in agencies}
        self._children: dict[str, list[str]] = {}
        for a in self._by_code.values():
            if a.parent:
                self._children.setdefault(a.parent, []).append(a.code)
        self.records = records
        self.source = source
        self.version = content_hash(records)

    def get(self, code: str) -> Agency | None:
        return self._by_code.get(code)

    def __contains__(self, code: object) -> bool:
        return code in self._by_code

    def __iter__(self):
        return iter(self._by_code.values())

    def __len__(self) -> int:
        return len(self._by_code)

    def roots(self) -> list[str]:
        return sorted(c for c, a in self._by_code.items() if not a.parent)

    def children(self, code: str) -> list[str]:
        return sorted(self._children.get(code, ()))

    def ancestors(self, code: str) -> list[str]:
        """Codes of the ancestors of `code`, parent first; [] for a root; KeyError if unknown."""
        self._require(code)
        out, cur = [], self._by_code[code].parent
        while cur:
            out.append(cur)
            cur = self._by_code[cur].parent
        return out

    def subtree(self, code: str) -> set[str]:
        """`code` and all its descendants."""
        self._require(code)
        out, stack = set(), [code]
        while stack:
            c = stack.pop()
            out.add(c)
            stack.extend(self._children.get(c, ()))
        return out

    def within(self, code: str, root: str) -> bool:
        """True when `code` is `root` or one of its descendants (False for unknown codes)."""
        if code not in self._by_code or root not in self._by_code:
            return False
        return code == root or root in self.ancestors(code)

    def responsible_head(self, code: str) -> Person | None:
        """The acting head while set, else the head, of agency `code`."""
        return self._require(code).responsible_head

    def parent_head(self, code: str) -> Person | None:
        """The responsible head of the parent agency (escalation target), None for a root."""
        parent = self._require(code).parent
        return self._by_code[parent].responsible_head if parent else None

    def _require(self, code: str) -> Agency:
        a = self._by_code.get(code)
        if a is None:
            raise KeyError(f"agency {code!r} is not in the directory")
        return a

    def summary(self) -> dict:
        return {
            "version": self.version,
            "agencies": len(self),
            "roots": self.roots(),
            "depth": max((len(self.ancestors(c)) + 1 for c in self._by_code), default=0),
            "without_head": sorted(c for c, a in self._by_code.items() if not a.responsible_head),
        }


# ----------------------------------------------------------------------------- loading

def _channel(col, entry, fieldname, kind, value):
    if value is None:
        return None
    if not isinstance(value, str):
        col.add(entry, fieldname, f"must be a text, found {value!r}")
        return None
    v = value.strip()
    ok = {"email": EMAIL, "phone": PHONE, "sms": PHONE, "webhook": URL}[kind].match(v)
    if not ok:
        what = {"email": "an e-mail address such as chanh-vp@example.org",
                "phone": "a phone number (digits, optional +, spaces, dots or dashes)",
                "sms": "a phone number (digits, optional +, spaces, dots or dashes)",
                "webhook": "an http(s) URL"}[kind]
        col.add(entry, fieldname, f"must be {what}, found {value!r}")
        return None
    return v


def _person(col, entry, fieldname, raw) -> tuple[Person | None, dict | None]:
    if raw is None:
        return None, None
    if not isinstance(raw, dict):
        col.add(entry, fieldname, f"must be a mapping {{name, title, email, phone…}}, found {raw!r}")
        return None, None
    before = len(col.errors)
    check_keys(col, entry, fieldname + ".", raw, _PERSON_KEYS)
    name = text(col, entry, f"{fieldname}.name", raw.get("name"))
    title = text(col, entry, f"{fieldname}.title", raw.get("title"), required=False)
    ch = {k: _channel(col, entry, f"{fieldname}.{k}", k, raw.get(k))
          for k in ("email", "phone", "sms", "webhook")}
    if len(col.errors) > before:
        return None, None
    record = {"name": name, "title": title, **ch}
    return Person(name=name, title=title, **ch), {k: v for k, v in record.items() if v is not None}


def _parse_agency(col, idx, raw, offices: frozenset[str] | None = None, offices_file: str = ""):
    opened = open_entry(col, idx, raw, "agency", _AGENCY_KEYS)
    if opened is None:
        return None
    entry, before = opened
    code = raw.get("code")
    if "code" in raw and (not isinstance(code, str) or not AGENCY_CODE.match(code)):
        col.add(entry, "code", f"must be an agency code such as \"000.00.00.H56\", found {code!r}")
    name = text(col, entry, "name", raw.get("name")) if "name" in raw else None
    parent = raw.get("parent")
    if parent is not None and (not isinstance(parent, str) or not AGENCY_CODE.match(parent)):
        col.add(entry, "parent", f"must be the code of another agency or null, found {parent!r}")
    if parent is not None and parent == code:
        col.add(entry, "parent", "an agency cannot be its own parent")
    head, head_r = _person(col, entry, "head", raw.get("head"))
    acting, acting_r = _person(col, entry, "acting_head", raw.get("acting_head"))
    chief, chief_r = _person(col, entry, "one_stop_chief", raw.get("one_stop_chief"))
    deputies, deputies_r = [], []
    raw_deps = raw.get("deputies", [])
    if raw_deps is None:
        raw_deps = []
    if not isinstance(raw_deps, list):
        col.add(entry, "deputies", "must be a list of people")
        raw_deps = []
    for j, d in enumerate(raw_deps):
        p, r = _person(col, entry, f"deputies[{j}]", d)
        if p:
            deputies.append(p)
            deputies_r.append(r)
    office = raw.get("office", "default")
    if not isinstance(office, str) or not OFFICE.match(office):
        col.add(entry, "office", f"must be an office calendar id such as \"default\", found {office!r}")
    elif offices is not None and office not in offices:
        # checked here, not first when an event of the agency arrives: the engine could not
        # compute any deadline of that agency (its events would all be dead-lettered)
        col.add(entry, "office", f"unknown office {office!r}: the offices file {offices_file} "
                                 f"defines {', '.join(sorted(offices))}")
    contacts, contacts_r = Contacts(), {}
    raw_contacts = raw.get("contacts")
    if raw_contacts is not None:
        if not isinstance(raw_contacts, dict):
            col.add(entry, "contacts", "must be a mapping {email, phone, sms, webhook}")
        else:
            check_keys(col, entry, "contacts.", raw_contacts, _CONTACT_KEYS)
            ch = {k: _channel(col, entry, f"contacts.{k}", k, raw_contacts.get(k))
                  for k in ("email", "phone", "sms", "webhook")}
            contacts = Contacts(**ch)
            contacts_r = {k: v for k, v in ch.items() if v is not None}
    level = text(col, entry, "level", raw.get("level"), required=False)
    short = text(col, entry, "short_name", raw.get("short_name"), required=False)
    if len(col.errors) > before:
        return None
    agency = Agency(code=code, name=name, parent=parent, head=head, acting_head=acting,
                    deputies=tuple(deputies), one_stop_chief=chief, office=office,
                    contacts=contacts, level=level, short_name=short)
    record = {"code": code, "name": name, "parent": parent, "head": head_r,
              "acting_head": acting_r, "deputies": deputies_r, "one_stop_chief": chief_r,
              "office": office, "contacts": contacts_r, "level": level, "short_name": short}
    return agency, record


def directory_from_records(records: list, file: str = "<records>", *,
                           offices_file: str | Path | None = None,
                           check_offices: bool = True) -> Directory:
    """Validate a list of agency mappings (as read from a file or a store). With `check_offices`,
    every `office` must be an office of the offices file (`offices_file`, default
    shared/data/offices.yaml, the one the engine's calendars read). Every problem is reported in
    one run: duplicate codes, parents and cycles are checked over all entries, including those
    with other errors."""
    from shared.domain.workcal.errors import CalendarConfigError
    from shared.domain.workcal.files import OFFICES_FILE, office_ids

    offices_path = Path(offices_file) if offices_file is not None else OFFICES_FILE
    offices = None
    if check_offices:
        try:
            offices = office_ids(offices_path)
        except CalendarConfigError as exc:
            raise DirectoryError(file, None, "office", f"cannot check the offices: {exc}") from None
    col = Collector(file, DirectoryError)
    agencies, normalised = [], []
    # code -> (entry index, parent) of every entry with a valid code, parsed or not
    first: dict[str, tuple[int, str | None]] = {}
    for i, raw in enumerate(records):
        parsed = _parse_agency(col, i, raw, offices, str(offices_path))
        code = raw.get("code") if isinstance(raw, dict) else None
        if not isinstance(code, str) or not AGENCY_CODE.match(code):
            continue
        if code in first:
            col.add(f"#{i + 1} ({code})", "code",
                    f"duplicate agency code, already used by entry #{first[code][0] + 1}")
            continue
        parent = raw.get("parent")
        first[code] = (i, parent if isinstance(parent, str) and parent != code else None)
        if parsed:
            agencies.append(parsed[0])
            normalised.append(parsed[1])
    for code, (i, parent) in first.items():
        if parent and parent not in first:
            col.add(f"#{i + 1} ({code})", "parent", f"unknown parent agency {parent!r}")
    # cycles: follow parents; a chain that comes back to one of its codes loops
    reported: set[str] = set()
    for code, (i, parent) in first.items():
        chain, cur = [code], parent
        while cur and cur in first and cur not in chain:
            chain.append(cur)
            cur = first[cur][1]
        if cur and cur in chain:
            loop = chain[chain.index(cur):] + [cur]
            key = min(loop)
            if key not in reported:
                reported.add(key)
                col.add(f"#{i + 1} ({code})", "parent",
                        "the parent chain forms a cycle: " + " → ".join(loop))
    col.raise_if_any()
    return Directory(agencies, normalised, source=file)


def load_directory(path: str | Path) -> Directory:
    """Load and validate a directory file (YAML or JSON); DirectoryError names file, entry, field."""
    return load_file(path, DirectoryError, "agencies", directory_from_records)


def default_directory() -> Directory:
    """The sample directory shipped in shared/data/directory.yaml."""
    return load_directory(PACKAGE_DATA / "directory.yaml")
