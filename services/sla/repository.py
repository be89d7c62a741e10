"""Where the sla service keeps its projections: dossier states and findings.

Two collections, named by a pointer document so that `motcua rebuild` can build fresh ones and
switch over atomically (one document write):
- dossiers (_id = dossier code): the engine's `DossierState.to_doc()` plus bookkeeping fields
  `partition` (the Kafka partition of the dossier's key, for the scheduler), `next_check_at`,
  `rev` (optimistic concurrency between instances during a rebalance) and `updated_at`;
- findings (_id = finding id): the finding as published (DESIGN.md §7) plus `revision`
  (incremented at every change), `published_revision`, `pending` (stored but not yet published),
  `partition` and `updated_at`.

`MongoRepository` is the real adapter (MongoDB or FerretDB v1.24: no transactions, simple
queries only); `InMemoryRepository` is the fake for unit tests. Both implement `Repository`.
"""
from __future__ import annotations

import copy
import threading
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Iterable, Protocol

from shared.contracts import findings

META = "sla_meta"            # collection holding the pointer document
POINTER_ID = "live"
# FerretDB v1.24 (SQLite) holds one SQLite connection per update of a bulk until the command
# ends: a large bulk of updates exhausts its pool and the database deadlocks (docs/ferretdb.md).
# Every bulk write is therefore sent in chunks of at most this many operations.
BULK_CHUNK = 20
# Plain inserts are one insert command per chunk (one SQLite transaction on FerretDB, no pooled
# connection per document): large chunks do not deadlock and are faster than small ones.
INSERT_CHUNK = 500
BOOKKEEPING = ("_id", "partition", "next_check_at", "rev", "updated_at", "agencies", "summary", "finding_ids")


class StaleWrite(Exception):
    """Another instance changed a dossier we were writing (rebalance in flight): re-read and retry."""


@dataclass
class DossierWrite:
    code: str
    doc: dict                 # DossierState.to_doc()
    partition: int | None
    next_check_at: datetime | None
    prev_rev: int             # 0 when the dossier is new
    agencies: list[str] = field(default_factory=list)   # every agency its events named (tenancy)
    summary: dict = field(default_factory=dict)          # facts the reports need (projection.update_summary)
    finding_ids: list[str] = field(default_factory=list) # every finding this dossier ever had
    raw: bytes | None = None  # dossier_doc(self, now) as BSON, when the handler encoded it already


@dataclass
class FindingWrite:
    finding_id: str
    message: dict             # Finding.to_message() (with the state after the change)
    partition: int | None
    revision: int             # the new revision (previous + 1)
    published_revision: int = 0   # carried over from the stored finding
    new: bool = False             # not stored before: inserted (a duplicate means another writer)


@dataclass
class Names:
    dossiers: str = "dossiers"
    findings: str = "findings"


class Repository(Protocol):
    def load_dossiers(self, codes: Iterable[str]) -> dict[str, dict]: ...
    def load_findings(self, ids: Iterable[str]) -> dict[str, dict]: ...
    def save(self, dossiers: list[DossierWrite], findings: list[FindingWrite], now: datetime) -> None: ...
    def pending_findings(self, *, ids: Iterable[str] | None = None,
                         partitions: Iterable[int] | None = None, limit: int = 1000) -> list[dict]: ...
    def mark_published(self, done: list[tuple[str, int]]) -> None: ...
    def next_checks(self, partitions: Iterable[int]) -> list[tuple[str, datetime, int]]: ...
    def dossiers_in(self, partitions: Iterable[int]) -> Iterable[dict]: ...
    def claim_partitions(self, partitions: Iterable[int], token: str, now: datetime) -> None: ...
    def owners(self, partitions: Iterable[int]) -> dict[int, str | None]: ...
    def findings_in(self, partitions: Iterable[int]) -> Iterable[dict]: ...


def strip_dossier(doc: dict) -> dict:
    """The engine's part of a stored dossier document."""
    return {k: v for k, v in doc.items() if k not in BOOKKEEPING}


def finding_message(doc: dict) -> dict:
    """The message to publish for a stored finding: the fields of the findings contract
    (shared/contracts/findings.py), bookkeeping left out."""
    msg = findings.message(doc)
    msg["finding_id"] = doc["_id"]
    msg["revision"] = doc["revision"]
    return msg


def dossier_doc(w: DossierWrite, now: datetime) -> dict:
    """The stored document of a dossier write."""
    doc = dict(w.doc)
    doc.update(_id=w.code, partition=w.partition, next_check_at=w.next_check_at,
               rev=w.prev_rev + 1, updated_at=now, agencies=sorted(w.agencies),
               summary=w.summary, finding_ids=sorted(w.finding_ids))
    return doc


def stored_dossier(w: DossierWrite, now: datetime):
    """What MongoRepository sends for a dossier write: its BSON as encoded by the handler (for the
    held copy: one encoding, not two), else the document."""
    if w.raw is not None:
        from bson.raw_bson import RawBSONDocument
        return RawBSONDocument(w.raw)
    return dossier_doc(w, now)


def finding_doc(w: FindingWrite, now: datetime) -> dict:
    """The stored document of a finding change (pending until published)."""
    doc = {k: v for k, v in w.message.items() if k != "revision"}
    doc.update(_id=w.finding_id, revision=w.revision, published_revision=w.published_revision,
               pending=True, partition=w.partition, updated_at=now)
    return doc


class MongoRepository:
    """pymongo adapter. Reads return aware UTC datetimes."""

    def __init__(self, db, names: Names | None = None):
        from bson.codec_options import CodecOptions

        self.db = db
        self.names = names or Names()
        opts = CodecOptions(tz_aware=True)   # tzinfo defaults to UTC
        self.dossiers = db.get_collection(self.names.dossiers, codec_options=opts)
        self.findings = db.get_collection(self.names.findings, codec_options=opts)
        # {_id: partition, owner: token of the instance's latest assignment of it}
        self.owner_docs = db.get_collection(self.names.dossiers + "_owners", codec_options=opts)

    # -- set-up -----------------------------------------------------------------------------
    @classmethod
    def live(cls, db) -> "MongoRepository":
        """The repository on the live collections named by the pointer document."""
        return cls(db, live_names(db))

    def ensure_indexes(self) -> None:
        self.dossiers.create_index([("next_check_at", 1)], name="next_check_at")
        self.dossiers.create_index([("partition", 1), ("next_check_at", 1)], name="partition_next_check")
        self.findings.create_index([("dossier_code", 1)], name="dossier_code")
        self.findings.create_index([("pending", 1)], name="pending")
        self.findings.create_index([("state", 1), ("agency_code", 1)], name="state_agency")
        self.dossiers.create_index([("agencies", 1)], name="agencies")

    # -- the worker ---------------------------------------------------------------------------
    # Lookups go by _id, one query each: FerretDB v1.24 pushes only `_id` equality down to
    # SQLite; `$in` or any other field scans the whole collection (docs/ferretdb.md).
    def load_dossiers(self, codes):
        out = {}
        for code in dict.fromkeys(codes):
            d = self.dossiers.find_one({"_id": code})
            if d is not None:
                out[code] = d
        return out

    def load_findings(self, ids):
        out = {}
        for fid in dict.fromkeys(ids):
            d = self.findings.find_one({"_id": fid})
            if d is not None:
                out[fid] = d
        return out

    def _bulk(self, coll, ops):
        """bulk_write in chunks of BULK_CHUNK; returns (matched, upserted)."""
        matched = upserted = 0
        for i in range(0, len(ops), BULK_CHUNK):
            res = coll.bulk_write(ops[i:i + BULK_CHUNK], ordered=False)
            matched += res.matched_count
            upserted += res.upserted_count
        return matched, upserted

    @staticmethod
    def _insert_new(coll, docs: list, what: str) -> None:
        """Insert new documents in chunks of INSERT_CHUNK; a duplicate `_id` means another
        instance created one first: StaleWrite."""
        from pymongo.errors import BulkWriteError
        for i in range(0, len(docs), INSERT_CHUNK):
            try:
                coll.insert_many(docs[i:i + INSERT_CHUNK], ordered=False)
            except BulkWriteError as exc:
                if any(e.get("code") == 11000 for e in exc.details.get("writeErrors", [])):
                    raise StaleWrite(f"{what} was created by another instance") from exc
                raise

    def save(self, dossiers, findings, now):
        from pymongo import ReplaceOne

        if dossiers:
            # new dossiers are inserted (a duplicate key means another instance created it),
            # existing ones replaced only at the revision we read (optimistic concurrency)
            self._insert_new(self.dossiers, [stored_dossier(w, now) for w in dossiers if w.prev_rev == 0],
                             "a dossier")
            ops = [ReplaceOne({"_id": w.code, "rev": w.prev_rev}, stored_dossier(w, now))
                   for w in dossiers if w.prev_rev != 0]
            matched, _ = self._bulk(self.dossiers, ops)
            if matched != len(ops):
                raise StaleWrite(f"{len(ops) - matched} dossier(s) changed by another instance")
        if findings:
            # new findings are inserted (FerretDB: an upsert that inserts is far slower),
            # changed ones replaced by _id (the dossier write above was checked at its revision)
            self._insert_new(self.findings, [finding_doc(w, now) for w in findings if w.new], "a finding")
            ops = [ReplaceOne({"_id": w.finding_id}, finding_doc(w, now), upsert=True)
                   for w in findings if not w.new]
            self._bulk(self.findings, ops)

    def pending_findings(self, *, ids=None, partitions=None, limit=1000):
        q: dict[str, Any] = {"pending": True}
        if ids is not None:
            q["_id"] = {"$in": list(ids)}
        if partitions is not None:
            q["partition"] = {"$in": list(partitions)}
        return list(self.findings.find(q).sort([("updated_at", 1)]).limit(limit))

    def mark_published(self, done):
        from pymongo import UpdateOne

        if done:
            self._bulk(self.findings,
                       [UpdateOne({"_id": fid, "revision": rev},
                                  {"$set": {"pending": False, "published_revision": rev}})
                        for fid, rev in done])

    def next_checks(self, partitions):
        """(code, next_check_at, partition) of the dossiers of these partitions that have one."""
        parts = list(partitions)
        if not parts:
            return []
        return [(d["_id"], d["next_check_at"], d["partition"]) for d in self.dossiers.find(
            {"partition": {"$in": parts}, "next_check_at": {"$ne": None}},
            {"next_check_at": 1, "partition": 1})]

    # One scan of each collection per partition assignment (FerretDB reads every document for a
    # filter on `partition` anyway): the instance then holds its partitions' documents in memory.
    def dossiers_in(self, partitions):
        parts = list(partitions)
        return self.dossiers.find({"partition": {"$in": parts}}) if parts else []

    def findings_in(self, partitions):
        parts = list(partitions)
        return self.findings.find({"partition": {"$in": parts}}) if parts else []

    # Ownership tokens: written (last writer wins) when Kafka assigns partitions, read by _id
    # before the scheduler publishes findings it stored ahead of the dossier writes.
    def claim_partitions(self, partitions, token, now):
        for p in partitions:
            self.owner_docs.replace_one({"_id": p}, {"_id": p, "owner": token, "at": now}, upsert=True)

    def owners(self, partitions):
        out = {}
        for p in dict.fromkeys(partitions):
            d = self.owner_docs.find_one({"_id": p})
            out[p] = d["owner"] if d else None
        return out

    # -- the read API -------------------------------------------------------------------------
    def get_dossier(self, code: str) -> dict | None:
        return self.dossiers.find_one({"_id": code})

    def findings_of(self, code: str) -> list[dict]:
        return list(self.findings.find({"dossier_code": code}).sort([("detected_at", 1), ("_id", 1)]))


def live_names(db) -> Names:
    """The collection names the pointer document designates (defaults before any rebuild)."""
    doc = db[META].find_one({"_id": POINTER_ID})
    if not doc:
        return Names()
    return Names(dossiers=doc["dossiers"], findings=doc["findings"])


def switch_live(db, names: Names, now: datetime) -> Names:
    """Point the live pointer at `names`; returns the previous names."""
    previous = live_names(db)
    db[META].replace_one({"_id": POINTER_ID},
                         {"_id": POINTER_ID, "dossiers": names.dossiers, "findings": names.findings,
                          "switched_at": now}, upsert=True)
    return previous


class InMemoryRepository:
    """Fake repository for unit tests: same contract, dictionaries under a lock."""

    def __init__(self):
        self.dossiers: dict[str, dict] = {}
        self.findings: dict[str, dict] = {}
        self._lock = threading.Lock()
        self.fail_save_with: Exception | None = None
        self.owner_docs: dict[int, str] = {}

    def load_dossiers(self, codes):
        with self._lock:
            return {c: copy.deepcopy(self.dossiers[c]) for c in set(codes) if c in self.dossiers}

    def load_findings(self, ids):
        with self._lock:
            return {f: copy.deepcopy(self.findings[f]) for f in set(ids) if f in self.findings}

    def save(self, dossiers, findings, now):
        if self.fail_save_with is not None:
            raise self.fail_save_with
        with self._lock:
            for w in dossiers:
                cur = self.dossiers.get(w.code)
                if (cur["rev"] if cur else 0) != w.prev_rev:
                    raise StaleWrite(f"dossier {w.code} changed by another instance")
            for w in findings:
                if w.new and w.finding_id in self.findings:
                    raise StaleWrite(f"finding {w.finding_id} created by another instance")
            for w in dossiers:
                self.dossiers[w.code] = copy.deepcopy(dossier_doc(w, now))
            for w in findings:
                self.findings[w.finding_id] = copy.deepcopy(finding_doc(w, now))

    def pending_findings(self, *, ids=None, partitions=None, limit=1000):
        with self._lock:
            ids = None if ids is None else set(ids)
            parts = None if partitions is None else set(partitions)
            rows = [copy.deepcopy(d) for d in self.findings.values() if d.get("pending")
                    and (ids is None or d["_id"] in ids) and (parts is None or d["partition"] in parts)]
            return sorted(rows, key=lambda d: d["updated_at"])[:limit]

    def mark_published(self, done):
        with self._lock:
            for fid, rev in done:
                d = self.findings.get(fid)
                if d and d["revision"] == rev:
                    d["pending"] = False
                    d["published_revision"] = rev

    def next_checks(self, partitions):
        parts = set(partitions)
        with self._lock:
            return [(c, d["next_check_at"], d["partition"]) for c, d in self.dossiers.items()
                    if d.get("partition") in parts and d.get("next_check_at") is not None]

    def dossiers_in(self, partitions):
        parts = set(partitions)
        with self._lock:
            return [copy.deepcopy(d) for d in self.dossiers.values() if d.get("partition") in parts]

    def findings_in(self, partitions):
        parts = set(partitions)
        with self._lock:
            return [copy.deepcopy(d) for d in self.findings.values() if d.get("partition") in parts]

    def claim_partitions(self, partitions, token, now):
        with self._lock:
            for p in partitions:
                self.owner_docs[p] = token

    def owners(self, partitions):
        with self._lock:
            return {p: self.owner_docs.get(p) for p in partitions}

    def get_dossier(self, code):
        with self._lock:
            d = self.dossiers.get(code)
            return copy.deepcopy(d) if d else None

    def findings_of(self, code):
        # MongoRepository's order: detected_at (missing first), then _id
        with self._lock:
            rows = [copy.deepcopy(d) for d in self.findings.values() if d["dossier_code"] == code]
        return sorted(rows, key=lambda d: (d.get("detected_at") is not None,
                                           d.get("detected_at") or datetime.min, d["_id"]))
