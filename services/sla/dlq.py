"""Dead letters: messages of `dossier.events` that cannot be parsed or applied.

They go to `<topic>.dlq` (key = the original key) with the reason and their origin in headers
(`dlq.reason`, `dlq.error`, `dlq.origin.topic`, `dlq.origin.partition`, `dlq.origin.offset`) and in
the value: `{"reason", "error", "origin": {topic, partition, offset, key}, "value": original text,
"failed_at"}`. `motcua dlq show` prints them with personal data redacted; `motcua dlq redrive`
publishes the original values back to their topic.
"""
from __future__ import annotations

import base64
import json
from dataclasses import dataclass
from datetime import datetime

from shared.events import redact

from .handlers import Rejected


class TooManyDeadLetters(Exception):
    """More dead letters in a row than the limit: probably a bad deploy, stop rather than drain."""


@dataclass(frozen=True)
class Origin:
    topic: str
    partition: int
    offset: int


def dead_letter_value(rej: Rejected, failed_at: datetime) -> dict:
    """The DLQ message value for a rejected message."""
    origin: Origin = rej.item.origin
    try:
        text, encoding = rej.item.raw.decode("utf-8"), "utf-8"
    except UnicodeDecodeError:
        text, encoding = base64.b64encode(rej.item.raw).decode("ascii"), "base64"
    return {
        "reason": rej.reason,
        "error": rej.error,
        "origin": {"topic": origin.topic, "partition": origin.partition, "offset": origin.offset,
                   "key": rej.item.key},
        "value": text,
        "value_encoding": encoding,
        "failed_at": failed_at,
    }


def dead_letter_headers(rej: Rejected) -> dict[str, str]:
    origin: Origin = rej.item.origin
    return {"dlq.reason": rej.reason, "dlq.error": rej.error[:500],
            "dlq.origin.topic": origin.topic, "dlq.origin.partition": str(origin.partition),
            "dlq.origin.offset": str(origin.offset)}


class DeadLetters:
    """Sends rejected messages to the DLQ; raises TooManyDeadLetters after `max_in_a_row`."""

    def __init__(self, publisher, topic: str, clock, metrics=None, max_in_a_row: int = 1000):
        self.publisher = publisher
        self.topic = topic
        self.clock = clock
        self.metrics = metrics
        self.max_in_a_row = max_in_a_row
        self.in_a_row = 0

    def send(self, rejected: list[Rejected], batch_size: int) -> None:
        for rej in rejected:
            key = rej.item.key or ""
            self.publisher.publish(self.topic, key, dead_letter_value(rej, self.clock.now()),
                                   headers=dead_letter_headers(rej))
            if self.metrics is not None:
                self.metrics.dead_letters.labels(rej.reason).inc()
        if rejected and len(rejected) == batch_size:
            self.in_a_row += len(rejected)
        elif batch_size:
            self.in_a_row = len(rejected)
        if self.in_a_row > self.max_in_a_row:
            raise TooManyDeadLetters(f"{self.in_a_row} dead letters in a row (limit {self.max_in_a_row})")


def printable(value: dict) -> dict:
    """A DLQ entry for display: the original value parsed and redacted when it is JSON."""
    out = dict(value)
    if out.get("value_encoding") == "utf-8":
        try:
            out["value"] = redact(json.loads(out["value"]))
        except ValueError:
            out["value"] = "<not JSON, %d characters>" % len(out["value"])
    else:
        out["value"] = "<binary>"
    return out
