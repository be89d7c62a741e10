"""The sla API's consumer-group lag metric: a cached, time-bounded background read (never a
Kafka call on the scrape)."""
from __future__ import annotations

from datetime import datetime, timezone

import mongomock

from shared.platform.clock import VirtualClock
from shared.platform.config import Settings
from shared.domain.directory import directory_from_records
from services.sla.api import create_app

NOW = datetime(2024, 11, 30, 3, 0, tzinfo=timezone.utc)


def test_metrics_scrape_answers_at_once_while_the_lag_read_hangs(monkeypatch):
    """The app's /metrics is wired to the background read: a Kafka that never answers (a lag
    read that hangs) does not hold up a scrape. The same against a real unreachable broker is
    in tests/integration/test_sla_api_metrics.py."""
    import threading
    import time

    from services.sla import api

    release, started = threading.Event(), threading.Event()

    def hung(settings, group):
        started.set()
        release.wait(30)
        raise ConnectionError("no broker")

    monkeypatch.setattr(api, "consumer_lag", hung)
    before = set(threading.enumerate())
    settings = Settings.from_env({"KAFKA_BOOTSTRAP_SERVERS": "127.0.0.1:1"})
    app = create_app({"SETTINGS": settings, "DIRECTORY": directory_from_records([]), "CATALOG": []},
                     db=mongomock.MongoClient(tz_aware=True)["t"], clock=VirtualClock(NOW))
    client = app.test_client()
    try:
        for _ in range(2):
            t0 = time.perf_counter()
            r = client.get("/metrics")
            assert r.status_code == 200 and time.perf_counter() - t0 < 1.0
            assert "sla_consumer_group_lag{" not in r.data.decode()    # no read has succeeded
        assert started.wait(5)                                        # the read did start
    finally:
        release.set()
    for th in [t for t in threading.enumerate() if t.name == "sla-api-lag" and t not in before]:
        th.join(5)
        assert not th.is_alive()


def test_group_lag_is_a_cached_time_bounded_read():
    from services.sla.api import GroupLag

    now, reads, result = [100.0], [], [{("dossier.events", 0): 5}]

    def read():
        reads.append(now[0])
        if isinstance(result[0], Exception):
            raise result[0]
        return dict(result[0])

    lag = GroupLag(read, refresh_s=15, max_age_s=120, monotonic=lambda: now[0], start=lambda fn: fn())
    assert lag.snapshot() is None and reads == [100.0]       # read started; nothing to report yet
    now[0] = 101.0
    assert lag.snapshot() == ({("dossier.events", 0): 5}, 1.0) and reads == [100.0]
    now[0] = 115.0
    result[0] = {("dossier.events", 0): 7}
    assert lag.snapshot() == ({("dossier.events", 0): 5}, 15.0) and reads == [100.0, 115.0]
    now[0] = 116.0
    assert lag.snapshot() == ({("dossier.events", 0): 7}, 1.0)
    result[0] = ConnectionError("broker down")
    now[0] = 200.0
    assert lag.snapshot() == ({("dossier.events", 0): 7}, 85.0)   # failed read: last good one kept
    now[0] = 236.0
    assert lag.snapshot() is None and reads[-1] == 236.0          # older than max_age: not reported


def test_group_lag_starts_one_read_at_a_time_and_never_waits_for_it():
    import threading
    from services.sla.api import GroupLag

    release, calls = threading.Event(), []

    def slow_read():
        calls.append(1)
        release.wait(10)
        return {("dossier.events", 0): 1}

    done = threading.Event()

    def start(fn):
        threading.Thread(target=lambda: (fn(), done.set()), daemon=True).start()

    lag = GroupLag(slow_read, refresh_s=0, start=start)
    assert lag.snapshot() is None
    assert lag.snapshot() is None                 # the first read still runs: no second one
    release.set()
    assert done.wait(10)
    assert len(calls) == 1 and lag.snapshot()[0] == {("dossier.events", 0): 1}
