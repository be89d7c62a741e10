"""One bootstrap per service: the API, the worker and the CLI of a service take their
configuration, clock, database and reference data from its bootstrap.py; an API module never
imports its worker; nothing connects before first use."""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

from shared.platform.clock import VirtualClock
from shared.platform.config import Settings

from helpers.sla import T0

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("module", ["services/sla/api.py", "services/notify/api.py", "services/intake/app.py",
                                    "services/sla/bootstrap.py", "services/notify/bootstrap.py",
                                    "services/intake/bootstrap.py"])
def test_api_and_bootstrap_modules_do_not_import_a_worker(module):
    tree = ast.parse((ROOT / module).read_text(encoding="utf-8"))
    imported = {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)}
    assert not {m for m in imported if m and m.split(".")[-1] == "worker"}


def _closed_store() -> Settings:
    return Settings.from_env({"MONGO_URI": "mongodb://127.0.0.1:1/", "MONGO_TIMEOUT_MS": "50"})


def test_sla_bootstrap_builds_each_piece_once_on_first_use():
    from services.sla.bootstrap import bootstrap

    clock = VirtualClock(T0)
    sla = bootstrap(_closed_store(), clock=clock, directory="the directory", catalog="the catalog")
    assert sla.clock is clock and sla.directory() == "the directory" and sla.catalog() == "the catalog"
    db = sla.db()                                  # a client: pymongo connects on first operation
    assert db is sla.db() and db.name == "motcua"
    assert db.client.options.server_selection_timeout == 0.05
    given = bootstrap(_closed_store(), db="db", ctx="ctx")
    assert (given.db(), given.ctx()) == ("db", "ctx")


def test_notify_bootstrap_reads_its_environment_and_policy():
    from services.notify.bootstrap import bootstrap
    from services.notify.policy import Policy
    from services.notify.store import NotifyStore

    env = {"NOTIFY_SECRET": "s" * 32, "MONGO_DB": "n", "MONGO_URI": "mongodb://127.0.0.1:1/",
           "MOTCUA_CLOCK_FILE": ""}
    notify = bootstrap(environ=env, directory="the directory")
    assert notify.settings.mongo_db == "n" and notify.secret == "s" * 32
    assert notify.directory() == "the directory"
    assert isinstance(notify.policy(), Policy) and notify.policy() is notify.policy()
    assert isinstance(notify.store(), NotifyStore) and notify.store() is notify.store()
