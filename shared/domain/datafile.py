"""Reference-data files as lists of records (the procedure catalog, the agency directory): reading
a YAML or JSON file, collecting every problem of one run, naming each by file, entry and field,
and the content hash that versions the normalised records. The catalog and the directory add
their own record checks (docs/catalog.md)."""
from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path
from typing import Callable, TypeVar

import yaml

T = TypeVar("T")


class DataFileError(ValueError):
    """An ops data file (catalog, directory) is invalid. `file`, `entry` ("#3 (1.001193)"),
    `field` and `message` name the first problem; `errors` holds every problem found."""

    def __init__(self, file: str, entry: str | None, field: str | None, message: str,
                 errors: list["DataFileError"] | None = None):
        self.file, self.entry, self.field, self.message = file, entry, field, message
        self.errors = errors if errors is not None else [self]
        super().__init__(self._render())

    def _one(self) -> str:
        where = [self.file]
        if self.entry:
            where.append(f"entry {self.entry}")
        if self.field:
            where.append(f"field {self.field!r}")
        return f"{', '.join(where)}: {self.message}"

    def _render(self) -> str:
        if len(self.errors) <= 1:
            return self._one()
        return f"{len(self.errors)} errors:\n" + "\n".join("  " + e._one() for e in self.errors)


def entry_order(err: DataFileError) -> int:
    """Sort key of a problem: its entry number ("#12 (…)"), file-level ones first."""
    m = re.match(r"#(\d+)", err.entry or "")
    return int(m.group(1)) if m else 0


class Collector:
    """Gathers problems so that one run reports all of them, in the order of the entries."""

    def __init__(self, file: str, error_cls: type[DataFileError]):
        self.file = file
        self.error_cls = error_cls
        self.errors: list = []

    def add(self, entry: str | None, field: str | None, message: str) -> None:
        self.errors.append(self.error_cls(self.file, entry, field, message))

    def raise_if_any(self) -> None:
        if self.errors:
            self.errors.sort(key=entry_order)
            first = self.errors[0]
            raise self.error_cls(first.file, first.entry, first.field, first.message, self.errors)


class TextDatesLoader(yaml.SafeLoader):
    """Safe YAML that keeps unquoted dates as text: an impossible one (`2026-13-01`) is then
    reported by the field's own check with its entry and field, not raised by the YAML reader."""


TextDatesLoader.add_constructor("tag:yaml.org,2002:timestamp",
                                lambda loader, node: loader.construct_scalar(node))


def read_records(path: str | Path, error_cls: type[DataFileError], what: str) -> tuple[str, list]:
    """Read a YAML or JSON file holding a list of mappings (`what`); (file name, list)."""
    p = Path(path)
    name = str(path)
    try:
        text = p.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise error_cls(name, None, None, "file not found") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise error_cls(name, None, None, f"cannot read file: {exc}") from None
    try:
        if p.suffix.lower() == ".json":
            data = json.loads(text)
        else:
            data = yaml.load(text, Loader=TextDatesLoader)  # noqa: S506 (a SafeLoader subclass)
    except (yaml.YAMLError, json.JSONDecodeError, ValueError) as exc:
        raise error_cls(name, None, None, f"not valid YAML/JSON: {exc}") from None
    if not isinstance(data, list):
        raise error_cls(name, None, None,
                        f"the file must hold a list of {what}, found {type(data).__name__}")
    return name, data


def load_file(path: str | Path, error_cls: type[DataFileError], what: str,
              from_records: Callable[[list, str], T]) -> T:
    """Read a records file and validate it with `from_records(records, file name)`."""
    name, records = read_records(path, error_cls, what)
    return from_records(records, name)


def check_keys(col: Collector, entry: str, prefix: str, raw: dict, spec: dict[str, bool]) -> None:
    """Report unknown keys and missing required keys of a mapping."""
    for key in raw:
        if key not in spec:
            col.add(entry, f"{prefix}{key}",
                    f"unknown key (allowed: {', '.join(sorted(spec))})")
    for key, required in spec.items():
        if required and key not in raw:
            col.add(entry, f"{prefix}{key}", "required key is missing")


def open_entry(col: Collector, idx: int, raw, what: str,
               keys: dict[str, bool]) -> tuple[str, int] | None:
    """Start checking record `idx` (a `what`: procedure, agency): its label for problems
    ("#3 (<code>)") and how many problems came before it (more after: the entry is invalid), with
    its unknown and missing keys reported; None, with a problem, when it is not a mapping."""
    code = raw.get("code") if isinstance(raw, dict) else None
    entry = f"#{idx + 1}" + (f" ({code})" if isinstance(code, str) else "")
    if not isinstance(raw, dict):
        col.add(entry, None, f"each {what} must be a mapping, found {type(raw).__name__}")
        return None
    before = len(col.errors)
    check_keys(col, entry, "", raw, keys)
    return entry, before


def text(col: Collector, entry: str | None, fieldname: str, value, required: bool = True) -> str | None:
    """A non-empty text, stripped; None (and a problem when required) otherwise."""
    if value is None and not required:
        return None
    if not isinstance(value, str) or not value.strip():
        col.add(entry, fieldname, f"must be a non-empty text, found {value!r}")
        return None
    return value.strip()


def content_hash(records: list[dict]) -> str:
    """A stable hash of normalised records: the version of a catalog or directory."""
    blob = json.dumps(records, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()[:16]
