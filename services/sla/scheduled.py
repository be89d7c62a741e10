"""The storage order of scheduled checks: new findings first, then the dossiers.

A scheduled check of held dossiers inserts and publishes its new findings before it replaces the
dossier documents, guarded by the partitions' ownership tokens. The order, why, and its guards:
docs/architecture.md, "Scheduler".
"""
from __future__ import annotations

from datetime import datetime

from .heldstate import StateCache
from .partitions import Partitions
from .publication import Publication
from .repository import DossierWrite, FindingWrite, Repository, StaleWrite
from .scheduler import Scheduler
from .staging import remember


def store_scheduled(repo: Repository, cache: StateCache, partitions: Partitions,
                    publication: Publication, scheduler: Scheduler,
                    dossier_writes: list[DossierWrite], finding_writes: list[FindingWrite],
                    previous: dict[str, dict[str, dict]], to_publish: list[dict], held: set[int],
                    now: datetime) -> None:
    """Store and publish the checks of held dossiers: findings, publish, then dossiers."""
    partitions.ensure_owned(held)
    try:
        repo.save([], finding_writes, now)
    except StaleWrite:
        partitions.reload(held)
        raise
    remember(cache, dossier_writes, finding_writes, previous, now)
    publication.publish(to_publish)
    try:
        repo.save(dossier_writes, [], now)
    except Exception:
        partitions.reload(held)      # what we hold says written: read back what is
        raise
    for w in dossier_writes:
        scheduler.push(w.code, w.next_check_at, w.partition)
