"""Where the dashboard reads: the sla projections (`services.sla.repository.MongoRepository`),
the notify store (`services.notify.store.NotifyStore`) and the API keys (`shared.platform.auth.KeyStore`)
of the same database. Read-only, except the acknowledgement, which goes through notify's own
`NotifyService.acknowledge` (the e-mail link's code path).

FerretDB v1.24 reads a collection row by row for every filter, `_id` equality included (a
lookup stops at its document, one that misses reads the whole collection): so the lists and
reports never query, they read the in-memory view (`view.View`), which `load()` fills with one
scan per collection and `feed.Feed` keeps current; the dossier page reads its dossier and
findings by `_id` and notify's side of them from the view (`alerts.Alerts`), never from notify's
collections, whose ids it cannot know (notifications) or which may miss (a finding notify has
not stored yet).
"""
from __future__ import annotations

import logging
import time
from collections import OrderedDict
from datetime import datetime

from services.notify.changes import FINDING_FIELDS, NOTIFICATION_FIELDS, PublishingStore
from services.sla.repository import MongoRepository, live_names
from shared.platform.auth import KeyStore, Principal

from .view import DOSSIER_PROJECTION, FINDING_PROJECTION, View, finding_row, row_from_doc

log = logging.getLogger("motcua.dashboard.store")
NOTIFY_FINDING_PROJECTION = dict.fromkeys(FINDING_FIELDS, 1)
NOTIFICATION_PROJECTION = dict.fromkeys((*NOTIFICATION_FIELDS, "finding_id", "sent_at", "failed_at", "cancelled_at"), 1)


class DashboardStore:
    def __init__(self, db, clock, *, key_cache_seconds: float = 5.0, doc_cache: int = 2000,
                 on_change=None):
        """`on_change(key, message)`: told what this process's own notify writes change (the
        acknowledgements made here), as notify's worker publishes its own (changes.py)."""
        self.db = db
        self.clock = clock
        self.notify = PublishingStore(db, on_change or (lambda key, msg: None))
        self.keys = KeyStore(db, clock, cache_seconds=key_cache_seconds)
        self._key_cache: dict[str, tuple[float, Principal | None]] = {}
        self._key_cache_seconds = key_cache_seconds
        self._docs: OrderedDict = OrderedDict()      # (code, rev) -> dossier doc, for the late report
        self._doc_cache = doc_cache

    def repo(self) -> MongoRepository:
        # the pointer is re-read: `motcua rebuild` may have switched the live collections
        return MongoRepository(self.db, live_names(self.db))

    # -- the view -------------------------------------------------------------------------------
    def load(self, view: View) -> None:
        """Fill `view` from the collections (one scan of each)."""
        t0 = time.monotonic()
        repo = self.repo()
        rows = [row_from_doc(d) for d in repo.dossiers.find({}, DOSSIER_PROJECTION)]
        findings = [finding_row(d) for d in repo.findings.find({}, FINDING_PROJECTION)]
        n = self.notify
        acks = list(n.acks.find({}, {"_id": 0}))
        notes = list(n.notifications.find({}, NOTIFICATION_PROJECTION))
        view.alerts.replace_all(list(n.findings.find({}, NOTIFY_FINDING_PROJECTION)), notes, acks)
        acked = {a["finding_id"]: a.get("at") for a in acks}
        view.replace_all(rows, findings, acked, self.clock.now())
        log.info("view loaded", extra={"fields": {"dossiers": len(rows), "findings": len(findings),
                                                  "notifications": len(notes),
                                                  "seconds": round(time.monotonic() - t0, 3)}})

    def acks_since(self, since: datetime | None) -> list[dict]:
        q = {} if since is None else {"at": {"$gte": since}}
        return list(self.notify.acks.find(q, {"_id": 0}))

    # -- one dossier ------------------------------------------------------------------------------
    def dossier(self, code: str) -> dict | None:
        return self.repo().get_dossier(code)

    def dossier_cached(self, code: str, rev: int) -> dict | None:
        """The dossier document at revision `rev` (an LRU of recent reads: the late report reads
        the same finished dossiers again and again)."""
        key = (code, rev)
        doc = self._docs.get(key)
        if doc is not None:
            self._docs.move_to_end(key)
            return doc
        doc = self.dossier(code)
        if doc is not None and doc.get("rev", 0) == rev:
            self._docs[key] = doc
            if len(self._docs) > self._doc_cache:
                self._docs.popitem(last=False)
        return doc

    def findings_of(self, doc: dict) -> list[dict]:
        found = self.repo().load_findings(doc.get("finding_ids", ()))
        return sorted(found.values(), key=lambda d: (str(d.get("detected_at") or ""), d["_id"]))

    # -- sign-in ------------------------------------------------------------------------------------
    def principal_of(self, key_id: str) -> Principal | None:
        """The principal of a signed-in session's key, None once the key is revoked (checked by
        `_id`, cached for a few seconds like `KeyStore.verify`)."""
        hit = self._key_cache.get(key_id)
        if hit and hit[0] > time.monotonic():
            return hit[1]
        doc = self.keys.coll.find_one({"_id": key_id}, {"hash": 0})
        p = None
        if doc is not None and doc.get("revoked_at") is None:
            p = Principal(doc["_id"], doc["agency_code"], doc["role"])
        if len(self._key_cache) > 10_000:
            self._key_cache.clear()
        self._key_cache[key_id] = (time.monotonic() + self._key_cache_seconds, p)
        return p
