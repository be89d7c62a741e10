"""What the engine needs besides the events: catalog, calendars, rule sets, directory."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

from shared.domain.engine.ruledata import RuleSets, default_rulesets, load_rulesets


@dataclass(frozen=True)
class EngineContext:
    catalog: Any                                  # shared.domain.catalog.Catalog
    calendars: Callable[[str], Any]               # office id -> shared.domain.workcal.WorkingCalendar
    rulesets: RuleSets
    directory: Any | None = None                  # shared.domain.directory.Directory

    def office_for(self, agency_code: str | None) -> str:
        """The office-hours calendar of an agency (directory), `default` when unknown."""
        if self.directory is not None and agency_code:
            agency = self.directory.get(agency_code)
            office = getattr(agency, "office", None) if agency is not None else None
            if office:
                return office
        return "default"

    def parent_of(self, agency_code: str | None) -> str | None:
        """The parent agency's code (directory), None when unknown."""
        if self.directory is None or not agency_code:
            return None
        try:
            ancestors = self.directory.ancestors(agency_code)
        except (KeyError, ValueError):
            return None
        return ancestors[0] if ancestors else None


def default_context(directory: Any | None = None) -> EngineContext:
    """Shipped catalog, calendars and rule sets."""
    from shared.domain import catalog as catalog_mod
    from shared.domain import workcal
    return EngineContext(catalog=catalog_mod.default_catalog(), calendars=workcal.calendar_for,
                         rulesets=default_rulesets(), directory=directory)


def rulesets_from_settings(settings: Any) -> RuleSets:
    """The rule sets of a service: `extra["rulesets_file"]` when the settings name one, else the
    shipped bindings (sla and notify read them the same way)."""
    extra = getattr(settings, "extra", None) or {}
    return load_rulesets(extra["rulesets_file"]) if extra.get("rulesets_file") else default_rulesets()


def context_from_settings(settings: Any, db=None) -> EngineContext:
    """The engine context for a service: the catalog and directory imported into `db` (MongoDB)
    when given and present, else the files named by the settings (CATALOG_FILE, DIRECTORY_FILE);
    `extra["rulesets_file"]` for another rule-set binding."""
    from pathlib import Path

    from shared.domain import catalog as catalog_mod
    from shared.domain import directory as directory_mod
    from shared.domain import workcal
    catalog = catalog_mod.CatalogStore.current_or_file(settings.catalog_file, db)
    rulesets = rulesets_from_settings(settings)
    directory_file = getattr(settings, "directory_file", None)
    directory = directory_mod.DirectoryStore(db).current() if db is not None else None
    if directory is None and directory_file and Path(directory_file).exists():
        directory = directory_mod.load_directory(directory_file)
    return EngineContext(catalog=catalog, calendars=workcal.calendar_for, rulesets=rulesets,
                         directory=directory)
