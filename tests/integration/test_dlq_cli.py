"""`motcua dlq show|redrive` on a real broker, with the sla and notify workers dead-lettering for
real (sla with the small engine of tests/helpers/sla.py, notify on the real store)."""
from __future__ import annotations

import json
import threading
import uuid

import pytest

from helpers.net import delete_topics
from helpers.sla_stack import FAST, Running, consume
from helpers.sla import T0, event

from shared import cli
from shared.platform.clock import VirtualClock
from shared.contracts.deadletter import original_bytes
from shared.platform.messaging import KafkaPublisher, encode

pytestmark = pytest.mark.integration
PHONE, CCCD = "0912345678", "079200001111"


@pytest.fixture
def motcua(settings, monkeypatch, capsys):
    """`motcua …` in process on this test's topics: (exit code, stdout lines)."""
    monkeypatch.setenv("KAFKA_BOOTSTRAP_SERVERS", settings.kafka_bootstrap_servers)
    monkeypatch.setenv("TOPIC_EVENTS", settings.topic_events)
    monkeypatch.setenv("TOPIC_FINDINGS", settings.topic_findings)

    def run(*argv):
        capsys.readouterr()
        rc = cli.main(["dlq", *argv])
        out = capsys.readouterr()
        return rc, out.out.splitlines(), out.err
    yield run
    delete_topics(settings.kafka_bootstrap_servers, [settings.topic_findings + ".dlq"])


def shown(motcua, *argv):
    rc, lines, err = motcua("show", "--json", "--limit", "100", *argv)
    assert rc == 0, err
    return [json.loads(ln) for ln in lines if ln.startswith("{")], lines


def test_sla_dead_letters_redacted_redriven_by_selection_and_never_duplicated(settings, motcua):
    w = Running(settings, VirtualClock(T0), "g-" + uuid.uuid4().hex[:6])
    pub = KafkaPublisher(settings.kafka_bootstrap_servers)
    dlq = settings.topic_events_dlq
    try:
        # an applicant's data under keys the contract does not know, straight to the topic
        pub.publish(settings.topic_events, "C-1", dict(event("C-1"), data=dict(
            event("C-1")["data"], applicant={"kind": "citizen", "name": "Nguyễn Văn A",
                                             "phone_number": PHONE, "cccd": CCCD})))
        pub.publish(settings.topic_events, "C-2", event("C-2", "dossier.withdrawn"))   # not_applicable
        pub.publish(settings.topic_events, "C-3", [PHONE])                            # a bare phone
        pub.publish(settings.topic_events, "C-4", b"\xff\xfe not json")               # invalid_json
        consume(settings, dlq, lambda rs: len(rs) >= 4)

        rows, lines = shown(motcua)
        text = "\n".join(lines)
        assert PHONE not in text and CCCD not in text
        assert sorted((r["origin"]["key"], r["reason"], r["status"]) for r in rows) == [
            ("C-1", "invalid_event", "pending"), ("C-2", "not_applicable", "pending"),
            ("C-3", "invalid_event", "pending"), ("C-4", "invalid_json", "pending")]
        c1 = next(r for r in rows if r["origin"]["key"] == "C-1")
        assert c1["value"]["data"]["applicant"] == {"kind": "citizen", "name": "Nguyễn Văn A",
                                                    "phone_number": "***", "cccd": "***"}
        assert next(r for r in rows if r["origin"]["key"] == "C-3")["value"] == ["***"]
        rc, lines, _ = motcua("show")                     # the text form too
        assert rc == 0 and PHONE not in "\n".join(lines) and CCCD not in "\n".join(lines)

        # selection, dry run: names what would go, publishes nothing
        rc, lines, _ = motcua("redrive", "--reason", "not_applicable", "--dry-run")
        assert rc == 0 and lines[-1] == "would redrive 1 message(s)" and "key=C-2" in lines[0]
        rc, lines, _ = motcua("redrive", "--key", "C-3", "--key", "C-4", "--dry-run")
        assert lines[-1] == "would redrive 2 message(s)"
        # the order of the dead letters depends on which partition the worker polled first
        expected = sum(1 for r in rows if r["dlq_offset"] in (1, 2) and r["reason"] == "invalid_event")
        rc, lines, _ = motcua("redrive", "--offsets", "1-2", "--reason", "invalid_event", "--dry-run")
        assert lines[-1] == f"would redrive {expected} message(s)" if expected else \
            lines == [f"no dead letters in {dlq} matching the selection"]
        assert len(consume(settings, dlq, lambda rs: len(rs) >= 4)) == 4

        # redrive one by key: it fails again, and is still one pending entry, not two
        rc, lines, _ = motcua("redrive", "--key", "C-1")
        assert rc == 0 and lines[-1] == "redrove 1 message(s)"
        consume(settings, dlq, lambda rs: len(rs) >= 6)   # its redrive marker and its new dead letter
        rows, _ = shown(motcua)
        assert sorted(r["origin"]["key"] for r in rows) == ["C-1", "C-2", "C-3", "C-4"]
        again = next(r for r in rows if r["origin"]["key"] == "C-1")
        assert again["redriven_from"] == {"partition": c1["dlq_partition"], "offset": c1["dlq_offset"]}
        every, _ = shown(motcua, "--all")
        assert sorted(r["status"] for r in every) == ["pending"] * 4 + ["redriven"]
        rc, lines, _ = motcua("redrive", "--offsets", str(c1["dlq_offset"]))
        assert rc == 0 and lines == [f"no dead letters in {dlq} matching the selection"]

        # everything at once, every cause still there: as many pending entries as before
        rc, lines, _ = motcua("redrive")
        assert rc == 0 and lines[-1] == "redrove 4 message(s)"
        consume(settings, dlq, lambda rs: len(rs) >= 14)
        rows, _ = shown(motcua)
        assert sorted(r["origin"]["key"] for r in rows) == ["C-1", "C-2", "C-3", "C-4"]
        assert all(r["redriven_from"] for r in rows)
        binary = next(r for r in rows if r["origin"]["key"] == "C-4")
        assert binary["value"] == "<binary, 11 bytes>"
        raw = [v for _, v in consume(settings, dlq, lambda rs: len(rs) >= 14)
               if v.get("origin", {}).get("key") == "C-4"]
        assert {original_bytes(v) for v in raw} == {b"\xff\xfe not json"}
    finally:
        w.stop()
        pub.close()


def test_notify_dead_letters_keep_their_bytes_and_the_cli_covers_them(settings, motcua):
    from pymongo import MongoClient
    from services.notify.channels import FakeChannel
    from services.notify.worker import build_worker
    from helpers.notify import finding

    db = MongoClient(settings.mongo_uri, tz_aware=True)[settings.mongo_db + "_notify"]
    worker = build_worker(settings, VirtualClock(T0), db=db, group_id="n-" + uuid.uuid4().hex[:6],
                          consumer_config=FAST, channels={"email": FakeChannel("email")})
    thread = threading.Thread(target=worker.run, daemon=True)
    thread.start()
    pub = KafkaPublisher(settings.kafka_bootstrap_servers)
    dlq = settings.topic_findings + ".dlq"
    try:
        pub.publish(settings.topic_findings, "D-1", b"\xff\xfe\x00 binary finding")
        pub.publish(settings.topic_findings, "D-2",
                    encode(finding(dossier_code="D-2", responsible_role="mayor")))
        recs = consume(settings, dlq, lambda rs: len(rs) >= 2)
        assert original_bytes(recs[0][1]) == b"\xff\xfe\x00 binary finding"
        assert recs[0][1]["value_encoding"] == "base64"

        assert shown(motcua)[0] == []                        # sla's DLQ: the default, empty here
        rows, _ = shown(motcua, "--service", "notify")
        assert [(r["origin"]["key"], r["reason"]) for r in rows] == [("D-1", "not_json"),
                                                                     ("D-2", "invalid_finding")]
        assert rows[0]["value"] == "<binary, 18 bytes>" and "responsible_role" in rows[1]["error"]
        rc, lines, _ = motcua("redrive", "--service", "notify", "--reason", "not_json")
        assert rc == 0 and lines[-1] == "redrove 1 message(s)"
        recs = consume(settings, dlq, lambda rs: len(rs) >= 4)   # the marker, the copy's dead letter
        [again] = [v for _, v in recs if v.get("redriven_from")]
        assert original_bytes(again) == b"\xff\xfe\x00 binary finding"
        rows, _ = shown(motcua, "--service", "notify")
        assert [r["origin"]["key"] for r in rows] == ["D-2", "D-1"]
    finally:
        worker.stop()
        thread.join(20)
        pub.close()
        MongoClient(settings.mongo_uri).drop_database(settings.mongo_db + "_notify")
