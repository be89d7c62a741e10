"""The sla service's wiring, shared by its worker (worker.py), read API (api.py) and CLI (cli.py):
configuration, clock, the MongoDB database and the reference data (the legal engine's context,
the directory, the catalog).

Real adapters by default; a test passes what it wants instead (a database, a context, a
directory…). Nothing connects at import or in `bootstrap()`: each piece is built on first use,
once per process (a gunicorn worker builds its own after the fork).
"""
from __future__ import annotations

from dataclasses import dataclass

from shared.platform.clock import Clock, clock_from_env
from shared.platform.config import Settings
from shared.platform.mongo import lazy_db
from shared.platform.refdata import reference_data
from shared.platform.runtime import Lazy


def engine_context(settings: Settings, db=None):
    """The legal engine's context (catalog, calendars, rule sets, directory): the catalog and
    directory imported into `db` when present, else the files the settings name."""
    from shared.platform.refdata import context_from_settings
    return context_from_settings(settings, db)


@dataclass(frozen=True)
class Sla:
    """What the sla entry points are built from; each callable returns the same object every call."""
    settings: Settings
    clock: Clock
    db: Lazy
    ctx: Lazy              # shared.domain.engine.context.EngineContext
    directory: Lazy        # shared.domain.directory.Directory in force (tenancy of the read API)
    catalog: Lazy          # shared.domain.catalog.Catalog in force


def bootstrap(settings: Settings | None = None, *, clock: Clock | None = None, db=None, ctx=None,
              directory=None, catalog=None, appname: str = "motcua-sla", for_requests: bool = False) -> Sla:
    """The sla service's dependencies: `settings` (default: the environment), `clock` (default:
    MOTCUA_CLOCK_FILE, else the system clock) and, unless given, a database of the settings
    (`for_requests`: with the read API's socket bound) and the reference data in force (imported
    into it, else the files)."""
    settings = settings or Settings.from_env()

    get_db = lazy_db(settings, db, appname=appname, for_requests=for_requests)
    directory_, catalog_, ctx_ = reference_data(settings, get_db, directory=directory,
                                                catalog=catalog, ctx=ctx)
    return Sla(settings=settings, clock=clock or clock_from_env(), db=get_db, ctx=ctx_,
               directory=directory_, catalog=catalog_)
