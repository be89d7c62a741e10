"""Prometheus metrics of the sla worker. One registry per worker (tests build many workers)."""
from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram


class SlaMetrics:
    def __init__(self, registry: CollectorRegistry | None = None):
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.events_applied = Counter("sla_events_applied_total", "events applied to dossier states", registry=r)
        self.dead_letters = Counter("sla_dead_letters_total", "messages sent to the dead-letter topic",
                                    ["reason"], registry=r)
        self.reference_data_errors = Counter(
            "sla_reference_data_errors_total",
            "events dead-lettered because the reference data cannot apply them (alarms.py)",
            ["reason"], registry=r)
        self.findings_published = Counter("sla_findings_published_total", "finding changes published",
                                          ["state"], registry=r)
        self.dossiers_checked = Counter("sla_scheduled_checks_total",
                                        "dossiers evaluated because their next_check_at passed", registry=r)
        self.detection_lag = Histogram(
            "sla_detection_lag_seconds", "now - next_check_at when a scheduled check runs",
            buckets=(0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60, 300), registry=r)
        self.batch_seconds = Histogram("sla_batch_seconds", "time to handle one poll's batch",
                                       buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10), registry=r)
        self.consumer_lag = Gauge("sla_consumer_lag", "end offset - position, per assigned partition",
                                  ["topic", "partition"], registry=r)
        self.stale_retries = Counter("sla_stale_write_retries_total",
                                     "batches re-read because another instance wrote first", registry=r)
