"""The dashboard's wiring (its web app, app.py): configuration, clock, the MongoDB database,
the reference data (directory, catalog, the legal engine's context) and notify's routing policy.

Real adapters by default; a test passes what it wants instead (a database, a context, a
directory…). Nothing connects at import or in `bootstrap()`: each piece is built on first use,
once per process (a gunicorn worker builds its own after the fork).
"""
from __future__ import annotations

import os
from dataclasses import dataclass

from shared.platform.clock import Clock, clock_from_env
from shared.platform.config import Settings, env
from shared.platform.mongo import lazy_db
from shared.platform.refdata import reference_data
from shared.platform.runtime import Lazy


@dataclass(frozen=True)
class Dashboard:
    """What the dashboard is built from; each callable returns the same object every call."""
    settings: Settings
    environ: dict          # the variables read here (DASHBOARD_*, NOTIFY_SECRET, NOTIFY_POLICY_FILE…)
    clock: Clock
    db: Lazy
    directory: Lazy        # shared.domain.directory.Directory in force (tenancy)
    catalog: Lazy          # shared.domain.catalog.Catalog in force
    ctx: Lazy              # shared.domain.engine.context.EngineContext (deadlines explained)
    policy: Lazy           # notify's routing policy (the acknowledgement goes through notify's code)


def bootstrap(settings: Settings | None = None, *, environ: dict | None = None, clock: Clock | None = None,
              db=None, directory=None, catalog=None, ctx=None, policy=None,
              appname: str = "motcua-dashboard") -> Dashboard:
    """The dashboard's dependencies: `environ` (default: os.environ) and the settings read from
    it unless given, `clock` (default: MOTCUA_CLOCK_FILE, else the system clock) and, unless
    given, a database of the settings (with the web socket bound), the reference data in force
    (imported into it, else the files) and the routing policy of NOTIFY_POLICY_FILE."""
    environ = dict(os.environ if environ is None else environ)
    settings = settings or Settings.from_env(environ)

    get_db = lazy_db(settings, db, appname=appname, for_requests=True)
    directory_, catalog_, ctx_ = reference_data(settings, get_db, directory=directory,
                                                catalog=catalog, ctx=ctx)

    def _policy():
        if policy is not None:
            return policy
        from services.notify.policy import load_policy
        return load_policy(env("NOTIFY_POLICY_FILE", environ) or None)

    return Dashboard(settings=settings, environ=environ, clock=clock or clock_from_env(environ), db=get_db,
                     directory=directory_, catalog=catalog_, ctx=ctx_, policy=Lazy(_policy))
