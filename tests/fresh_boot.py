"""pytest plugin: run the session as on a machine booted 5 seconds ago.

    bash .ci/run -p tests.fresh_boot          # or: .venv/bin/python -m pytest -p tests.fresh_boot …

`time.monotonic()` counts from boot on Linux, so code that takes 0.0 for "never" behaves
differently on a machine up for less than its interval (issue 11.1). Loaded with `-p`, this module
shifts `time.monotonic` before the project's modules are imported: differences are unchanged,
absolute values start near UPTIME_S. Subprocesses (the e2e services) keep the host's clock.
"""
from __future__ import annotations

import time

UPTIME_S = 5.0

_host_monotonic = time.monotonic
_shift = _host_monotonic() - UPTIME_S


def _just_booted() -> float:
    return _host_monotonic() - _shift


time.monotonic = _just_booted
