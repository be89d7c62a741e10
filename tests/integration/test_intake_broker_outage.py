"""The broker dies mid-run: intake never answers 2xx for an event that is not on the topic, and no
accepted event is lost after the broker comes back.

A PRIVATE Kafka broker is started for this test only (shared.dev.infra, its own state directory
under tmp_path and free ports; the shared dev stack is never touched). Intake runs behind a real
HTTP server (werkzeug, threaded) against that broker and a unique MongoDB database. A client
thread posts events in a loop; the broker process is SIGKILLed by its pid mid-run; requests get
503 + Retry-After; the broker is restarted on the same data directory and ports; every failed
event is retried with the same event_id and body until accepted; finally the topic is read from
the beginning and every event that ever got a 2xx (and every retried one) must be on it, at the
partition/offset its 2xx answer reported.
"""
from __future__ import annotations

import json
import logging
import os
import signal
import threading
import time
import uuid
from dataclasses import dataclass

import pytest
import requests

from services.intake.app import create_app
from services.intake.openapi import example_event
from shared.dev import supervisor
from shared.dev.health import kafka_healthy
from shared.dev.infra import start_kafka
from shared.dev.stackconfig import StackConfig
from shared.platform.auth import KeyStore
from shared.domain.catalog import default_catalog
from shared.domain.directory import directory_from_records
from shared.platform.messaging import ensure_topics, kafka_consumer

from helpers.intake import DEPT, directory_records
from helpers.net import WsgiServer

PUBLISH_TIMEOUT_S = 2


@dataclass
class Attempt:
    event_id: str
    body: dict
    sent: float         # time.monotonic() when the request was sent
    answered: float
    status: int         # HTTP status, 0 when the request itself failed
    headers: dict
    json: dict | None


@pytest.fixture
def private_kafka(tmp_path):
    """A single-node KRaft broker of our own (only Kafka: no FerretDB, no SMTP), stopped by pid."""
    cfg = StackConfig(name="outage", local_dir=tmp_path / "stack",
                      kafka_port=supervisor.free_port_pair(),
                      mongo_port=supervisor.free_port_pair(),
                      smtp_port=supervisor.free_port_pair())
    for d in (cfg.pid_dir, cfg.log_dir, cfg.data_dir, cfg.config_dir):
        d.mkdir(parents=True, exist_ok=True)
    try:
        start_and_wait(cfg)
        yield cfg
    finally:
        supervisor.stop(cfg, "kafka", timeout=10)


def start_and_wait(cfg, timeout: float = 90.0) -> None:
    assert start_kafka(cfg), "the private broker was already running"
    # right after the fork /proc/<pid>/cmdline can be briefly unreadable, and wait_healthy would
    # take that for an early exit: wait until the pid file's process is visible first
    deadline = time.monotonic() + 5
    while supervisor.read_pid(cfg, "kafka") is None and time.monotonic() < deadline:
        time.sleep(0.05)
    supervisor.wait_healthy(cfg, "kafka", lambda: kafka_healthy(cfg.kafka_bootstrap, 2.0), timeout)


def kill_broker(cfg) -> int:
    """SIGKILL the private broker (its process group: started with start_new_session) by pid."""
    pid = supervisor.read_pid(cfg, "kafka")
    assert pid, "the private broker is not running"
    os.killpg(pid, signal.SIGKILL)
    # the JVM's threads exit one by one after the leader turns zombie: wait for the listener
    # to be gone, not only for the pid
    deadline = time.monotonic() + 10
    while (supervisor.read_pid(cfg, "kafka") is not None
           or supervisor.port_open(cfg.host, cfg.kafka_port, 0.2)) and time.monotonic() < deadline:
        supervisor.reap(pid)
        time.sleep(0.05)
    assert supervisor.read_pid(cfg, "kafka") is None, "the broker survived SIGKILL"
    assert not supervisor.port_open(cfg.host, cfg.kafka_port), "the broker still listens"
    return pid


class Server(WsgiServer):
    """The intake app behind a real HTTP server in a thread."""

    def __init__(self, app):
        self.app = app
        super().__init__(app)

    def close(self):
        super().close()
        self.app.extensions["intake"]["resources"].close()


def new_event(i: int, run: str) -> dict:
    e = example_event("dossier.received")
    e["event_id"] = str(uuid.uuid4())
    e["dossier_code"] = f"OUTAGE-{run}-{i % 5}"
    return e


def post(session, url, auth, body) -> Attempt:
    t0 = time.monotonic()
    try:
        r = session.post(url + "/v1/events", data=json.dumps(body), timeout=PUBLISH_TIMEOUT_S + 10,
                         headers={**auth, "Content-Type": "application/json"})
        return Attempt(body["event_id"], body, t0, time.monotonic(), r.status_code, dict(r.headers),
                       r.json())
    except requests.RequestException:
        return Attempt(body["event_id"], body, t0, time.monotonic(), 0, {}, None)


def read_topic(bootstrap: str, topic: str, expected_ids: set[str], timeout: float = 30) -> dict:
    """event_id -> [(partition, offset)] of every record on the topic, from the beginning."""
    consumer = kafka_consumer(bootstrap, [topic], f"outage-check-{uuid.uuid4().hex[:8]}",
                              session_timeout_ms=6000, heartbeat_interval_ms=1000)
    seen: dict[str, list[tuple[int, int]]] = {}
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline and not expected_ids <= set(seen):
            for records in consumer.poll(timeout_ms=500).values():
                for rec in records:
                    eid = json.loads(rec.value)["event_id"]
                    assert dict(rec.headers)["event_id"].decode() == eid
                    seen.setdefault(eid, []).append((rec.partition, rec.offset))
        # a last poll: catch anything beyond the expected set (duplicates are allowed, losses not)
        for records in consumer.poll(timeout_ms=1000).values():
            for rec in records:
                seen.setdefault(json.loads(rec.value)["event_id"], []).append((rec.partition, rec.offset))
    finally:
        consumer.close()
    return seen


def test_broker_killed_mid_run_no_2xx_without_publish_and_nothing_lost(private_kafka, mongo_uri, mongo_db):
    t_start = time.monotonic()
    cfg = private_kafka
    topic = f"test.outage.events.{uuid.uuid4().hex[:10]}"
    ensure_topics(cfg.kafka_bootstrap, {topic: 3})
    app = create_app({"TESTING": True, "KAFKA_BOOTSTRAP_SERVERS": cfg.kafka_bootstrap,
                      "MONGO_URI": mongo_uri, "MONGO_DB": mongo_db.name, "TOPIC_EVENTS": topic,
                      "CATALOG": default_catalog(), "DIRECTORY": directory_from_records(directory_records()),
                      "INTAKE_PUBLISH_TIMEOUT_S": str(PUBLISH_TIMEOUT_S), "INTAKE_RATE_LIMIT": "1000000"})
    auth = {"Authorization": "Bearer " + KeyStore(mongo_db).create(DEPT, "counter")[1]}
    server = Server(app)
    run = uuid.uuid4().hex[:6]
    attempts: list[Attempt] = []
    lock = threading.Lock()
    stop = threading.Event()

    def client_loop():
        session = requests.Session()
        i = 0
        while not stop.is_set():
            a = post(session, server.url, auth, new_event(i, run))
            with lock:
                attempts.append(a)
            i += 1
            time.sleep(0.02)

    def count(pred) -> int:
        with lock:
            return sum(1 for a in attempts if pred(a))

    publish_errors: list[str] = []       # why publishes failed (diagnostics only)

    class Errors(logging.Handler):
        def emit(self, record):
            fields = getattr(record, "fields", None) or {}
            if "error" in fields:
                publish_errors.append(f"{time.monotonic() - t_start:.1f}s {fields['error'][:160]}")
    handler = Errors(logging.WARNING)
    logging.getLogger("motcua.intake").addHandler(handler)

    def wait_for(pred, n, timeout, what):
        deadline = time.monotonic() + timeout
        while count(pred) < n:
            assert time.monotonic() < deadline, \
                f"timed out waiting for {what}: {count(pred)}/{n}; last publish errors: {publish_errors[-4:]}"
            time.sleep(0.05)

    client = threading.Thread(target=client_loop, daemon=True)
    client.start()
    try:
        wait_for(lambda a: a.status == 202, 20, 30, "20 accepted events before the outage")
        kill_broker(cfg)
        t_killed = time.monotonic()
        wait_for(lambda a: a.sent > t_killed and a.status == 503, 3, 30, "3 refusals during the outage")
        t_restart = time.monotonic()
        start_and_wait(cfg)
        t_back = time.monotonic()
        # the client keeps going until intake accepts new events again
        wait_for(lambda a: a.sent > t_back and a.status == 202, 5, 30, "5 accepted events after restart")
    finally:
        stop.set()
        client.join(timeout=PUBLISH_TIMEOUT_S + 15)
        logging.getLogger("motcua.intake").removeHandler(handler)

    try:
        assert all(a.status in (202, 503) for a in attempts), \
            {a.status for a in attempts if a.status not in (202, 503)}
        refused = [a for a in attempts if a.status == 503]
        assert refused, "the outage produced no 503"
        for a in refused:
            assert a.headers.get("Retry-After", "").isdigit(), a.headers
            assert a.json["errors"][0]["code"] == "broker_unavailable"
        # sent after the broker was dead and answered before it was restarted: never accepted
        during = [a for a in attempts if a.sent > t_killed and a.answered < t_restart]
        assert during and all(a.status == 503 for a in during), [a.status for a in during]

        # the client retries every refused event with the same id and body until accepted
        session = requests.Session()
        retried: dict[str, Attempt] = {}
        deadline = time.monotonic() + 30
        for a in refused:
            while True:
                r = post(session, server.url, auth, a.body)
                if r.status in (200, 202):
                    retried[a.event_id] = r
                    break
                assert r.status == 503 and time.monotonic() < deadline, (r.status, r.json)
                time.sleep(0.5)
            # a retry of an event that never reached Kafka is answered 200 (seen before), with
            # the position of the publish it just made
            assert r.status == 200 and r.json["duplicate"] is True and r.json["status"] == "published"

        accepted = {a.event_id: a for a in attempts if a.status == 202}
        accepted.update(retried)
        on_topic = read_topic(cfg.kafka_bootstrap, topic, set(accepted))
        lost = sorted(set(accepted) - set(on_topic))
        assert not lost, f"{len(lost)} accepted events are not on the topic: {lost[:5]}"
        for eid, a in accepted.items():
            # the 2xx reported where the event is; it is there (the same record)
            assert (a.json["partition"], a.json["offset"]) in on_topic[eid], (eid, a.json, on_topic[eid])
        # nothing on the topic that intake never accepted (a refused event may appear before
        # its retry only if the ack was lost, and then it was retried and accepted anyway)
        assert set(on_topic) <= set(accepted)
        # GET agrees: every accepted event is recorded as published
        for eid in list(retried)[:3]:
            got = requests.get(f"{server.url}/v1/events/{eid}", headers=auth, timeout=10).json()
            assert got["status"] == "published"
        print(f"\nbroker outage: {len(accepted)} accepted ({len(retried)} after retries), "
              f"{len(refused)} refusals, {sum(len(v) for v in on_topic.values())} records on the topic, "
              f"outage {t_back - t_killed:.1f} s, test {time.monotonic() - t_start:.1f} s")
    finally:
        server.close()
