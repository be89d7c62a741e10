"""The one MongoDB client factory: the APIs, the workers, rebuild and the CLI connect through it.

Every client reads instants back as aware UTC datetimes (`tz_aware`), writes UUIDs in the standard
binary form, and waits at most MONGO_TIMEOUT_MS (`Settings.mongo_timeout_ms`) to find and connect
to the server, so a store that is down is reported rather than waited on. Clients that serve HTTP
requests (`for_requests=True`) also bound each socket read, so a request ends in a 503 instead of
hanging on a store that stopped answering. The other clients (workers, rebuild, CLI) bound a
socket read by MONGO_WORKER_SOCKET_TIMEOUT_MS, long enough for the slowest batch of a scan: a
reply lost by a paused or restarted store then fails the operation, which the worker retries,
instead of holding its partitions (and its consumer group's rebalance) forever.
"""
from __future__ import annotations

# a socket read of an API waits at least this long: a slow report is not an outage
REQUEST_SOCKET_TIMEOUT_MIN_MS = 20000


def mongo_options(timeout_ms: int, *, worker_socket_timeout_ms: int,
                  for_requests: bool = False) -> dict:
    """The keyword arguments of every `MongoClient` of the system (see the module docstring)."""
    opts = {"tz_aware": True, "uuidRepresentation": "standard",
            "serverSelectionTimeoutMS": timeout_ms, "connectTimeoutMS": timeout_ms}
    if for_requests:
        opts["socketTimeoutMS"] = max(timeout_ms, REQUEST_SOCKET_TIMEOUT_MIN_MS)
    else:
        opts["socketTimeoutMS"] = max(timeout_ms, worker_socket_timeout_ms)
    return opts


def mongo_client(settings, *, appname: str | None = None, for_requests: bool = False,
                 timeout_ms: int | None = None):
    """A `MongoClient` for `settings.mongo_uri`; connects lazily, on its first operation.
    `timeout_ms` overrides `settings.mongo_timeout_ms` (health probes)."""
    from pymongo import MongoClient

    ms = settings.mongo_timeout_ms if timeout_ms is None else timeout_ms
    return MongoClient(settings.mongo_uri, appname=appname, **mongo_options(
        ms, for_requests=for_requests,
        worker_socket_timeout_ms=settings.mongo_worker_socket_timeout_ms))


def mongo_db(settings, **kwargs):
    """The database `settings.mongo_db` on a new client (`mongo_client` keywords)."""
    return mongo_client(settings, **kwargs)[settings.mongo_db]


def lazy_db(settings, db=None, **kwargs):
    """A `Lazy` of `db` when given (tests), else of `mongo_db(settings, **kwargs)`: a service's
    database, built on first use, once per process (after a gunicorn fork)."""
    from shared.platform.runtime import Lazy
    return Lazy(lambda: db if db is not None else mongo_db(settings, **kwargs))


def ping_error(get_db) -> str | None:
    """For a readiness check: None when the database `get_db()` returns answers a ping, else the
    error's class name (building the client counts as reaching the store)."""
    try:
        get_db().command("ping")
        return None
    except Exception as exc:   # noqa: BLE001 - reported, not raised
        return exc.__class__.__name__
