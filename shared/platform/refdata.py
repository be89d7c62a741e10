"""Reference data as the services read it: the procedure catalog and the agency directory
versioned in MongoDB (CatalogStore, DirectoryStore on shared.platform.versioned), and the legal
engine's context and rule sets chosen by a service's settings."""
from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Any, Callable

from shared.domain import workcal
from shared.domain.catalog import Catalog, catalog_from_records, load_catalog
from shared.domain.directory import Directory, directory_from_records, load_directory
from shared.domain.engine.context import EngineContext
from shared.domain.engine.ruledata import RuleSets, default_rulesets, load_rulesets
from shared.platform.runtime import Lazy
from shared.platform.versioned import VersionedStore


class CatalogStore(VersionedStore):
    """Catalog versions in MongoDB (collection `catalog_versions`, pointer `catalog_current`);
    see shared.platform.versioned."""

    VERSIONS = "catalog_versions"
    CURRENT = "catalog_current"
    FIELD = "procedures"
    load_file = staticmethod(load_catalog)
    from_records = staticmethod(lambda records, name: catalog_from_records(records, name))

    def import_catalog(self, catalog: Catalog, imported_at: datetime, source: str = "") -> str:
        return self.store(catalog, imported_at, source)


class DirectoryStore(VersionedStore):
    """Directory versions in MongoDB, so past alerts keep who was responsible then
    (collection `directory_versions`, pointer `directory_current`; see shared.platform.versioned)."""

    VERSIONS = "directory_versions"
    CURRENT = "directory_current"
    FIELD = "agencies"
    load_file = staticmethod(load_directory)
    # offices were checked at import; a version that names an office since dropped from the
    # offices file still loads (intake and notify do not need it), and each of its events the
    # sla engine cannot apply raises the reference-data alarm (services/sla/alarms.py)
    from_records = staticmethod(lambda records, name: directory_from_records(records, name,
                                                                             check_offices=False))

    def import_directory(self, directory: Directory, imported_at: datetime, source: str = "") -> str:
        """Store `directory` as the current version; returns its version."""
        return self.store(directory, imported_at, source)


def rulesets_from_settings(settings: Any) -> RuleSets:
    """The rule sets of a service: `extra["rulesets_file"]` when the settings name one, else the
    shipped bindings (sla and notify read them the same way)."""
    extra = getattr(settings, "extra", None) or {}
    return load_rulesets(extra["rulesets_file"]) if extra.get("rulesets_file") else default_rulesets()


def context_from_settings(settings: Any, db=None) -> EngineContext:
    """The engine context for a service: the catalog and directory imported into `db` (MongoDB)
    when given and present, else the files named by the settings (CATALOG_FILE, DIRECTORY_FILE);
    `extra["rulesets_file"]` for another rule-set binding."""
    catalog = CatalogStore.current_or_file(settings.catalog_file, db)
    rulesets = rulesets_from_settings(settings)
    directory_file = getattr(settings, "directory_file", None)
    directory = DirectoryStore(db).current() if db is not None else None
    if directory is None and directory_file and Path(directory_file).exists():
        directory = load_directory(directory_file)
    return EngineContext(catalog=catalog, calendars=workcal.calendar_for, rulesets=rulesets,
                         directory=directory)


def reference_data(settings: Any, get_db: Callable[[], Any], *, directory=None, catalog=None,
                   ctx=None) -> tuple[Lazy, Lazy, Lazy]:
    """A service's reference data, each built on first use from the database `get_db()` returns
    (the version imported there, else the files the settings name) unless given: (directory,
    catalog, engine context)."""
    return (Lazy(lambda: directory if directory is not None
                 else DirectoryStore.current_or_file(settings.directory_file, get_db())),
            Lazy(lambda: catalog if catalog is not None
                 else CatalogStore.current_or_file(settings.catalog_file, get_db())),
            Lazy(lambda: ctx if ctx is not None else context_from_settings(settings, get_db())))
