"""Helpers of the compose tests (tests/compose): the run's lines of figures and the deploy/compose
scripts (the probe that reads Kafka and the store inside the stack is tests/compose/probe_server.py)."""
from __future__ import annotations

import subprocess
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
FIGURES: list[str] = []


def figure(line: str) -> None:
    """Record a line of figures: printed now (with -s) and in the run's summary."""
    FIGURES.append(line)
    print(line, flush=True)


def run_script(script: str, *args: str) -> None:
    """A deploy/compose script (idempotent, cached), failing the test with its output."""
    res = subprocess.run(["bash", str(REPO / "deploy" / "compose" / script), *args], cwd=REPO,
                         capture_output=True, text=True, timeout=3600)
    assert res.returncode == 0, f"deploy/compose/{script} failed:\n{res.stderr[-3000:]}"
