"""The reference-data alarm: an event intake accepted that the engine cannot apply because of the
reference data (the agency's office is not in the offices file, an office's override file is
broken, an instant outside the years the working calendar covers).

Such an event is dead-lettered like any event the engine refuses (reason `not_applicable`), and
it is also an operational problem, never a quiet one (docs/reference-data.md, "The alarm"):
- the counter `sla_reference_data_errors_total{reason}` on the worker's /metrics;
- one ERROR log line per batch and problem (`reference data error`), codes only: no personal data;
- an ops alert in MongoDB, collection `ops_alerts`: one document per problem (reason + subject),
  with how many events it stopped, when first and last, the agencies and the last event's ids.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime

from shared.domain.workcal import CalendarConfigError, CalendarRangeError, UnknownOfficeError

log = logging.getLogger("motcua.sla")

COLLECTION = "ops_alerts"
REASONS = ("unknown_office", "calendar_config", "calendar_range")


def reference_data_problem(exc: BaseException) -> tuple[str, str] | None:
    """(reason, subject) when `exc` comes from the reference data, else None (the event itself
    is at fault: it is only dead-lettered)."""
    if isinstance(exc, UnknownOfficeError):
        return "unknown_office", exc.office
    if isinstance(exc, CalendarConfigError):
        return "calendar_config", exc.file
    if isinstance(exc, CalendarRangeError):
        return "calendar_range", "calendar years"
    return None


@dataclass(frozen=True)
class Alarm:
    """One event stopped by the reference data (codes only)."""
    reason: str
    subject: str             # the office id, the broken file, …
    error: str               # the exception's text (names the office or file, no event data)
    event_id: str
    event_type: str
    dossier_code: str
    agency_code: str


def _id(reason: str, subject: str) -> str:
    return f"sla.reference_data:{reason}:{subject}"[:512]


class OpsAlerts:
    """The `ops_alerts` collection: one document per problem, counted as events hit it."""

    def __init__(self, db):
        self.coll = db[COLLECTION]

    def record(self, alarms: list[Alarm], now: datetime) -> None:
        """Upsert one document per (reason, subject) of `alarms` (one write per problem)."""
        for (reason, subject), group in _grouped(alarms).items():
            last = group[-1]
            self.coll.update_one(
                {"_id": _id(reason, subject)},
                {"$setOnInsert": {"source": "sla", "kind": "reference_data", "reason": reason,
                                  "subject": subject, "first_seen_at": now},
                 "$set": {"last_seen_at": now, "error": last.error, "last_event_id": last.event_id,
                          "last_event_type": last.event_type, "last_dossier_code": last.dossier_code},
                 "$inc": {"events": len(group)},
                 "$addToSet": {"agency_codes": {"$each": sorted({a.agency_code for a in group})}}},
                upsert=True)

    def open(self) -> list[dict]:
        """Every recorded problem, most recent first."""
        return sorted(self.coll.find({"kind": "reference_data"}), key=lambda d: d["last_seen_at"],
                      reverse=True)


def _grouped(alarms: list[Alarm]) -> dict[tuple[str, str], list[Alarm]]:
    out: dict[tuple[str, str], list[Alarm]] = {}
    for a in alarms:
        out.setdefault((a.reason, a.subject), []).append(a)
    return out


def raise_alarms(alarms: list[Alarm], now: datetime, metrics, ops_alerts: OpsAlerts | None) -> None:
    """Count, log and record the events of a batch stopped by the reference data."""
    for a in alarms:
        metrics.reference_data_errors.labels(a.reason).inc()
    for (reason, subject), group in _grouped(alarms).items():
        log.error("reference data error: events dead-lettered", extra={"fields": {
            "reason": reason, "subject": subject, "events": len(group), "error": group[-1].error,
            "agency_codes": sorted({a.agency_code for a in group}),
            "event_ids": [a.event_id for a in group[:10]],
            "dossier_codes": sorted({a.dossier_code for a in group})[:10]}})
    if ops_alerts is None:
        return
    try:
        ops_alerts.record(alarms, now)
    except Exception:   # the metric and the log line above still carry the alarm
        log.exception("ops alert not recorded", extra={"fields": {"collection": COLLECTION}})
