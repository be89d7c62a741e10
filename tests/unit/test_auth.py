"""shared.platform.auth: key store (hashed secrets), principals, fixed-window rate limit, Flask guard."""
from datetime import datetime, timedelta, timezone

import mongomock
import pytest
from flask import Flask, jsonify

from shared.platform.auth import (AuthError, KeyStore, Principal, RateLimiter, authenticate, hash_secret,
                         init_auth)
from shared.platform.clock import VirtualClock


class Tree:
    """A two-level agency tree with Directory's `within` semantics."""
    parents = {"P": None, "D1": "P", "D2": "P", "C1": "D1"}

    def within(self, code, root):
        while code is not None:
            if code == root:
                return True
            code = self.parents.get(code)
        return False


@pytest.fixture
def db():
    return mongomock.MongoClient()["t"]


@pytest.fixture
def clock():
    return VirtualClock(datetime(2024, 11, 5, 1, 0, 30, tzinfo=timezone.utc))


def test_create_stores_only_hash_and_verify_roundtrip(db, clock):
    store = KeyStore(db, clock)
    key_id, secret = store.create("D1", "counter")
    doc = db["api_keys"].find_one({"_id": key_id})
    assert doc["hash"] == hash_secret(secret) and secret not in str(doc)
    assert store.verify(secret) == Principal(key_id, "D1", "counter")
    assert store.verify(secret + "x") is None
    assert store.verify("") is None
    assert all("hash" not in k for k in store.list())
    assert [k["key_id"] for k in store.list()] == [key_id]


def test_verify_by_key_id_needs_the_whole_secret(db, clock):
    """The key id inside the secret selects the document; the hash must still match."""
    store = KeyStore(db, clock, cache_seconds=0)
    a_id, a_secret = store.create("D1", "counter")
    b_id, b_secret = store.create("D2", "admin")
    assert store.verify(a_secret) == Principal(a_id, "D1", "counter")
    assert store.verify(b_secret) == Principal(b_id, "D2", "admin")
    # key A's id with key B's random part, and a made-up id with a real random part
    assert store.verify(f"mck_{a_id}_" + b_secret.split("_", 2)[2]) is None
    assert store.verify("mck_0000000000000000_" + a_secret.split("_", 2)[2]) is None
    assert store.verify(f"mck_{a_id}_") is None
    assert store.verify("mck_") is None and store.verify("mck__x") is None


def test_verify_secret_of_another_shape_by_hash(db, clock):
    """A key stored with a secret not shaped `mck_<id>_…` (imported) is found by its hash."""
    db["api_keys"].insert_one({"_id": "imported-1", "hash": hash_secret("legacy-secret-123"),
                               "agency_code": "D1", "role": "agency", "label": "",
                               "created_at": clock.now(), "revoked_at": None})
    store = KeyStore(db, clock, cache_seconds=0)
    assert store.verify("legacy-secret-123") == Principal("imported-1", "D1", "agency")
    assert store.verify("legacy-secret-124") is None


def test_revoke(db, clock):
    store = KeyStore(db, clock)
    key_id, secret = store.create("D1", "agency")
    assert store.revoke(key_id) is True
    assert store.verify(secret) is None
    assert store.revoke(key_id) is False
    assert store.revoke("nope") is False


def test_unknown_role_rejected(db, clock):
    with pytest.raises(ValueError, match="unknown role"):
        KeyStore(db, clock).create("D1", "boss")
    assert db["api_keys"].count_documents({}) == 0


def test_subtree_access():
    tree = Tree()
    p = Principal("k", "D1", "counter")
    assert p.can_access("D1", tree) and p.can_access("C1", tree)
    assert not p.can_access("D2", tree) and not p.can_access("P", tree)
    assert Principal("k", "P", "admin").can_access("C1", tree)
    assert not p.can_access("ZZ", tree)
    with pytest.raises(AuthError) as exc:
        Principal("k", "P", "supervisor").require_role("counter", "agency")
    assert exc.value.status == 403


def test_rate_limit_fixed_window(db, clock):
    limiter = RateLimiter(db, limit=3, window_seconds=60, clock=clock)
    for _ in range(3):
        limiter.hit("k1")
    with pytest.raises(AuthError) as exc:
        limiter.hit("k1")
    assert exc.value.status == 429 and exc.value.retry_after == 30
    limiter.hit("k2")                       # other keys unaffected
    clock.advance(timedelta(seconds=30))    # next window
    limiter.hit("k1")


def test_flask_guard(db, clock):
    store = KeyStore(db, clock)
    _, secret = store.create("D1", "counter")
    app = Flask("t")
    init_auth(app, store, RateLimiter(db, limit=2, window_seconds=60, clock=clock))

    @app.get("/x")
    def x():
        try:
            p = authenticate()
        except AuthError as e:
            return jsonify(code=e.code, retry=e.retry_after), e.status
        return jsonify(agency=p.agency_code)

    c = app.test_client()
    assert c.get("/x").status_code == 401
    assert c.get("/x", headers={"Authorization": "Basic abc"}).status_code == 401
    assert c.get("/x", headers={"Authorization": "Bearer wrong"}).get_json()["code"] == "invalid_key"
    h = {"Authorization": f"Bearer {secret}"}
    assert c.get("/x", headers=h).get_json() == {"agency": "D1"}
    assert c.get("/x", headers=h).status_code == 200
    r = c.get("/x", headers=h)
    assert r.status_code == 429 and r.get_json()["retry"] == 30
