"""Time limits of procedures: `5wd` (working days), `40wh` (working hours), `30cd`
(calendar days), `same-day`. See DESIGN.md §5."""
from __future__ import annotations

import re
from dataclasses import dataclass

UNITS = ("wd", "wh", "cd", "same-day")
_PATTERN = re.compile(r"^(?:(\d+)(wd|wh|cd)|same-day)$")


@dataclass(frozen=True)
class Limit:
    value: int          # 0 for same-day
    unit: str           # one of UNITS

    def __str__(self) -> str:
        return "same-day" if self.unit == "same-day" else f"{self.value}{self.unit}"


def parse_limit(text: str) -> Limit:
    """Parse `5wd`, `40wh`, `30cd` or `same-day`; ValueError with the accepted forms otherwise."""
    m = _PATTERN.match(str(text).strip())
    if not m:
        raise ValueError(f"invalid time limit {text!r}: expected Nwd, Nwh, Ncd or same-day")
    if m.group(1) is None:
        return Limit(0, "same-day")
    value = int(m.group(1))
    if value <= 0:
        raise ValueError(f"invalid time limit {text!r}: the number must be positive")
    return Limit(value, m.group(2))
