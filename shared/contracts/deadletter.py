"""Dead letters of both consumers, one contract: sla (`dossier.events` → `dossier.events.dlq`) and
notify (`sla.findings` → `sla.findings.dlq`). docs/dead-letters.md is the operator's guide.

A dead letter is a record of `<topic>.dlq`, keyed by the original key, with headers
`dlq.reason`, `dlq.error`, `dlq.origin.topic`, `dlq.origin.partition`, `dlq.origin.offset`
(and `dlq.redriven_from` when the failed message was itself redriven) and the JSON value
`{"reason", "error", "origin": {topic, partition, offset, key}, "value", "value_encoding",
"failed_at"[, "redriven_from": {partition, offset}]}`: `value` is the original message, as text
when it is UTF-8 (`value_encoding` "utf-8") else base64 — the original bytes are always kept.

`motcua dlq redrive` publishes an entry's original bytes back to its topic with the header
`dlq.redriven_from: "<dlq partition>:<dlq offset>"`, then appends a redrive marker to the DLQ
(`{"redrive_of": {partition, offset}, "republished_to": {...}, "redriven_at"}`, header
`dlq.redrive_of`). From the whole topic, `entries()` tells each entry's status: `redriven` (a
marker names it), `failed_again` (a later entry is the failure of its redriven copy),
`duplicate` (a later entry has the same origin: the consumer read the message twice, e.g. after a
crash before its commit) or `pending` — what show and redrive offer. A redriven message that fails
again is one pending entry, not two.
"""
from __future__ import annotations

import base64
import json
import logging
import re
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Iterable

from shared.contracts.events import redact, redact_text

log = logging.getLogger("motcua.deadletter")

SUFFIX = ".dlq"
REDRIVEN_FROM = "dlq.redriven_from"
REDRIVE_OF = "dlq.redrive_of"
ERROR_MAX = 500
PENDING, REDRIVEN, FAILED_AGAIN, DUPLICATE = "pending", "redriven", "failed_again", "duplicate"
# notify used to store a non-UTF-8 message as this text: its bytes are gone
_LOST = "<binary>"


def dlq_topic(topic: str) -> str:
    return topic + SUFFIX


class TooManyDeadLetters(Exception):
    """More dead letters in a row than the limit: probably a bad deploy, stop rather than drain."""


@dataclass(frozen=True)
class Failed:
    """A message a consumer cannot use, with where it came from and why."""
    topic: str
    partition: int
    offset: int
    key: str | None
    raw: bytes
    reason: str                 # machine code, e.g. invalid_json, invalid_finding
    error: str                  # human-readable
    redriven_from: tuple[int, int] | None = None   # the DLQ entry this message is a redrive of


def redriven_from(headers: Iterable | None) -> tuple[int, int] | None:
    """The `dlq.redriven_from` header of a consumed record (kafka-python: (name, bytes) pairs)."""
    for name, value in headers or ():
        if name == REDRIVEN_FROM:
            m = re.fullmatch(rb"(\d+):(\d+)", value or b"")
            return (int(m.group(1)), int(m.group(2))) if m else None
    return None


def failed_record(record, reason: str, error: str) -> Failed:
    """A consumed kafka-python record that failed."""
    return Failed(record.topic, record.partition, record.offset, record.key, record.value, reason,
                  error, redriven_from(getattr(record, "headers", None)))


def entry_value(f: Failed, failed_at: datetime) -> dict:
    """The DLQ record value of a failed message."""
    raw = f.raw if f.raw is not None else b""
    try:
        text, encoding = raw.decode("utf-8"), "utf-8"
    except UnicodeDecodeError:
        text, encoding = base64.b64encode(raw).decode("ascii"), "base64"
    value = {"reason": f.reason, "error": f.error,
             "origin": {"topic": f.topic, "partition": f.partition, "offset": f.offset, "key": f.key},
             "value": text, "value_encoding": encoding, "failed_at": failed_at}
    if f.redriven_from is not None:
        value["redriven_from"] = {"partition": f.redriven_from[0], "offset": f.redriven_from[1]}
    return value


def entry_headers(f: Failed) -> dict[str, str]:
    headers = {"dlq.reason": f.reason, "dlq.error": f.error[:ERROR_MAX], "dlq.origin.topic": f.topic,
               "dlq.origin.partition": str(f.partition), "dlq.origin.offset": str(f.offset)}
    if f.redriven_from is not None:
        headers[REDRIVEN_FROM] = "%d:%d" % f.redriven_from
    return headers


class DeadLetters:
    """Sends failed messages to the DLQ topic; raises TooManyDeadLetters when more than
    `max_in_a_row` came in a row (whole batches failing add up; a batch with good messages
    starts the count again from its own failures)."""

    def __init__(self, publisher, topic: str, clock, metrics=None, max_in_a_row: int = 1000):
        self.publisher = publisher
        self.topic = topic
        self.clock = clock
        self.metrics = metrics
        self.max_in_a_row = max_in_a_row
        self.in_a_row = 0

    def send(self, failed: list[Failed], batch_size: int) -> None:
        for f in failed:
            self.publisher.publish(self.topic, f.key or "", entry_value(f, self.clock.now()),
                                   headers=entry_headers(f))
            if self.metrics is not None:
                self.metrics.dead_letters.labels(f.reason).inc()
            log.warning("message dead-lettered", extra={"fields": {
                "dlq": self.topic, "reason": f.reason, "error": redact_text(f.error[:200]),
                "topic": f.topic, "partition": f.partition, "offset": f.offset}})
        if failed and len(failed) == batch_size:
            self.in_a_row += len(failed)
        elif batch_size:
            self.in_a_row = len(failed)
        if self.in_a_row > self.max_in_a_row:
            raise TooManyDeadLetters(f"{self.in_a_row} dead letters in a row (limit {self.max_in_a_row})")


def original_bytes(value: dict) -> bytes | None:
    """The original message of a DLQ entry, None when it was not kept."""
    text = value.get("value")
    if not isinstance(text, str):
        return None
    if value.get("value_encoding") == "base64":
        try:
            return base64.b64decode(text, validate=True)
        except ValueError:
            return None
    if text == _LOST and value.get("reason") == "not_json":
        return None
    return text.encode("utf-8")


def printable(value: dict) -> dict:
    """A DLQ entry for display: personal data redacted (shared.contracts.events.redact), the original
    value parsed when it is JSON, described when it is not."""
    out = dict(value)       # our own metadata as it is (offsets may have 9 or 12 digits)
    out["error"] = redact_text(value.get("error"))
    if isinstance(value.get("origin"), dict):
        out["origin"] = dict(value["origin"], key=redact_text(value["origin"].get("key")))
    text = value.get("value")
    if not isinstance(text, str):
        out["value"] = None
    elif value.get("value_encoding") == "base64":
        raw = original_bytes(value)
        out["value"] = "<binary, %d bytes>" % len(raw) if raw is not None else "<not base64>"
    elif original_bytes(value) is None:
        out["value"] = "<original bytes not kept>"
    else:
        try:
            out["value"] = redact(json.loads(text))
        except ValueError:
            out["value"] = "<not JSON, %d characters>" % len(text)
    return out


# -- reading a DLQ topic: entries, their status, a selection --------------------------------------

@dataclass
class Entry:
    partition: int
    offset: int
    timestamp: int
    value: dict
    status: str = PENDING
    failed_again_as: tuple[int, int] | None = None   # the entry of its redriven copy's failure

    @property
    def coords(self) -> tuple[int, int]:
        return (self.partition, self.offset)

    @property
    def key(self) -> str | None:
        return (self.value.get("origin") or {}).get("key")

    @property
    def reason(self) -> str:
        return self.value.get("reason") or ""

    @property
    def origin(self) -> tuple:
        o = self.value.get("origin") or {}
        return (o.get("topic"), o.get("partition"), o.get("offset"))

    @property
    def redriven_from(self) -> tuple[int, int] | None:
        r = self.value.get("redriven_from")
        return (r.get("partition"), r.get("offset")) if isinstance(r, dict) else None


def is_marker(value: Any) -> bool:
    return isinstance(value, dict) and isinstance(value.get("redrive_of"), dict)


def entries(records: Iterable[tuple[int, int, int, Any]]) -> list[Entry]:
    """The dead letters of a DLQ topic's records (partition, offset, timestamp, decoded value),
    oldest first, each with its status (module docstring)."""
    found: list[Entry] = []
    redriven: set[tuple[int, int]] = set()
    for partition, offset, ts, value in sorted(records, key=lambda r: (r[2], r[0], r[1])):
        if is_marker(value):
            r = value["redrive_of"]
            redriven.add((r.get("partition"), r.get("offset")))
        elif isinstance(value, dict) and isinstance(value.get("origin"), dict):
            found.append(Entry(partition, offset, ts, value))
        else:
            log.warning("not a dead letter; ignored", extra={"fields": {"partition": partition,
                                                                         "offset": offset}})
    latest: dict[tuple, tuple[int, int]] = {}
    again: dict[tuple[int, int], tuple[int, int]] = {}
    for e in found:
        latest[e.origin] = e.coords
        if e.redriven_from is not None:
            again[e.redriven_from] = e.coords
    for e in found:
        e.failed_again_as = again.get(e.coords)
        if e.coords in redriven:
            e.status = REDRIVEN
        elif e.failed_again_as is not None:
            e.status = FAILED_AGAIN
        elif latest[e.origin] != e.coords:
            e.status = DUPLICATE
    return found


_RANGE = re.compile(r"^(?:(\d+):)?(\d+)(?:-(\d*))?$")


@dataclass(frozen=True)
class OffsetRange:
    partition: int | None
    first: int
    last: int | None           # inclusive; None: open-ended

    def __contains__(self, e: Entry) -> bool:
        return ((self.partition is None or e.partition == self.partition) and e.offset >= self.first
                and (self.last is None or e.offset <= self.last))


def parse_offsets(text: str) -> OffsetRange:
    """`N`, `A-B`, `A-` (DLQ offsets, inclusive), each optionally `P:`-prefixed with a partition."""
    m = _RANGE.match(text.strip())
    if not m:
        raise ValueError(f"not an offset range: {text!r} (expected N, A-B or A-, optionally P:A-B)")
    part = int(m.group(1)) if m.group(1) is not None else None
    first = int(m.group(2))
    if m.group(3) is None:
        last = first if "-" not in text else None
    else:
        last = int(m.group(3)) if m.group(3) else None
    if last is not None and last < first:
        raise ValueError(f"empty offset range: {text!r} ({last} < {first})")
    return OffsetRange(part, first, last)


@dataclass(frozen=True)
class Selection:
    """Which entries: every criterion given must hold (one of its values)."""
    reasons: tuple[str, ...] = ()
    keys: tuple[str, ...] = ()
    offsets: tuple[OffsetRange, ...] = ()
    statuses: tuple[str, ...] = (PENDING,)     # empty: any status

    def __call__(self, e: Entry) -> bool:
        return ((not self.statuses or e.status in self.statuses)
                and (not self.reasons or e.reason in self.reasons)
                and (not self.keys or e.key in self.keys)
                and (not self.offsets or any(e in r for r in self.offsets)))


def redrive_marker(e: Entry, published: Any, at: datetime) -> tuple[dict, dict[str, str]]:
    """The DLQ record (value, headers) saying entry `e` was republished at `published`
    (topic, partition, offset)."""
    value = {"redrive_of": {"partition": e.partition, "offset": e.offset},
             "republished_to": {"topic": published.topic, "partition": published.partition,
                                "offset": published.offset},
             "redriven_at": at}
    return value, {REDRIVE_OF: "%d:%d" % e.coords}
