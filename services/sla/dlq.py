"""Dead letters of `dossier.events`: messages that cannot be parsed or applied.

The record format, the in-a-row limit and the display are shared with notify
(shared/contracts/deadletter.py); this module turns the handler's `Rejected` into them.
"""
from __future__ import annotations

from dataclasses import dataclass

from shared.contracts import deadletter
from shared.contracts.deadletter import TooManyDeadLetters, printable  # noqa: F401  (the sla names)

from .projection import Rejected


@dataclass(frozen=True)
class Origin:
    """Where a message of `dossier.events` came from (`Incoming.origin`)."""
    topic: str
    partition: int
    offset: int
    redriven_from: tuple[int, int] | None = None   # the DLQ entry it is a redrive of

    @classmethod
    def of(cls, record) -> "Origin":
        """The origin of a consumed kafka-python record."""
        headers = getattr(record, "headers", None)
        return cls(record.topic, record.partition, record.offset,
                   deadletter.redriven_from(headers) if headers else None)


def failed(rej: Rejected) -> deadletter.Failed:
    o: Origin = rej.item.origin
    return deadletter.Failed(o.topic, o.partition, o.offset, rej.item.key, rej.item.raw, rej.reason,
                             rej.error, getattr(o, "redriven_from", None))


class DeadLetters(deadletter.DeadLetters):
    """Sends the handler's rejected messages to the DLQ; TooManyDeadLetters after `max_in_a_row`."""

    def send(self, rejected: list[Rejected], batch_size: int) -> None:
        super().send([failed(r) for r in rejected], batch_size)
