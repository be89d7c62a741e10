"""A batch is stored and sent in chunks (services.intake.service._Run): same answers and order as
one piece, nothing sent after a failed send, and a store failure after a chunk was sent answers
the rest 503 (nothing of theirs sent) while the sent ones keep their 202."""
import json
import threading

import pytest
from pymongo.errors import AutoReconnect

from services.intake import service
from services.intake.store import IntakeStore
from shared.platform.messaging import InMemoryBus

from helpers.intake import COMMUNE, DEPT, NOW, TOPIC, Env, ev  # noqa: F401


class SendingBus(InMemoryBus):
    """InMemoryBus whose n-th `send` raises (a full producer buffer)."""

    def __init__(self):
        super().__init__()
        self.sends = 0
        self.fail_send_at: int | None = None

    def send(self, topic, key, value, headers=None):
        self.sends += 1
        if self.sends == self.fail_send_at:
            raise TimeoutError("buffer full")
        return super().send(topic, key, value, headers)


def make_env(bus):
    env = Env()
    env.bus = bus
    env.app.extensions["intake"]["service"]._publisher = lambda: bus
    return env


@pytest.fixture(autouse=True)
def small_chunks(monkeypatch):
    monkeypatch.setattr(service, "CHUNK", 3)


def batch(env, events, h):
    return env.post({"events": events}, h, "/v1/events:batch")


@pytest.mark.parametrize("bus", [InMemoryBus, SendingBus])
def test_chunks_publish_everything_in_order_with_the_same_answers(bus):
    env = make_env(bus())
    h = env.key()
    old = ev(dossier_code="HS-0")
    assert env.post(old, h).status_code == 202
    events = [ev(dossier_code=f"HS-{k % 3}") for k in range(10)]
    events.insert(4, old)                                     # already published: 200
    events.insert(7, dict(events[2]))                         # same id twice in the batch: 200
    events.insert(9, ev(agency_code="999.99.99.H99"))         # invalid: 422
    events.insert(11, dict(events[0], dossier_code="HS-X"))   # same id, other body: 409
    r = batch(env, events, h).get_json()
    statuses = [x["status"] for x in r["results"]]
    assert statuses == [202, 202, 202, 202, 200, 202, 202, 200, 202, 422, 202, 409, 202, 202]
    assert r["accepted"] == 12
    sent = [m.value["event_id"] for m in env.published()][1:]
    fresh = [e["event_id"] for k, e in enumerate(events) if statuses[k] == 202]
    assert sent == fresh                                      # input order, each once
    store = IntakeStore(env.db)
    assert all(store.get(eid)["status"] == "published" for eid in fresh)
    stored = {d["_id"]: d["message"] for d in env.db["intake_events"].find() if "message" in d}
    for m in env.published():                     # the stored text is the message sent
        assert m.value == json.loads(stored[m.value["event_id"]])


def test_nothing_is_sent_after_a_failed_send_and_a_retry_completes():
    bus = SendingBus()
    env = make_env(bus)
    h = env.key()
    events = [ev(dossier_code=f"HS-{k % 2}") for k in range(10)]
    bus.fail_send_at = 5
    r = batch(env, events, h)
    assert r.headers["Retry-After"]
    results = r.get_json()["results"]
    assert [x["status"] for x in results] == [202] * 4 + [503] * 6
    assert {x["errors"][0]["code"] for x in results[4:]} == {"broker_unavailable"}
    assert [m.value["event_id"] for m in env.published()] == [e["event_id"] for e in events[:4]]
    store = IntakeStore(env.db)
    states = [(store.get(e["event_id"]) or {}).get("status") for e in events]
    assert states[:4] == ["published"] * 4
    assert set(states[4:]) <= {"pending", None}     # stored or not (once stopped), never published
    bus.fail_send_at = None
    again = batch(env, events, h).get_json()["results"]
    assert [x["status"] for x in again] == [200 if s else 202 for s in states]
    assert [m.value["event_id"] for m in env.published()] == [e["event_id"] for e in events]


def test_store_failure_after_a_sent_chunk_answers_the_rest_503(monkeypatch):
    env = make_env(SendingBus())
    h = env.key()
    real = IntakeStore.insert_pending
    calls = {"n": 0}
    lock = threading.Lock()

    def flaky(self, docs):
        with lock:
            calls["n"] += 1
            n = calls["n"]
        if n >= 2:
            raise AutoReconnect("connection refused")
        return real(self, docs)
    monkeypatch.setattr(IntakeStore, "insert_pending", flaky)
    events = [ev(dossier_code=f"HS-{k}") for k in range(8)]
    r = batch(env, events, h)
    results = r.get_json()["results"]
    assert [x["status"] for x in results] == [202] * 3 + [503] * 5
    assert {x["errors"][0]["code"] for x in results[3:]} == {"store_unavailable"}
    assert r.headers["Retry-After"]
    assert [m.value["event_id"] for m in env.published()] == [e["event_id"] for e in events[:3]]
    monkeypatch.setattr(IntakeStore, "insert_pending", real)
    again = batch(env, events, h).get_json()["results"]
    assert [x["status"] for x in again] == [200] * 3 + [202] * 5
    assert len(env.published()) == 8


def test_store_failure_before_anything_was_sent_is_a_503_for_the_request(monkeypatch):
    env = make_env(SendingBus())
    h = env.key()

    def down(self, docs):
        raise AutoReconnect("connection refused")
    monkeypatch.setattr(IntakeStore, "insert_pending", down)
    r = batch(env, [ev() for _ in range(7)], h)
    assert r.status_code == 503 and r.get_json()["errors"][0]["code"] == "store_unavailable"
    assert env.published() == []


def test_message_bytes_are_encoded_once_and_the_same_on_a_retry():
    from services.intake.service import canonical, message_bytes
    wire = {"event_id": "e-1", "type": "dossier.returned", "dossier_code": "HS-1",
            "data": {"z": 1, "a": ["Nguyễn", {"y": None, "b": True}]}}
    value = dict(wire, recorded_at="2024-11-05T01:20:00+00:00")
    first = message_bytes(value, canonical(wire))
    assert first == message_bytes(value)                    # rebuilt from the stored value
    assert json.loads(first) == value and list(json.loads(first))[-1] == "recorded_at"
    assert "Nguyễn".encode() in first                       # UTF-8 kept, as shared.platform.messaging.encode


def test_batch_counts_accepted_events_per_label():
    env = make_env(SendingBus())
    h = env.key()
    old = ev()
    assert env.post(old, h).status_code == 202
    r = batch(env, [ev(), old, ev(), ev(agency_code="999.99.99.H99")], h).get_json()
    assert [x["status"] for x in r["results"]] == [202, 200, 202, 422]
    m = env.client.get("/metrics").get_data(as_text=True)
    assert 'intake_events_accepted_total{replay="false"} 3.0' in m    # 1 single + 2 in the batch
    assert 'intake_events_accepted_total{replay="true"} 1.0' in m


@pytest.mark.parametrize("published", [False, True])
def test_documents_stored_before_the_message_field_are_still_answered_and_republished(published):
    """Older documents carry the message as the sub-document `value` (no `message`)."""
    from services.intake.service import body_hash
    from shared.contracts.events import to_wire, validate_event
    bus = SendingBus()
    env = make_env(bus)
    h = env.key()
    e = ev()
    wire = to_wire(validate_event(e)[0])
    value = dict(wire, recorded_at="2024-11-04T09:00:00+00:00")   # declared order, as then written
    env.db["intake_events"].insert_one({
        "_id": e["event_id"], "hash": body_hash(wire), "status": "pending",
        "dossier_code": e["dossier_code"], "agency_code": e["agency_code"], "type": e["type"],
        "key_id": "old", "recorded_at": NOW, "value": value})
    if published:
        env.db["intake_published"].insert_one({"_id": e["event_id"], "topic": TOPIC, "partition": 0,
                                               "offset": 41, "published_at": NOW})
    r = env.post(e, h)
    assert r.status_code == 200 and r.get_json()["duplicate"] is True
    assert r.get_json()["recorded_at"] == "2024-11-04T09:00:00+00:00"
    if published:
        assert r.get_json()["offset"] == 41 and env.published() == []
    else:
        [msg] = env.published()
        assert msg.value == value
    assert env.post(dict(e, dossier_code="HS-OTHER"), h).status_code == 409
    got = env.client.get(f"/v1/events/{e['event_id']}", headers=h).get_json()
    assert got["status"] == "published" and got["recorded_at"] == value["recorded_at"]
