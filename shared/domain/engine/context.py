"""What the engine needs besides the events: catalog, calendars, rule sets, directory."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

from shared.domain.engine.ruledata import RuleSets, default_rulesets


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
