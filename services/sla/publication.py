"""Publishing stored finding changes to `sla.findings`, and recording them as published.

A change is stored `pending` before it is published; once the broker acked it, it is marked
published in the held copy at once and in the store with the next "published" marks, which the
worker defers to the end of a loop turn (a crash before them only republishes the same revision).
docs/architecture.md, "Delivery".
"""
from __future__ import annotations

from typing import Iterable

from .heldstate import StateCache
from .metrics import SlaMetrics
from .repository import Repository, finding_message


class Publication:
    """Sends finding documents and keeps their "published" marks; counts the changes that a
    prepared batch will publish (`hold` / `release`) so that no other batch sends them too."""

    def __init__(self, repo: Repository, publisher, topic: str, cache: StateCache,
                 metrics: SlaMetrics, defer_marks: bool = False):
        self.repo = repo
        self.publisher = publisher
        self.topic = topic
        self.cache = cache
        self.metrics = metrics
        self.defer_marks = defer_marks          # the loop writes the marks when idle
        self._marks: list[tuple[str, int]] = []
        # (finding id, revision) -> prepared batches publishing it, not finished yet
        self.in_flight: dict[tuple[str, int], int] = {}

    def publish(self, docs: list[dict]) -> int:
        """Publish stored finding documents, wait for the acks, then record them published."""
        if not docs:
            return 0
        self.published(docs, self.send(docs))
        return len(docs)

    def republish_pending(self, *, partitions: Iterable[int] | None = None, limit: int = 10000) -> int:
        """Publish finding changes stored but not yet published (start-up, partition assignment)."""
        return self.publish(self.repo.pending_findings(partitions=partitions, limit=limit))

    def send(self, docs: list[dict]) -> list[tuple[str, int]]:
        """Publish stored finding documents and wait for the acks; (finding id, revision) of each.
        Thread-safe (the publisher only)."""
        futures = [self.publisher.send(self.topic, d["dossier_code"], finding_message(d)) for d in docs]
        for fut in futures:
            fut.get(timeout=30)
        return [(d["_id"], d["revision"]) for d in docs]

    def published(self, docs: list[dict], done: list[tuple[str, int]]) -> None:
        """Record published finding documents: deferred marks, held copies, metrics."""
        if not docs:
            return
        self._marks.extend(done)
        if not self.defer_marks:
            self.flush_marks()
        # the held copies are published now (the store follows with the marks)
        revs = dict(done)
        for code in {d["dossier_code"] for d in docs}:
            if code in self.cache.findings:
                held = self.cache.findings_of(code)
                for fid, f in held.items():
                    if revs.get(fid) == f["revision"]:
                        f["pending"], f["published_revision"] = False, f["revision"]
                self.cache.put_findings(code, list(held.values()))
        for d in docs:
            self.metrics.findings_published.labels(d.get("state", "?")).inc()

    def flush_marks(self) -> int:
        """Write the deferred "published" marks; returns how many."""
        marks, self._marks = self._marks, []
        if marks:
            try:
                self.repo.mark_published(marks)
            except Exception:
                self._marks = marks + self._marks
                raise
        return len(marks)

    def pending_marks(self) -> int:
        return len(self._marks)

    def hold(self, docs: list[dict]) -> None:
        """A prepared batch will publish these documents."""
        for d in docs:
            key = (d["_id"], d["revision"])
            self.in_flight[key] = self.in_flight.get(key, 0) + 1

    def release(self, docs: list[dict]) -> None:
        """The batch that held these documents finished or was abandoned."""
        for d in docs:
            key = (d["_id"], d["revision"])
            left = self.in_flight.get(key, 0) - 1
            if left > 0:
                self.in_flight[key] = left
            else:
                self.in_flight.pop(key, None)

    def is_in_flight(self, finding_id: str, revision: int) -> bool:
        return (finding_id, revision) in self.in_flight
