"""Batch staging: a prepared batch's documents go into the held copy at once, with an undo log.

`prepare()` applies a batch in memory and the held copy takes its new documents before they are
stored, so the next batch can be prepared while this one is written (docs/architecture.md,
"Pipelined writes and commits"). If the write fails before anything was stored, `undo` puts the
held documents back.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

from .heldstate import StateCache
from .projection import Rejected
from .repository import DossierWrite, FindingWrite, dossier_doc, finding_doc

_ABSENT = object()      # in an undo entry: nothing was held


@dataclass
class Pending:
    """A batch applied in memory (`SlaHandler.prepare`) whose store write and publish are to do."""
    rejected: list[Rejected]
    dossiers: list[DossierWrite]
    findings: list[FindingWrite]
    to_publish: list[dict]          # stored finding documents to publish after the write
    now: datetime
    held: set                       # held partitions it writes
    undo: list                      # previous held copies (`undo()`)
    items: int = 0                  # messages in the batch (dead-letter accounting)
    stored: bool = False            # the store write completed
    done: list = field(default_factory=list)   # (finding id, revision) published


def remember(cache: StateCache, dossiers: list[DossierWrite], findings: list[FindingWrite],
             previous: dict[str, dict[str, dict]], now: datetime, undo: list | None = None) -> None:
    """Keep the held copies in step with what is stored (or about to be: `undo` receives
    (partition, code, previous dossier, previous findings) for each held dossier replaced).
    Held copies are BSON: instants are kept at the store's millisecond precision."""
    import bson

    by_code: dict[str, list[FindingWrite]] = {}
    for f in findings:
        by_code.setdefault(f.message["dossier_code"], []).append(f)
    for w in dossiers:
        if not cache.holds(w.partition):
            continue
        if undo is not None:
            undo.append((w.partition, w.code, cache.docs[w.partition].get(w.code, _ABSENT),
                         cache.findings.get(w.code, _ABSENT)))
        doc = dossier_doc(w, now)
        w.raw = bson.encode(doc)        # the store write sends these bytes as they are
        cache.put_dossier(w.partition, doc, w.raw)
        if w.code in by_code or w.code in cache.findings:
            held = dict(previous.get(w.code) or {})
            for f in by_code.get(w.code, ()):
                held[f.finding_id] = finding_doc(f, now)
            cache.put_findings(w.code, list(held.values()))


def undo(cache: StateCache, entries: list) -> None:
    """Put back the held copies a prepared batch replaced (newest change first). A finding
    recorded as published since keeps that mark (it went out with an earlier batch)."""
    for p, code, old_doc, old_findings in reversed(entries):
        part = cache.docs.get(p)
        if part is None:
            continue                # dropped since (revoked): nothing held to put back
        if old_doc is _ABSENT:
            part.pop(code, None)
        else:
            part[code] = old_doc
        cur = cache.findings.get(code)
        if old_findings is _ABSENT:
            cache.findings.pop(code, None)
            continue
        cache.findings[code] = old_findings
        if cur is not None and cur is not old_findings:
            sent = {d["_id"]: d["revision"] for d in cache.decode(cur)["f"] if not d.get("pending")}
            docs = cache.decode(old_findings)["f"]
            flip = [d for d in docs if d.get("pending") and sent.get(d["_id"]) == d["revision"]]
            for d in flip:
                d["pending"], d["published_revision"] = False, d["revision"]
            if flip:
                cache.put_findings(code, docs)
