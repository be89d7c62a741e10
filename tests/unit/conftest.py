"""Hooks and fixtures of tests/unit only: unit tests need no network and run in memory
(docs/testing.md).

- The network guard (tests/helpers/netguard.py) is on while unit tests run, fixtures and the
  threads a test leaves behind included: a connection outside loopback, or to a loopback port that
  no socket of this process listens on, raises `NetworkBlocked`; an attempt to leave the machine
  also fails the test, even if the code under test swallowed the error.
- `_yaml_memo` (autouse): each distinct YAML text is parsed once per session (tests/helpers/
  yamlmemo.py), so the hundreds of tests that load the shipped reference data do not re-parse it.
"""
from __future__ import annotations

import pytest

from helpers.netguard import guard_folder, pytest_runtest_setup, pytest_runtest_teardown  # noqa: F401
from helpers.yamlmemo import YamlMemo

guard_folder(__file__)
# on from here to the end of collection too: module-level loads of the shipped reference data
# (a catalog at import) then count as the first parse
_MEMO = YamlMemo()
_MEMO.install()


def pytest_collection_finish(session):
    _MEMO.uninstall()


@pytest.fixture(autouse=True)
def _yaml_memo():
    _MEMO.install()
    yield _MEMO
    _MEMO.uninstall()
