"""Injectable clocks. Every deadline computation and detector takes one; nothing else reads time.

All instants are timezone-aware and in UTC.
"""
from __future__ import annotations

import os
import threading
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Protocol

from shared.domain.instants import ensure_utc  # noqa: F401  (shared.platform.clock.ensure_utc: the clocks' normaliser)


class Clock(Protocol):
    def now(self) -> datetime:
        """The current instant, aware, in UTC."""


class SystemClock:
    """The machine's clock."""

    def now(self) -> datetime:
        return datetime.now(timezone.utc)


class VirtualClock:
    """A clock that tests move by hand; safe to share between threads."""

    def __init__(self, start: datetime):
        self._now = ensure_utc(start)
        self._lock = threading.Lock()

    def now(self) -> datetime:
        with self._lock:
            return self._now

    def set(self, t: datetime) -> None:
        with self._lock:
            self._now = ensure_utc(t)

    def advance(self, delta: timedelta) -> datetime:
        with self._lock:
            self._now += delta
            return self._now


class FileClock:
    """A virtual clock shared between processes: the instant is the ISO 8601 text of a file.

    Lets an end-to-end test, or a rehearsal of the local stack (`motcua local up --clock FILE`,
    docs/rehearsal.md), move the time of services run as subprocesses
    (`MOTCUA_CLOCK_FILE=/path`); the file is re-read at every call.
    """

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)

    def now(self) -> datetime:
        text = self.path.read_text(encoding="utf-8").strip()
        return ensure_utc(datetime.fromisoformat(text))

    def set(self, t: datetime) -> None:
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(ensure_utc(t).isoformat(), encoding="utf-8")
        tmp.replace(self.path)


def clock_from_env(environ: dict | None = None) -> Clock:
    """`FileClock` when MOTCUA_CLOCK_FILE is set (tests, rehearsals), else the system clock."""
    env = os.environ if environ is None else environ
    path = env.get("MOTCUA_CLOCK_FILE")
    return FileClock(path) if path else SystemClock()
