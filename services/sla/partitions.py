"""The partitions this instance holds: ownership tokens, and loading their held copy step by step.

At each assignment the instance writes a token into `<dossiers>_owners` (the last writer owns
the partition: the guard of the scheduled checks' storage order, scheduled.py), then loads the
partition's dossiers and findings in steps the loop runs between polls. docs/architecture.md,
"Held partitions", "Scheduler" and "Rebalance".
"""
from __future__ import annotations

import logging
import time
import uuid
from typing import Iterable

from .heldstate import StateCache
from .publication import Publication
from .repository import Repository, StaleWrite
from .scheduler import Scheduler

log = logging.getLogger("motcua.sla")


class Loading:
    """Partitions being loaded into the held copy (`Partitions.start`), step by step."""

    def __init__(self, partitions: list[int], steps):
        self.partitions = partitions
        self._steps = steps
        self.result: tuple[int, int] | None = None
        self.started = time.perf_counter()

    def step(self, budget_s: float) -> bool:
        """Load for about `budget_s` seconds; True once everything is loaded."""
        if self.result is not None:
            return True
        end = time.monotonic() + budget_s
        try:
            while True:
                next(self._steps)
                if time.monotonic() >= end:
                    return False
        except StopIteration as stop:
            self.result = stop.value or (0, 0)
            return True

    def cancel(self) -> None:
        self._steps.close()


class Partitions:
    """Assignment, revocation and reload of held partitions."""

    def __init__(self, repo: Repository, clock, cache: StateCache, scheduler: Scheduler,
                 publication: Publication):
        self.repo = repo
        self.clock = clock
        self.cache = cache
        self.scheduler = scheduler
        self.publication = publication
        self.tokens: dict[int, str] = {}    # held partition -> token written at its assignment

    def assign(self, partitions: Iterable[int], *, claim: bool = True) -> tuple[int, int]:
        """`start()` and load to the end. Returns (dossiers held, findings republished)."""
        loading = self.start(partitions, claim=claim)
        while not loading.step(3600.0):
            pass
        return loading.result

    def start(self, partitions: Iterable[int], *, claim: bool = True) -> Loading:
        """Hold newly assigned partitions: record this instance as their latest owner (`claim`),
        then load their dossiers and findings (one scan of each collection), index their next
        checks and publish what was stored but never published, in steps (`Loading.step()`)."""
        parts = sorted(set(partitions))
        if parts and claim:
            token = uuid.uuid4().hex
            self.repo.claim_partitions(parts, token, self.clock.now())
            self.tokens.update({p: token for p in parts})
        self.cache.drop(parts)
        for p in parts:
            self.cache.docs[p] = {}
        return Loading(parts, self._load_steps(parts))

    def _load_steps(self, parts: list[int]):
        """Generator behind `Loading`: yields every few hundred documents, returns
        (dossiers held, findings republished)."""
        if not parts:
            return 0, 0
        n = 0
        for d in self.repo.dossiers_in(parts):
            p = d.get("partition")
            if p not in self.cache.docs:
                continue
            self.cache.put_dossier(p, d)
            self.scheduler.push(d["_id"], d.get("next_check_at"), p)
            n += 1
            if n % 200 == 0:
                yield
        by_code: dict[str, list[dict]] = {}
        pending: list[dict] = []
        for i, f in enumerate(self.repo.findings_in(parts)):
            if f.get("partition") in self.cache.docs:
                by_code.setdefault(f["dossier_code"], []).append(f)
                if f.get("pending"):
                    pending.append(f)
            if i % 500 == 499:
                yield
        for code, docs in by_code.items():
            self.cache.put_findings(code, docs)
        pending.sort(key=lambda d: d["updated_at"])
        return n, self.publication.publish(pending)

    def forget(self, partitions: Iterable[int]) -> None:
        """Revoked: drop what is held for these partitions (the new owner reloads from the store)."""
        gone = set(partitions)
        for p in gone:
            self.tokens.pop(p, None)
        self.cache.drop(gone)
        self.scheduler.forget(gone)

    def reload(self, partitions: set[int]) -> None:
        """Re-read held partitions from the store (ownership unchanged)."""
        if partitions:
            tokens = {p: self.tokens.get(p) for p in partitions}
            self.forget(partitions)
            self.tokens.update({p: t for p, t in tokens.items() if t})
            self.assign(partitions, claim=False)

    def ensure_owned(self, partitions: set[int]) -> None:
        """StaleWrite (and the partitions dropped) if another instance was assigned any of them
        since this one was."""
        owners = self.repo.owners(sorted(partitions))
        lost = {p for p in partitions if owners.get(p) != self.tokens.get(p)}
        if lost:
            log.warning("partitions owned by another instance", extra={"fields": {"partitions": sorted(lost)}})
            self.forget(lost)
            raise StaleWrite(f"partitions {sorted(lost)} were assigned to another instance")
