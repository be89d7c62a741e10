"""Offset handling shared by the consumer loops of sla and notify (kafka-python).

Loops commit only after a batch's effects are stored; on a failure they rewind to the last
committed offsets and read the batch again. Offsets committed are the next to read.
"""
from __future__ import annotations

import logging

log = logging.getLogger("motcua.consumer")


def commit_batch(consumer, records) -> bool:
    """Commit, per partition, the offset after the last record of `records`.

    Returns False when the group rebalanced under us (the new owner re-reads from the committed
    offsets, and every effect is idempotent).
    """
    from kafka import TopicPartition
    from kafka.errors import CommitFailedError
    from kafka.structs import OffsetAndMetadata

    last: dict = {}
    for r in records:
        tp = TopicPartition(r.topic, r.partition)
        last[tp] = max(last.get(tp, -1), r.offset)
    try:
        consumer.commit({tp: OffsetAndMetadata(o + 1, "", -1) for tp, o in last.items()})
    except CommitFailedError:
        log.warning("commit failed after a rebalance; the new owner will re-read the batch")
        return False
    return True


def rewind(consumer, topic_partitions) -> None:
    """Seek each still-assigned (topic, partition) back to its committed offset (or the beginning)."""
    from kafka import TopicPartition

    assigned = consumer.assignment()
    for topic, partition in topic_partitions:
        tp = TopicPartition(topic, partition)
        if tp not in assigned:
            continue
        committed = consumer.committed(tp)
        if committed is None:
            consumer.seek_to_beginning(tp)
        else:
            consumer.seek(tp, committed)


def serve_until_signalled(worker, *, name: str, fields: dict, metrics_port: int | None = None,
                          registry=None) -> int:
    """Run `worker` (with .run() and .stop()) until SIGTERM/SIGINT: the body of a
    `python -m services.<name> worker` command. With `metrics_port`, Prometheus metrics of
    `registry` are served on METRICS_BIND (127.0.0.1; a container sets 0.0.0.0):metrics_port."""
    import signal

    if metrics_port:
        from prometheus_client import start_http_server

        from shared.config import env
        start_http_server(metrics_port, addr=env("METRICS_BIND"), registry=registry)
    worker_log = logging.getLogger(f"motcua.{name}.worker")

    def _stop(signum, frame):
        worker_log.info("stopping", extra={"fields": {"signal": signum}})
        worker.stop()

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    worker_log.info(f"{name} worker started", extra={"fields": fields})
    worker.run()
    return 0
