"""Prometheus metrics of the notify worker (one registry per worker), and a collector for the
API that derives the same figures from MongoDB (so any API instance reports every worker's work)."""
from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily

LATENCY_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60, 300, 3600, 86400)


class NotifyMetrics:
    def __init__(self, registry: CollectorRegistry | None = None):
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.sent = Counter("notify_sent_total", "notifications delivered, by channel", ["channel"], registry=r)
        self.failed = Counter("notify_failed_total", "notifications failed for good, by channel", ["channel"], registry=r)
        self.retries = Counter("notify_retries_total", "send attempts that will be retried", ["channel"], registry=r)
        self.latency = Histogram("notify_delivery_latency_seconds", "planned → sent", ["channel"],
                                 buckets=LATENCY_BUCKETS, registry=r)
        self.findings = Counter("notify_findings_total", "findings messages handled", ["result"], registry=r)
        self.dead_letters = Counter("notify_dead_letters_total", "messages sent to the DLQ", ["reason"], registry=r)
        self.deferred = Gauge("notify_deferred_queue", "pending notifications waiting for their time", registry=r)


class StoreCollector:
    """Collects notify_* figures from the store at scrape time (all instances' work).

    The latency histogram is built from the most recent `sample` sent deliveries."""

    def __init__(self, store_factory, clock, sample: int = 10_000):
        self.store_factory, self.clock, self.sample = store_factory, clock, sample

    def collect(self):
        store = self.store_factory()
        sent = CounterMetricFamily("notify_store_sent", "notifications sent, by channel (from the store)", labels=["channel"])
        failed = CounterMetricFamily("notify_store_failed", "notifications failed, by channel (from the store)", labels=["channel"])
        for channel, n in sorted(store.sent_counts().items()):
            sent.add_metric([channel], n)
        for row in sorted(store.notifications.aggregate([
                {"$match": {"status": "failed"}},
                {"$group": {"_id": "$channel", "n": {"$sum": 1}}}]), key=lambda row: row["_id"]):
            failed.add_metric([row["_id"]], row["n"])
        yield sent
        yield failed
        due, deferred = store.queue_size(self.clock.now())
        g = GaugeMetricFamily("notify_pending", "notifications not yet sent (deferred: waiting for "
                              "working hours or a retry)", labels=["kind"])
        g.add_metric(["deferred"], deferred)
        g.add_metric(["due"], due)
        yield g
        h = HistogramMetricFamily("notify_store_delivery_latency_seconds",
                                  "planned → sent, last deliveries in the store", labels=["channel"])
        per: dict[str, list[float]] = {}
        for d in store.deliveries.find({"outcome": "sent"}, {"channel": 1, "latency_seconds": 1}).sort(
                "at", -1).limit(self.sample):
            if d.get("latency_seconds") is not None:
                per.setdefault(d["channel"], []).append(float(d["latency_seconds"]))
        for channel, values in sorted(per.items()):
            buckets, total = [], 0.0
            for b in LATENCY_BUCKETS:
                buckets.append((str(b), sum(1 for v in values if v <= b)))
            buckets.append(("+Inf", len(values)))
            total = sum(values)
            h.add_metric([channel], buckets, total)
        yield h
