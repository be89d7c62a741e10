"""Intake benchmarks (on demand: `pytest tests/perf/test_intake_perf.py -m perf -s`).

(a) single-event POST /v1/events through gunicorn (services/intake/gunicorn.conf.py) against a
    bare Flask endpoint that only parses the same JSON, served by the same gunicorn config:
    requests/s, p50, p99, with the same client concurrency;
(b) batch ingest (POST /v1/events:batch, 500 per batch) events/s against a raw kafka-python
    producer sending the same messages with the same acks=all + idempotence, then flushing.

Uses the real broker and MongoDB-wire server (fixtures of tests/conftest.py), a unique topic
and database. Figures are printed side by side; the assertions only check that every request
succeeded (no figures are asserted: the machine is shared).
"""
from __future__ import annotations

import json
import os
import socket
import statistics
import subprocess
import sys
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import requests
import yaml

pytestmark = pytest.mark.perf

ROOT = Path(__file__).resolve().parents[2]
GUNICORN_CONF = ROOT / "services" / "intake" / "gunicorn.conf.py"
DEPT = "000.00.17.H56"
N_SINGLE = int(os.environ.get("INTAKE_PERF_SINGLE", "1500"))
N_BATCHES = int(os.environ.get("INTAKE_PERF_BATCHES", "10"))
CONCURRENCY = int(os.environ.get("INTAKE_PERF_CLIENTS", "8"))


def bare_app():
    """Baseline: a Flask endpoint that only parses the JSON body."""
    from flask import Flask, request

    app = Flask("bare")

    @app.post("/v1/events")
    def post():
        body = json.loads(request.get_data())
        return {"event_id": body.get("event_id")}, 202
    return app


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _event(i: int, run: str) -> dict:
    from services.intake.openapi import example_event
    e = example_event("dossier.received")
    e["event_id"] = str(uuid.uuid4())
    e["dossier_code"] = f"PERF-{run}-{i % 97}"
    return e


class Gunicorn:
    def __init__(self, app_spec: str, env: dict, log: Path):
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        full_env = {**os.environ, **env, "INTAKE_BIND": f"127.0.0.1:{self.port}",
                    "PYTHONPATH": f"{ROOT}:{Path(__file__).parent}"}
        self.log = open(log, "wb")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "gunicorn", "-c", str(GUNICORN_CONF), app_spec],
            cwd=ROOT, env=full_env, stdout=self.log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                if requests.get(self.url + "/healthz", timeout=1).status_code in (200, 404):
                    return
            except requests.RequestException:
                time.sleep(0.2)
        self.stop()
        raise RuntimeError(f"gunicorn did not start: see {log}")

    def stop(self):
        self.proc.terminate()
        try:
            self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        self.log.close()


def _load(url: str, bodies: list[dict], headers: dict) -> tuple[float, list[float], list[int]]:
    local = __import__("threading").local()

    def one(body):
        s = getattr(local, "s", None) or requests.Session()
        local.s = s
        t0 = time.perf_counter()
        r = s.post(url, data=json.dumps(body), headers={**headers, "Content-Type": "application/json"})
        return time.perf_counter() - t0, r.status_code

    t0 = time.perf_counter()
    with ThreadPoolExecutor(CONCURRENCY) as pool:
        results = list(pool.map(one, bodies))
    wall = time.perf_counter() - t0
    return wall, [r[0] for r in results], [r[1] for r in results]


def _pct(xs: list[float], p: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(p * len(xs)))] * 1000


@pytest.fixture
def intake_server(kafka_bootstrap, mongo_uri, mongo_db, topics, tmp_path):
    from shared.platform.auth import KeyStore
    topic = topics("events", partitions=3)["events"]
    dfile = tmp_path / "directory.yaml"
    dfile.write_text(yaml.safe_dump([{"code": DEPT, "name": "Sở Tư pháp", "parent": None}],
                                    allow_unicode=True), encoding="utf-8")
    env = {"KAFKA_BOOTSTRAP_SERVERS": kafka_bootstrap, "MONGO_URI": mongo_uri,
           "MONGO_DB": mongo_db.name, "TOPIC_EVENTS": topic, "DIRECTORY_FILE": str(dfile),
           "INTAKE_RATE_LIMIT": "1000000"}
    key = KeyStore(mongo_db).create(DEPT, "counter")[1]
    server = Gunicorn("services.intake.app:create_app()", env, tmp_path / "intake.log")
    yield server, {"Authorization": f"Bearer {key}"}, topic, kafka_bootstrap
    server.stop()


def test_single_event_post_vs_bare_flask(intake_server, tmp_path):
    server, auth, _, _ = intake_server
    run = uuid.uuid4().hex[:6]
    warm = [_event(i, run) for i in range(50)]
    _load(server.url + "/v1/events", warm, auth)
    bodies = [_event(i, run) for i in range(N_SINGLE)]
    wall, lat, codes = _load(server.url + "/v1/events", bodies, auth)
    assert set(codes) == {202}, {c: codes.count(c) for c in set(codes)}

    bare = Gunicorn("test_intake_perf:bare_app()", {}, tmp_path / "bare.log")
    try:
        _load(bare.url + "/v1/events", warm, {})
        bwall, blat, bcodes = _load(bare.url + "/v1/events", bodies, {})
    finally:
        bare.stop()
    assert set(bcodes) == {202}
    print(f"\n(a) single-event POST, {N_SINGLE} requests, {CONCURRENCY} client threads, "
          f"gunicorn {os.environ.get('INTAKE_WORKERS', '2')} workers × "
          f"{os.environ.get('INTAKE_THREADS', '8')} threads")
    print(f"    {'':28} {'req/s':>9} {'p50 ms':>9} {'p99 ms':>9}")
    print(f"    {'intake (Kafka acks=all+Mongo)':28} {N_SINGLE / wall:9.1f} {_pct(lat, .5):9.2f} {_pct(lat, .99):9.2f}")
    print(f"    {'bare Flask (parse JSON only)':28} {N_SINGLE / bwall:9.1f} {_pct(blat, .5):9.2f} {_pct(blat, .99):9.2f}")


def test_batch_ingest_vs_raw_producer(intake_server):
    server, auth, topic, bootstrap = intake_server
    run = uuid.uuid4().hex[:6]
    batches = [[_event(b * 500 + i, run) for i in range(500)] for b in range(N_BATCHES)]
    s = requests.Session()
    s.post(server.url + "/v1/events:batch", json={"events": [_event(i, run) for i in range(50)]},
           headers=auth)   # warm-up: producer and Mongo connections
    t0 = time.perf_counter()
    accepted = 0
    for batch in batches:
        r = s.post(server.url + "/v1/events:batch", json={"events": batch}, headers=auth, timeout=60)
        assert r.status_code == 200
        accepted += r.json()["accepted"]
    wall = time.perf_counter() - t0
    n = N_BATCHES * 500
    assert accepted == n

    from kafka import KafkaProducer
    producer = KafkaProducer(bootstrap_servers=bootstrap.split(","), acks="all",
                             enable_idempotence=True, linger_ms=0)
    values = [json.dumps(e, ensure_ascii=False).encode() for b in batches for e in b]
    keys = [e["dossier_code"].encode() for b in batches for e in b]
    producer.send(topic, key=b"warm", value=b"{}").get(timeout=10)
    t0 = time.perf_counter()
    for b in range(N_BATCHES):
        futures = [producer.send(topic, key=keys[b * 500 + i], value=values[b * 500 + i])
                   for i in range(500)]
        for f in futures:
            f.get(timeout=30)         # same contract: every batch acknowledged before the next
    rwall = time.perf_counter() - t0
    producer.close()
    print(f"\n(b) batch ingest, {N_BATCHES} batches × 500 events, one client, sequential batches")
    print(f"    {'':34} {'events/s':>10} {'s/batch':>9}")
    print(f"    {'intake POST /v1/events:batch':34} {n / wall:10.0f} {wall / N_BATCHES:9.3f}")
    print(f"    {'raw kafka-python (acks=all, idem.)':34} {n / rwall:10.0f} {rwall / N_BATCHES:9.3f}")
