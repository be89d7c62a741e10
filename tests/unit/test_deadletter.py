"""Dead letters (shared/contracts/deadletter.py) in memory: the record both workers write, the statuses and
selection `motcua dlq show|redrive` work from, and the redaction of what is printed.
The CLI on a real broker: tests/integration/test_dlq_cli.py."""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import datetime, timezone

import pytest

from shared.contracts import deadletter
from shared.platform.clock import VirtualClock
from shared.contracts.deadletter import (DUPLICATE, FAILED_AGAIN, PENDING, REDRIVEN, Failed, Selection,
                               TooManyDeadLetters, entries, entry_value, original_bytes,
                               parse_offsets, printable)
from shared.contracts.events import redact, redact_text
from shared.platform.messaging import InMemoryBus, encode
from services.notify.loop import NotifyLoop
from services.sla.dlq import DeadLetters, Origin
from services.sla.handlers import SlaHandler
from services.sla.projection import Incoming
from services.sla.repository import InMemoryRepository

from helpers.notify import Env, finding
from helpers.sla import FakeConsumer, FakeEngine

T = datetime(2026, 11, 23, 3, 0, tzinfo=timezone.utc)
PHONE, CCCD = "0912345678", "079200001111"


# --- redaction: by position and by shape ------------------------------------------------------

def test_applicant_fields_under_unknown_keys_are_redacted_by_position():
    ev = {"type": "dossier.received", "dossier_code": "000.00.17.H56-241105-0001",
          "data": {"applicant": {"kind": "citizen", "name": "Nguyễn Văn A",
                                 "phone_number": PHONE, "cccd": CCCD, "dia_chi": "12 Lê Lợi",
                                 "nested": {"x": "y"}}}}
    out = redact(ev)
    assert out["data"]["applicant"] == {"kind": "citizen", "name": "Nguyễn Văn A", "phone_number": "***",
                                        "cccd": "***", "dia_chi": "***", "nested": "***"}
    assert out["dossier_code"] == ev["dossier_code"]


@pytest.mark.parametrize("text", [
    PHONE, "0912 345 678", "0912.345.678", "+84 912 345 678", "+84912345678", "0272 3800 010",
    CCCD, "123456789", "a.b@example.vn",
])
def test_numbers_of_a_person_are_redacted_by_shape_wherever_they_are(text):
    out = json.dumps(redact({"notes": [text, {"k": f"gọi {text}, cảm ơn"}], "arr": [[text]]}),
                     ensure_ascii=False)
    assert text not in out and out.count("***") == 3


@pytest.mark.parametrize("text", [
    "000.00.17.H56-241105-0001", "000.00.17.H56", "1.001193", "2024-11-05T01:00:00+00:00",
    "e3b0c442-98fc-1c14-9afb-123456789012", "H56-241105000001", "OVERDUE-3f2a9c1b7d4e5f60",
    "1234567890", "0909", "16.0",
])
def test_codes_instants_and_other_numbers_are_left_alone(text):
    assert redact_text(text) == text and redact({"v": text}) == {"v": text}


def test_id_sized_integers_are_redacted_other_numbers_kept():
    assert redact([912345678, 79200001111 * 10 + 1, 1730768400, 16.0, True, 3]) == \
        ["***", "***", 1730768400, 16.0, True, 3]


# --- the record --------------------------------------------------------------------------------

def test_a_dead_letter_keeps_the_original_bytes_binary_or_text():
    for raw in (b"\xff\xfe{\x00bad", "{\"a\": \"Hồ sơ\"}".encode()):
        value = json.loads(encode(entry_value(Failed("t", 0, 7, "K", raw, "not_json", "x"), T)))
        assert original_bytes(value) == raw
    assert value["value_encoding"] == "utf-8" and value["origin"] == {"topic": "t", "partition": 0,
                                                                     "offset": 7, "key": "K"}


def test_notify_dead_letters_of_the_old_format_are_known_to_be_lost():
    old = {"reason": "not_json", "value": "<binary>", "value_encoding": "utf-8", "origin": {}}
    assert original_bytes(old) is None
    assert printable(old)["value"] == "<original bytes not kept>"


def test_printable_shows_no_personal_data_of_a_dead_lettered_event():
    ev = {"event_id": "e3b0c442-98fc-1c14-9afb-4c8996fb9242", "type": "dossier.received",
          "dossier_code": "D-1", "agency_code": "000.00.17.H56",
          "data": {"applicant": {"kind": "citizen", "name": "A", "phone_number": PHONE, "cccd": CCCD},
                   "ghi_chu": [PHONE]}}
    error = f"data.applicant.phone_number: Unknown field. ({PHONE})"
    value = json.loads(encode(entry_value(Failed("dossier.events", 0, 3, "D-1", encode(ev), "invalid_event",
                                                 error), T)))
    text = json.dumps(printable(value), ensure_ascii=False)
    assert PHONE not in text and CCCD not in text
    far = printable(dict(value, origin=dict(value["origin"], offset=123456789)))
    assert far["origin"]["offset"] == 123456789          # an offset is not an ID number
    assert "D-1" in text and "phone_number" in text
    binary = printable(entry_value(Failed("t", 0, 1, None, b"\xff" * 5, "not_json", "x"), T))
    assert binary["value"] == "<binary, 5 bytes>"


# --- statuses and selection ---------------------------------------------------------------------

def _entry(offset, reason="invalid_event", key="D-1", origin_offset=None, redriven_from=None):
    f = Failed("dossier.events", 0, offset if origin_offset is None else origin_offset, key, b"{}",
               reason, "e", redriven_from)
    return (0, offset, 1000 + offset, json.loads(encode(entry_value(f, T))))


def _marker(offset, of):
    e = deadletter.Entry(0, of, 0, {})
    pub = type("P", (), {"topic": "dossier.events", "partition": 1, "offset": 99})()
    return (0, offset, 1000 + offset, json.loads(encode(deadletter.redrive_marker(e, pub, T)[0])))


def test_statuses_redriven_failed_again_duplicate_pending():
    records = [
        _entry(0, origin_offset=10),                       # redriven (marker 2), failed again as 3
        _entry(1, origin_offset=11, key="D-2"),            # read twice: 4 is its latest copy
        _marker(2, of=0),
        _entry(3, origin_offset=50, redriven_from=(0, 0)),
        _entry(4, origin_offset=11, key="D-2"),
        _entry(5, reason="not_applicable", key="D-3", origin_offset=12),
        _marker(6, of=5),                                  # redriven, went through
    ]
    got = {e.offset: e.status for e in entries(records)}
    assert got == {0: REDRIVEN, 1: DUPLICATE, 3: PENDING, 4: PENDING, 5: REDRIVEN}
    # a redrive that crashed before its marker: the copy's failure still supersedes the entry
    got = {e.offset: e.status for e in entries([r for r in records if r[1] != 2])}
    assert got[0] == FAILED_AGAIN


def test_selection_by_reason_key_and_offsets():
    es = entries([_entry(i, reason=("invalid_event", "not_applicable")[i % 2], key=f"D-{i % 3}")
                  for i in range(9)])
    pick = lambda **kw: [e.offset for e in es if Selection(**kw)(e)]  # noqa: E731
    assert pick() == list(range(9))
    assert pick(reasons=("not_applicable",)) == [1, 3, 5, 7]
    assert pick(keys=("D-0", "D-2")) == [0, 2, 3, 5, 6, 8]
    assert pick(offsets=(parse_offsets("2-4"), parse_offsets("8"))) == [2, 3, 4, 8]
    assert pick(offsets=(parse_offsets("0:6-"),)) == [6, 7, 8]
    assert pick(offsets=(parse_offsets("1:0-"),)) == []
    assert pick(reasons=("invalid_event",), keys=("D-0",), offsets=(parse_offsets("1-8"),)) == [6]


@pytest.mark.parametrize("text", ["", "a", "3-1", "-4", "1:2:3", "1-2-3"])
def test_bad_offset_ranges_are_refused(text):
    with pytest.raises(ValueError):
        parse_offsets(text)


# --- the workers ---------------------------------------------------------------------------------

@dataclass
class HRec:
    topic: str
    partition: int
    offset: int
    key: str | None
    value: bytes
    headers: list = field(default_factory=list)


def test_notify_keeps_the_bytes_of_a_non_utf8_message_and_the_redrive_it_came_from():
    env = Env(start=T)
    bus = InMemoryBus()
    consumer = FakeConsumer([[HRec("sla.findings", 0, 0, "D-1", b"\xff\xfe\x00binary"),
                              HRec("sla.findings", 0, 1, "D-1", encode(finding(severity="urgent")),
                                   [("dlq.redriven_from", b"0:4")]),
                              HRec("sla.findings", 0, 2, "D-1", encode(finding()))]])
    loop = NotifyLoop(consumer, env.svc, bus, "sla.findings.dlq", poll_timeout=0.01, schedule_interval=3600)
    loop.run_once()
    binary, invalid = [m.value for m in bus.messages("sla.findings.dlq")]
    assert binary["reason"] == "not_json" and binary["value_encoding"] == "base64"
    assert original_bytes(binary) == b"\xff\xfe\x00binary"
    assert invalid["reason"] == "invalid_finding" and invalid["error"].startswith("severity:")
    assert invalid["redriven_from"] == {"partition": 0, "offset": 4}
    assert consumer.commits == [{0: 3}]
    assert env.db.notify_findings.count_documents({}) == 1


def test_notify_stops_after_too_many_dead_letters_in_a_row_without_committing():
    env = Env(start=T)
    bus = InMemoryBus()
    bad = lambda o: HRec("sla.findings", 0, o, "K", b"not json")  # noqa: E731
    consumer = FakeConsumer([[bad(0), bad(1)], [bad(2), bad(3)]])
    loop = NotifyLoop(consumer, env.svc, bus, "dlq", poll_timeout=0.01, schedule_interval=3600,
                      max_dead_letters_in_a_row=3)
    loop.run_once()
    with pytest.raises(TooManyDeadLetters):
        loop.run_once()
    assert consumer.commits == [{0: 2}]                  # the second batch is read again
    assert len(bus.messages("dlq")) == 4


def test_sla_dead_letter_of_a_redriven_message_names_the_entry_it_came_from():
    clock = VirtualClock(T)
    bus = InMemoryBus()
    handler = SlaHandler(InMemoryRepository(), bus, "sla.findings", clock, ctx=None, engine=FakeEngine)
    rec = HRec("dossier.events", 2, 40, "D-1", b"{not json", [("dlq.redriven_from", b"0:17")])
    rejected = handler.handle([Incoming(rec.key, rec.value, rec.partition, Origin.of(rec))])
    DeadLetters(bus, "dossier.events.dlq", clock).send(rejected, 1)
    [dl] = bus.messages("dossier.events.dlq")
    assert dl.value["redriven_from"] == {"partition": 0, "offset": 17}
    assert dl.headers["dlq.redriven_from"] == "0:17" and dl.headers["dlq.origin.offset"] == "40"
    assert dl.headers["dlq.origin.partition"] == "2"
