"""API keys, tenancy and per-key rate limits, shared by the intake, sla and notify APIs.

Public API (DESIGN.md §10):

```python
store = KeyStore(db, clock)                  # db: a pymongo Database (MongoDB or FerretDB)
key_id, secret = store.create("000.00.17.H56", "counter")   # the secret is shown once
principal = store.verify(secret)             # Principal | None (None: unknown or revoked)
store.revoke(key_id) -> bool; store.list() -> list[dict]     # list() never returns hashes

init_auth(app, store, limiter=None)          # once per Flask app
principal = authenticate(request)            # in a view: 401 / 429 as ApiError (shared.platform.httpapi)
principal.can_access(agency_code, directory) # agency inside the key's subtree?
principal.require_role("counter", "agency", "admin")   # 403 otherwise
```

Storage: collection `api_keys`, one document per key: `_id` = key id (public, 16 hex chars),
`hash` = hex SHA-256 of the secret (unique index), `agency_code`, `role`, `created_at`,
`revoked_at`. The secret is `mck_<key id>_<43 chars of token_urlsafe(32)>`: 256 random bits,
so a plain SHA-256 (no salt, no slow KDF) is enough — there is nothing to brute-force. The key
id inside the secret is only informative; verification looks up the hash.

Roles: `counter` (a one-stop counter: posts events), `agency` (a handling agency: posts events,
reads its subtree), `supervisor` (reads and acknowledges for its subtree, posts nothing),
`admin` (everything inside its subtree; a key bound to the root agency sees the whole province).

Rate limit: a fixed-window counter per key in collection `rate_limits` (`_id` =
`<key id>:<window start epoch>`), incremented atomically with `find_one_and_update(upsert)`, so
the limit holds across gunicorn workers and instances sharing the database. The first hit of a
new window deletes that key's older windows (no TTL index: windows follow the injected clock).
`RateLimiter(..., sync_seconds=S)` counts in process and syncs the shared count at most every
S seconds (and on every hit near the limit): one MongoDB round trip per S seconds instead of one
per request, with the overshoot bound given in the class docstring.
"""
from __future__ import annotations

import hashlib
import hmac
import secrets
import threading
import time
from dataclasses import dataclass
from typing import Any

from shared.platform.clock import Clock, SystemClock

ROLES = ("counter", "agency", "supervisor", "admin")
WRITE_ROLES = ("counter", "agency", "admin")     # may post dossier events
KEYS_COLLECTION = "api_keys"
RATE_COLLECTION = "rate_limits"
SECRET_PREFIX = "mck_"


class AuthError(Exception):
    """Authentication/authorisation failure; `status` is 401, 403 or 429."""

    def __init__(self, status: int, code: str, message: str, retry_after: int | None = None):
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.retry_after = retry_after


def hash_secret(secret: str) -> str:
    """Hex SHA-256 of an API key secret (what is stored)."""
    return hashlib.sha256(secret.encode("utf-8")).hexdigest()


@dataclass(frozen=True)
class Principal:
    """Who is calling: the key, the agency subtree it is bound to, and its role."""
    key_id: str
    agency_code: str
    role: str

    def can_access(self, agency_code: str, directory) -> bool:
        """True when `agency_code` is the key's agency or one of its descendants.

        `directory` is a `shared.domain.directory.Directory`; an agency unknown to it is never accessible
        (except when it is the key's own agency code).
        """
        if agency_code == self.agency_code:
            return True
        if directory is None:
            return False
        return bool(directory.within(agency_code, self.agency_code))

    def can_write(self) -> bool:
        return self.role in WRITE_ROLES

    def require_role(self, *roles: str) -> None:
        """Raise AuthError(403) unless the key has one of `roles`."""
        if self.role not in roles:
            raise AuthError(403, "forbidden_role",
                            f"role {self.role!r} may not do this (allowed: {', '.join(roles)})")


class KeyStore:
    """API keys in MongoDB, stored hashed. `cache_seconds` > 0 caches verified keys per process
    (a revoked key then keeps working for at most that long)."""

    def __init__(self, db, clock: Clock | None = None, cache_seconds: float = 0.0):
        self.coll = db[KEYS_COLLECTION]
        self.clock = clock or SystemClock()
        self.cache_seconds = cache_seconds
        self._cache: dict[str, tuple[float, Principal | None]] = {}
        self._lock = threading.Lock()
        self._indexed = False

    def ensure_indexes(self) -> None:
        if not self._indexed:
            self.coll.create_index("hash", unique=True, name="hash_unique")
            self._indexed = True

    def create(self, agency_code: str, role: str, label: str = "") -> tuple[str, str]:
        """Create a key bound to `agency_code`'s subtree with `role`; returns (key_id, secret)."""
        if role not in ROLES:
            raise ValueError(f"unknown role {role!r}: expected one of {', '.join(ROLES)}")
        if not agency_code or not isinstance(agency_code, str):
            raise ValueError("an agency code is required")
        self.ensure_indexes()
        key_id = secrets.token_hex(8)
        secret = f"{SECRET_PREFIX}{key_id}_{secrets.token_urlsafe(32)}"
        self.coll.insert_one({
            "_id": key_id, "hash": hash_secret(secret), "agency_code": agency_code, "role": role,
            "label": label, "created_at": self.clock.now(), "revoked_at": None,
        })
        return key_id, secret

    def verify(self, secret: str) -> Principal | None:
        """The principal of a valid, unrevoked key, else None."""
        if not secret or not isinstance(secret, str) or len(secret) > 200:
            return None
        digest = hash_secret(secret)
        if self.cache_seconds > 0:
            with self._lock:
                hit = self._cache.get(digest)
            if hit and hit[0] > time.monotonic():
                return hit[1]
        doc = self._lookup(secret, digest)
        principal = None
        if doc is not None and doc.get("revoked_at") is None:
            principal = Principal(doc["_id"], doc["agency_code"], doc["role"])
        if self.cache_seconds > 0:
            with self._lock:
                if len(self._cache) > 10_000:
                    self._cache.clear()
                self._cache[digest] = (time.monotonic() + self.cache_seconds, principal)
        return principal

    def _lookup(self, secret: str, digest: str) -> dict | None:
        """The key document of `secret`: by `_id` (the key id is part of the secret:
        `mck_<key_id>_<random>`), the hash compared in constant time. An `_id` lookup is a
        primary-key read on FerretDB; a query on `hash` reads the whole collection there.
        Secrets of another shape fall back to the hash index."""
        if secret.startswith(SECRET_PREFIX):
            key_id, sep, _ = secret[len(SECRET_PREFIX):].partition("_")
            if sep and key_id:
                doc = self.coll.find_one({"_id": key_id})
                if doc is not None and hmac.compare_digest(doc.get("hash", ""), digest):
                    return doc
                return None
        return self.coll.find_one({"hash": digest})

    def revoke(self, key_id: str) -> bool:
        """Revoke a key; False when there is no such (unrevoked) key."""
        res = self.coll.update_one({"_id": key_id, "revoked_at": None},
                                   {"$set": {"revoked_at": self.clock.now()}})
        with self._lock:
            self._cache.clear()
        return res.modified_count == 1

    def list(self) -> list[dict]:
        """Every key (without its hash), oldest first."""
        out = []
        for doc in self.coll.find({}, {"hash": 0}).sort("created_at", 1):
            doc["key_id"] = doc.pop("_id")
            out.append(doc)
        return out


class RateLimiter:
    """Fixed-window request counter per key, shared through MongoDB.

    `sync_seconds` = 0 (the default): every hit is one atomic `$inc` in MongoDB, exact across
    processes. `sync_seconds` = S > 0: each process counts locally and adds its count to the
    shared document at most every S seconds (monotonic time), on the first hit of each window,
    and on every hit once the shared count it last saw plus its own unflushed hits is within
    the margin `max(10, limit // 10)` of the limit (near the limit every hit is exact again, so
    limits of 10 or less are always exact). A 429 is always decided on a fresh shared count.
    Bound: a key exceeds its limit only by the hits the *other* processes admitted and have not
    flushed yet — each at most S seconds' worth, and at most `limit − margin` — so with P
    processes each admitting at most r requests/s for the key, by at most
    (P − 1) × min(r × S, limit − margin) requests per window; with one process, never.
    """

    def __init__(self, db, limit: int, window_seconds: int = 60, clock: Clock | None = None,
                 sync_seconds: float = 0.0):
        if limit < 1 or window_seconds < 1:
            raise ValueError("rate limit and window must be positive")
        if sync_seconds < 0:
            raise ValueError("rate limit sync interval must not be negative")
        self.coll = db[RATE_COLLECTION]
        self.limit = limit
        self.window = window_seconds
        self.clock = clock or SystemClock()
        self.sync_seconds = sync_seconds
        self.margin = max(10, limit // 10)
        # key id -> [window start, shared count last seen, unflushed local hits, last sync]
        self._local: dict[str, list] = {}
        self._lock = threading.Lock()

    def hit(self, key_id: str, cost: int = 1) -> None:
        """Count `cost` requests for `key_id`; AuthError(429) with retry_after when over the limit."""
        now = self.clock.now()
        epoch = int(now.timestamp())
        start = epoch - epoch % self.window
        if self.sync_seconds > 0:
            with self._lock:
                st = self._local.get(key_id)
                if st is None or st[0] != start:          # new window (unflushed old hits expire)
                    if len(self._local) > 10_000:
                        self._local.clear()
                    st = self._local[key_id] = [start, 0, 0, float("-inf")]
                if (st[1] + st[2] + cost <= self.limit - self.margin
                        and time.monotonic() - st[3] < self.sync_seconds):
                    st[2] += cost                          # well under the limit: count locally
                    return
                add, st[2] = st[2] + cost, 0               # flush the local hits with this one
                st[3] = time.monotonic()
            try:
                count = self._add(key_id, start, add)
            except Exception:
                with self._lock:                           # not counted: keep them, retry next hit
                    if self._local.get(key_id) is st:
                        st[2] += add - cost
                        st[3] = float("-inf")
                raise
            with self._lock:
                if self._local.get(key_id) is st:
                    st[1] = max(st[1], count)
            first = count == add
        else:
            count = self._add(key_id, start, cost)
            first = count == cost
        if first:                   # first hit of a new window: drop this key's old windows
            self.coll.delete_many({"key_id": key_id, "start": {"$lt": start}})
        if count > self.limit:
            retry = max(1, start + self.window - epoch)
            raise AuthError(429, "rate_limited",
                            f"rate limit of {self.limit} requests per {self.window} s exceeded",
                            retry_after=retry)

    def _add(self, key_id: str, start: int, n: int) -> int:
        """Atomically add `n` to the key's window count; the count after the addition."""
        from pymongo import ReturnDocument
        from pymongo.errors import DuplicateKeyError

        for attempt in range(2):
            try:
                doc = self.coll.find_one_and_update(
                    {"_id": f"{key_id}:{start}"},
                    {"$inc": {"count": n}, "$set": {"key_id": key_id, "start": start}},
                    upsert=True, return_document=ReturnDocument.AFTER)
                return doc["count"]
            except DuplicateKeyError:   # two first hits of a window raced on the upsert
                if attempt:
                    raise
        raise AssertionError("unreachable")


# --- Flask glue -------------------------------------------------------------------------------

_EXT = "motcua.auth"


def init_auth(app, store: KeyStore | Any, limiter: RateLimiter | None = None) -> None:
    """Attach a key store (and optionally a rate limiter) to a Flask app.

    `store` and `limiter` may also be zero-argument callables returning them, so that apps can
    build their database connection lazily (after gunicorn forks).
    """
    app.extensions[_EXT] = {"store": store, "limiter": limiter}


def _resolve(obj):
    return obj() if callable(obj) and not isinstance(obj, (KeyStore, RateLimiter)) else obj


def bearer_secret(request) -> str | None:
    header = request.headers.get("Authorization", "")
    scheme, _, value = header.partition(" ")
    if scheme.lower() != "bearer" or not value.strip():
        return None
    return value.strip()


def authenticate(request=None, *, cost: int = 1) -> Principal:
    """The principal of the request's `Authorization: Bearer KEY`.

    Raises AuthError 401 (missing/invalid/revoked key) or 429 (rate limit, with retry_after);
    `cost` counts a batch as several requests. Database errors propagate (the app maps them to 503).
    """
    from flask import current_app, g
    from flask import request as flask_request

    request = request or flask_request
    ext = current_app.extensions.get(_EXT)
    if ext is None:
        raise RuntimeError("init_auth(app, store) was not called")
    secret = bearer_secret(request)
    if secret is None:
        raise AuthError(401, "unauthenticated", "missing API key: send 'Authorization: Bearer KEY'")
    principal = _resolve(ext["store"]).verify(secret)
    if principal is None:
        raise AuthError(401, "invalid_key", "invalid or revoked API key")
    g.principal = principal
    limiter = _resolve(ext["limiter"]) if ext["limiter"] is not None else None
    if limiter is not None:
        limiter.hit(principal.key_id, cost)
    return principal


__all__ = ["ROLES", "WRITE_ROLES", "AuthError", "Principal", "KeyStore", "RateLimiter",
           "hash_secret", "init_auth", "authenticate", "bearer_secret"]
