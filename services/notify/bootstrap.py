"""The notify service's wiring, shared by its worker (worker.py) and API (api.py): configuration,
clock, the MongoDB database, the reference data (the agency directory) and the routing policy.

Real adapters by default; a test passes what it wants instead (a database, a directory, a
policy, environment variables). Nothing connects at import or in `bootstrap()`: each piece is
built on first use, once per process (a gunicorn worker builds its own after the fork).
"""
from __future__ import annotations

import os
from dataclasses import dataclass

from shared.platform.clock import Clock, clock_from_env
from shared.platform.config import Settings, env
from shared.platform.mongo import lazy_db
from shared.platform.runtime import Lazy

from .policy import Policy, load_policy
from .store import NotifyStore


def load_notify_policy(environ: dict | None = None) -> Policy:
    """The routing policy of NOTIFY_POLICY_FILE (or the shipped default); PolicyError when invalid."""
    return load_policy(env("NOTIFY_POLICY_FILE", environ) or None)


def load_agencies(settings: Settings, db=None):
    """The directory last imported into MongoDB (`motcua directory import`), else DIRECTORY_FILE
    (the same choice as intake and sla: VersionedStore.current_or_file)."""
    from shared.platform.refdata import DirectoryStore

    return DirectoryStore.current_or_file(settings.directory_file, db)


@dataclass(frozen=True)
class Notify:
    """What the notify entry points are built from; each callable returns the same object every call."""
    settings: Settings
    environ: dict          # the variables read here (NOTIFY_SECRET, NOTIFY_URL, SMTP_*…)
    clock: Clock
    db: Lazy
    directory: Lazy        # shared.domain.directory.Directory in force
    policy: Lazy           # the routing policy
    store: Lazy            # NotifyStore on `db`

    @property
    def secret(self) -> str:
        """NOTIFY_SECRET: signs acknowledgement links (empty: alerts carry none)."""
        return env("NOTIFY_SECRET", self.environ)


def bootstrap(settings: Settings | None = None, *, environ: dict | None = None, clock: Clock | None = None,
              db=None, directory=None, policy: Policy | None = None, appname: str = "motcua-notify",
              for_requests: bool = False) -> Notify:
    """The notify service's dependencies: `environ` (default: os.environ) and the settings read
    from it unless given, `clock` (default: MOTCUA_CLOCK_FILE, else the system clock) and, unless
    given, a database of the settings (`for_requests`: with the API's socket bound), the
    directory in force and the routing policy of NOTIFY_POLICY_FILE."""
    environ = dict(os.environ if environ is None else environ)
    settings = settings or Settings.from_env(environ)

    get_db = lazy_db(settings, db, appname=appname, for_requests=for_requests)
    return Notify(
        settings=settings, environ=environ, clock=clock or clock_from_env(environ), db=get_db,
        directory=Lazy(lambda: directory if directory is not None else load_agencies(settings, get_db())),
        policy=Lazy(lambda: policy if policy is not None else load_notify_policy(environ)),
        store=Lazy(lambda: NotifyStore(get_db())))
