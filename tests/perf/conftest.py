"""Benchmarks run only on demand: `pytest tests/perf -m perf -s` or MOTCUA_PERF=1.

A plain `pytest` run collects them but skips them (with the reason shown by `-ra`).
"""
from __future__ import annotations

import os

import pytest


def _perf_requested(config) -> bool:
    if os.environ.get("MOTCUA_PERF") == "1":
        return True
    markexpr = config.getoption("markexpr", "") or ""
    return "perf" in markexpr and "not perf" not in markexpr


def pytest_collection_modifyitems(config, items):
    if _perf_requested(config):
        return
    skip = pytest.mark.skip(reason="benchmark: run with `pytest tests/perf -m perf -s` or MOTCUA_PERF=1")
    for item in items:
        if item.get_closest_marker("perf"):
            item.add_marker(skip)
