"""The delivery log: every attempt in `deliveries`, successful sends recorded as sent, failures
made visible (log line, metric, the notification `failed`). docs/architecture.md, "Delivery".
"""
from __future__ import annotations

import logging
from datetime import datetime

from shared.domain.instants import stored_utc

from .store import NotifyStore

log = logging.getLogger("motcua.notify")

# what `notify_alerted` keeps of a sent alert: who got it (repeats, closing notices)
ALERTED = ("recipient", "person", "channel", "address", "agency_code", "role", "recipient_name",
           "recipient_title", "target", "level", "kind", "episode")


def log_fields(doc: dict) -> dict:
    return {"notification_id": str(doc.get("_id")), "finding_id": doc.get("finding_id"),
            "dossier_code": doc.get("dossier_code"), "recipient": doc.get("recipient"),
            "channel": doc.get("channel"), "kind": doc.get("kind"), "level": doc.get("level")}


class DeliveryLog:
    def __init__(self, store: NotifyStore, metrics=None):
        self.store = store
        self.metrics = metrics

    def count(self, what: str, *labels) -> None:
        if self.metrics is not None:
            getattr(self.metrics, what).labels(*labels).inc()

    def sent(self, sent: list[tuple[dict, datetime, float]], ids: list | None = None) -> None:
        """Successful sends (notification, accepted at, seconds spent), in few writes: the
        delivery log, who was alerted, then the notifications recorded sent. `ids`: the delivery
        log's `_id`s, fixed by a caller that retries after a failure, so that a second try
        writes each entry once (every write here may be repeated)."""
        entries = [self.entry(doc, at, "sent", None, spent) for doc, at, spent in sent]
        if ids is not None:
            for entry, _id in zip(entries, ids, strict=True):
                entry["_id"] = _id
        self.store.record_deliveries(entries)
        self.store.add_alerted_many([(doc["finding_id"], {**{k: doc.get(k) for k in ALERTED}, "at": at,
                                                         "planned_at": doc.get("created_at")})
                                     for doc, at, _ in sent if doc["kind"] in ("alert", "repeat")])
        self.store.mark_sent([{"_id": doc["_id"], "finding_id": doc["finding_id"], "channel": doc["channel"],
                               "sent_at": at, "attempts": doc.get("attempts", 0) + 1,
                               "reclaims": doc.get("reclaims", 0)} for doc, at, _ in sent])
        for doc, at, _ in sent:
            self.count("sent", doc["channel"])
            if self.metrics is not None and doc.get("created_at"):
                self.metrics.latency.labels(doc["channel"]).observe(
                    max(0.0, (at - stored_utc(doc["created_at"])).total_seconds()))
            log.info("notification sent", extra={"fields": log_fields(doc)})

    def failed(self, doc: dict, now: datetime, error: str, spent: float) -> None:
        """A notification failed for good: logged, counted, `failed` with its error."""
        self.record(doc, now, "failed", error, spent)
        self.store.finish(doc["_id"], {"status": "failed", "failed_at": now, "error": error,
                                       "attempts": doc.get("attempts", 0) + 1})
        self.count("failed", doc["channel"])
        log.error("notification failed", extra={"fields": {**log_fields(doc), "error": error}})

    def unaddressed(self, doc: dict, now: datetime) -> None:
        """A notification planned `failed` (no address on its channel): logged and counted."""
        self.record(doc, now, "failed", doc["error"], 0.0)
        self.count("failed", doc["channel"])
        log.error("notification failed: no address", extra={"fields": log_fields(doc)})

    def record(self, doc: dict, now: datetime, outcome: str, error: str | None, seconds: float) -> None:
        self.store.record_delivery(self.entry(doc, now, outcome, error, seconds))

    @staticmethod
    def entry(doc: dict, now: datetime, outcome: str, error: str | None, seconds: float) -> dict:
        return {
            "notification_id": doc.get("_id"), "finding_id": doc["finding_id"],
            "dossier_code": doc.get("dossier_code"), "agency_code": doc.get("finding_agency") or doc.get("agency_code"),
            "recipient_agency": doc.get("agency_code"), "recipient": doc["recipient"],
            "channel": doc["channel"], "kind": doc["kind"], "level": doc["level"], "at": now,
            "attempt": doc.get("attempts", 0) + (0 if outcome == "failed" and doc.get("address") is None else 1),
            "outcome": outcome, "error": error, "send_seconds": round(seconds, 6),
            "reclaimed": doc.get("reclaims", 0),   # > 0: an earlier sender crashed; maybe a duplicate
            "latency_seconds": max(0.0, (now - stored_utc(doc["created_at"])).total_seconds()) if doc.get("created_at") else None,
        }
