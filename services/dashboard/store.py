"""Where the dashboard reads: the sla projections (`services.sla.repository.MongoRepository`),
the notify store (`services.notify.store.NotifyStore`) and the API keys (`shared.platform.auth.KeyStore`)
of the same database. Read-only, except the acknowledgement, which goes through notify's own
`NotifyService.acknowledge` (the e-mail link's code path).

FerretDB v1.24 answers only `_id` equality without reading the whole collection, so: the
dossier page reads its dossier, findings and notify state by `_id`; the lists and reports never
query, they read the in-memory view (`view.View`), which `load()` fills with one scan per
collection and `feed.Feed` keeps current; the alerts of a dossier are found by `_id` on FerretDB
(`alerts_of`).
"""
from __future__ import annotations

import logging
import time
from collections import OrderedDict
from datetime import datetime

from pymongo import ASCENDING

from services.notify.store import NotifyStore
from services.sla.repository import MongoRepository, live_names
from shared.platform.auth import KeyStore, Principal

from .view import DOSSIER_PROJECTION, FINDING_PROJECTION, View, finding_row, row_from_doc

log = logging.getLogger("motcua.dashboard.store")
NOTIFICATION_FIELDS = {"finding_id": 1, "recipient": 1, "person": 1, "recipient_name": 1, "recipient_title": 1,
                       "role": 1, "channel": 1, "level": 1, "kind": 1, "seq": 1, "status": 1, "due_at": 1,
                       "created_at": 1, "error": 1, "attempts": 1, "failed_at": 1, "cancelled_at": 1,
                       "agency_code": 1}


class DashboardStore:
    def __init__(self, db, clock, *, key_cache_seconds: float = 5.0, doc_cache: int = 2000):
        self.db = db
        self.clock = clock
        self.notify = NotifyStore(db)
        self.keys = KeyStore(db, clock, cache_seconds=key_cache_seconds)
        self._key_cache: dict[str, tuple[float, Principal | None]] = {}
        self._key_cache_seconds = key_cache_seconds
        self._docs: OrderedDict = OrderedDict()      # (code, rev) -> dossier doc, for the late report
        self._doc_cache = doc_cache
        self._ferret: bool | None = None

    def repo(self) -> MongoRepository:
        # the pointer is re-read: `motcua rebuild` may have switched the live collections
        return MongoRepository(self.db, live_names(self.db))

    def ensure_indexes(self) -> None:
        """Indexes for the one filtered read (MongoDB uses them; FerretDB accepts and scans)."""
        self.notify.notifications.create_index([("finding_id", ASCENDING)], name="finding")

    # -- the view -------------------------------------------------------------------------------
    def load(self, view: View) -> None:
        """Fill `view` from the collections (one scan of each)."""
        t0 = time.monotonic()
        repo = self.repo()
        rows = [row_from_doc(d) for d in repo.dossiers.find({}, DOSSIER_PROJECTION)]
        findings = [finding_row(d) for d in repo.findings.find({}, FINDING_PROJECTION)]
        acked = {a["finding_id"]: a.get("at") for a in self.notify.acks.find({}, {"finding_id": 1, "at": 1})}
        view.replace_all(rows, findings, acked, self.clock.now())
        log.info("view loaded", extra={"fields": {"dossiers": len(rows), "findings": len(findings),
                                                  "seconds": round(time.monotonic() - t0, 3)}})

    def acks_since(self, since: datetime | None) -> list[dict]:
        q = {} if since is None else {"at": {"$gte": since}}
        return list(self.notify.acks.find(q, {"finding_id": 1, "at": 1}))

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

    def notify_state(self, finding_ids: list[str]) -> dict[str, dict]:
        out = {}
        for fid in finding_ids:
            d = self.notify.get_finding(fid)
            if d is not None:
                out[fid] = d
        return out

    def is_ferretdb(self) -> bool:
        if self._ferret is None:
            try:
                self._ferret = "ferretdbVersion" in self.db.client.admin.command("buildInfo")
            except Exception:   # noqa: BLE001 - unknown: take the path that works everywhere
                self._ferret = True
        return self._ferret

    def alerts_of(self, nstate: dict[str, dict], policy, directory) -> dict[str, list[dict]]:
        """The alerts sent for these findings (notify's documents by finding id), per finding.

        MongoDB: the notifications themselves (indexed on `finding_id`): every status, failures
        included. FerretDB would read the whole `notifications` collection for that, so there the
        recipients the routing policy gives each escalation level reached are looked up by `_id`
        in `notify_alerted` (written when an alert or repeat was sent): sent ones only, without
        the instant; failures stay visible in notify's API (`/v1/notifications?status=failed`)."""
        if not nstate:
            return {}
        out: dict[str, list[dict]] = {}
        if not self.is_ferretdb():
            for n in self.notify.list_notifications({"finding_id": {"$in": list(nstate)}}, 500, 0,
                                                    NOTIFICATION_FIELDS):
                n["at"] = n.get("sent_at") or n.get("failed_at") or n.get("cancelled_at") or n.get("created_at")
                out.setdefault(n["finding_id"], []).append(n)
            return out
        from services.notify.routing import recipients_for
        for fid, f in nstate.items():
            route = policy.route(f["rule"], f["severity"])
            if route.mode == "digest":
                continue
            episode = f.get("episode", 0)
            # only ids that should exist: a lookup that misses reads the whole collection on FerretDB
            kinds = ("alert", "repeat") if f.get("repeats") else ("alert",)
            for level in range(0, (f.get("level") or 0) + 1):
                ff = f
                if level == 0 and f.get("responsible_role") == "parent_head":
                    ff = dict(f, responsible_role="agency_head")     # as notify plans it
                for r in recipients_for(ff, route, policy, directory, level):
                    if r.address is None:
                        continue
                    for kind in kinds:
                        d = self.notify.alerted.find_one({"_id": f"{fid}|{episode}|{r.id}|{level}|{kind}"})
                        if d is not None:
                            out.setdefault(fid, []).append(dict(d, status="sent", at=None))
        return out

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
