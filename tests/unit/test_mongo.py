"""The one MongoDB client factory (shared/platform/mongo.py): the same options everywhere, and no other
`MongoClient(` in the services or shared code. Builds clients only: pymongo connects lazily."""
from __future__ import annotations

import re
import uuid
from datetime import datetime, timezone
from pathlib import Path

from bson import decode, encode
from bson.codec_options import CodecOptions

from shared.platform.config import Settings
from shared.platform.mongo import mongo_client, mongo_db

ROOT = Path(__file__).resolve().parents[2]


def _settings(**kw) -> Settings:
    return Settings.from_env({"MONGO_URI": "mongodb://127.0.0.1:1/", "MONGO_DB": "m",
                              "MONGO_TIMEOUT_MS": "700"}, **kw)


def test_clients_are_tz_aware_store_standard_uuids_and_wait_mongo_timeout_ms():
    client = mongo_client(_settings(), appname="motcua-test")
    try:
        opts = client.options
        assert opts.codec_options.tz_aware is True
        assert opts.server_selection_timeout == 0.7
        assert opts.pool_options.connect_timeout == 0.7
        # a worker's reply wait is bounded (a lost reply fails the batch, which is retried),
        # long enough for the slowest batch of a scan
        assert opts.pool_options.socket_timeout == 120.0
        assert opts.pool_options.metadata["application"]["name"] == "motcua-test"
        # standard UUIDs: a UUID round-trips through BSON as itself
        u = uuid.uuid4()
        assert decode(encode({"u": u}, codec_options=opts.codec_options),
                      codec_options=opts.codec_options)["u"] == u
        t = decode(encode({"t": datetime(2026, 1, 1, tzinfo=timezone.utc)}),
                   codec_options=CodecOptions(tz_aware=opts.codec_options.tz_aware))["t"]
        assert t.tzinfo is not None
    finally:
        client.close()


def test_request_clients_bound_socket_reads_at_least_20_s():
    client = mongo_client(_settings(), for_requests=True)
    try:
        assert client.options.pool_options.socket_timeout == 20.0
    finally:
        client.close()
    client = mongo_client(_settings(mongo_timeout_ms=30000), for_requests=True)
    try:
        assert client.options.pool_options.socket_timeout == 30.0
    finally:
        client.close()


def test_worker_socket_timeout_comes_from_the_environment():
    settings = Settings.from_env({"MONGO_WORKER_SOCKET_TIMEOUT_MS": "45000"}, mongo_uri="mongodb://127.0.0.1:1/")
    client = mongo_client(settings)
    try:
        assert client.options.pool_options.socket_timeout == 45.0
    finally:
        client.close()


def test_timeout_override_and_database_name():
    db = mongo_db(_settings(), timeout_ms=250)
    try:
        assert db.name == "m"
        assert db.client.options.server_selection_timeout == 0.25
    finally:
        db.client.close()


def test_no_other_mongo_client_in_services_or_shared():
    made = re.compile(r"\bMongoClient\(")
    found = [str(p.relative_to(ROOT)) for top in ("services", "shared") for p in (ROOT / top).rglob("*.py")
             if p.name != "mongo.py" and made.search(p.read_text(encoding="utf-8"))]
    assert found == []


def test_ping_error_names_what_failed_and_is_none_when_the_store_answers():
    from shared.platform.mongo import ping_error

    class Db:
        def __init__(self, exc=None):
            self.exc = exc

        def command(self, name):
            assert name == "ping"
            if self.exc:
                raise self.exc
            return {"ok": 1}

    assert ping_error(lambda: Db()) is None
    assert ping_error(lambda: Db(TimeoutError("x"))) == "TimeoutError"
    assert ping_error(lambda: (_ for _ in ()).throw(ValueError("bad uri"))) == "ValueError"
