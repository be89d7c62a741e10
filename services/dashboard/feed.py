"""Keeps the dashboard's view current without querying the dossiers again.

One thread per process: it notes the end offsets of `dossier.events`, `sla.findings` and notify's
changes (`services/notify/changes.py`), loads the view (one scan per collection), then reads the
topics from those offsets (no consumer group, nothing committed: every process reads for itself):
- a dossier event names a dossier to re-read by `_id` once the sla worker has stored that event
  (its `event_id` is in the stored events; events sla rejects are given up after `retry_for`);
- a finding message is the finding itself (DESIGN.md §7): applied as is, and its dossier re-read
  (sla stores the dossier before it publishes the finding);
- a notify change (a notification planned, sent, failed or cancelled; escalation level, repeats,
  an acknowledgement) is applied to the view's `alerts` as is;
- acknowledgements made where nothing publishes them (notify's API: e-mail link, API; another
  dashboard process) are polled from notify's `acks` every `ack_interval` seconds (this process
  applies its own at once).
Anything read between the offsets and the end of the scan is applied twice: harmless (rows
carry their revision).
"""
from __future__ import annotations

import json
import logging
import threading
import time
from datetime import timedelta

from services.notify.changes import changes_topic

from .view import finding_row, row_from_doc

log = logging.getLogger("motcua.dashboard.feed")
# acks are stamped by notify's clock: re-read a margin behind the last poll
_ACK_MARGIN = timedelta(minutes=5)


class Feed:
    def __init__(self, settings, store, view, clock, *, poll_timeout: float = 0.5,
                 ack_interval: float = 30.0, retry_for: float = 120.0):
        self.settings, self.store, self.view, self.clock = settings, store, view, clock
        self.poll_timeout, self.ack_interval, self.retry_for = poll_timeout, ack_interval, retry_for
        self._loaded = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._pending: dict[str, tuple[str | None, float]] = {}   # code -> (event id awaited, give up at)
        self.error: str | None = None
        self.lag: dict[str, int] = {}             # topic -> messages not yet read (all partitions)
        self.lag_read_at: float | None = None     # monotonic time `lag` was measured
        self.records = 0                          # messages applied
        self.changes_topic = changes_topic(settings)

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="dashboard-feed", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)

    def wait_loaded(self, timeout: float) -> bool:
        return self._loaded.wait(timeout)

    # -- the thread -----------------------------------------------------------------------------
    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self._serve()
            except Exception as exc:   # noqa: BLE001 - broker or store down: start again
                self.error = exc.__class__.__name__
                log.exception("dashboard feed failed; restarting in 5 s")
                self._stop.wait(5)

    def _consumer(self):
        from kafka import KafkaConsumer
        return KafkaConsumer(bootstrap_servers=self.settings.kafka_bootstrap_servers.split(","), group_id=None,
                             enable_auto_commit=False, client_id="motcua-dashboard", request_timeout_ms=30000)

    def _assign(self, consumer, assigned: set) -> set:
        """Assign partitions not yet assigned (topics may be created after the dashboard starts),
        from their end offsets."""
        from kafka import TopicPartition
        tps = set(assigned)
        for topic in (self.settings.topic_events, self.settings.topic_findings, self.changes_topic):
            for p in consumer.partitions_for_topic(topic) or ():
                tps.add(TopicPartition(topic, p))
        if tps != assigned:
            new = tps - assigned
            ends = consumer.end_offsets(list(new))
            consumer.assign(list(tps))
            for tp in new:
                consumer.seek(tp, ends[tp])
        return tps

    def _serve(self) -> None:
        consumer = self._consumer()
        try:
            assigned = self._assign(consumer, set())
            self.store.load(self.view)
            self._measure_lag(consumer, assigned)
            self._loaded.set()
            self.error = None
            last_acks = self.clock.now()
            next_ack_poll = time.monotonic() + self.ack_interval
            next_assign = time.monotonic() + 10
            while not self._stop.is_set():
                if assigned:
                    batches = consumer.poll(timeout_ms=int(self.poll_timeout * 1000), max_records=2000)
                else:
                    batches = {}
                    self._stop.wait(self.poll_timeout)
                for tp, records in batches.items():
                    for r in records:
                        self._record(tp.topic, r.key, r.value)
                self._refresh_pending()
                if time.monotonic() >= next_ack_poll:
                    since = last_acks
                    last_acks = self.clock.now()
                    for a in self.store.acks_since(since - _ACK_MARGIN):
                        self.view.put_ack(a["finding_id"], a.get("at"))
                        self.view.alerts.put_ack(a)
                    next_ack_poll = time.monotonic() + self.ack_interval
                if time.monotonic() >= next_assign:
                    assigned = self._assign(consumer, assigned)
                    self._measure_lag(consumer, assigned)
                    next_assign = time.monotonic() + 10
        finally:
            consumer.close()

    def _measure_lag(self, consumer, assigned: set) -> None:
        """Messages behind the end of each topic (for /metrics; no Kafka call on a scrape)."""
        if not assigned:
            return
        ends = consumer.end_offsets(list(assigned))
        lag: dict[str, int] = {}
        for tp in assigned:
            lag[tp.topic] = lag.get(tp.topic, 0) + max(0, ends[tp] - consumer.position(tp))
        self.lag, self.lag_read_at = lag, time.monotonic()

    def _record(self, topic: str, key: bytes | None, value: bytes) -> None:
        try:
            msg = json.loads(value)
        except ValueError:
            return
        if not isinstance(msg, dict):
            return
        self.records += 1
        if topic == self.changes_topic:
            try:
                self.view.alerts.apply(msg)
            except (KeyError, TypeError, ValueError, AttributeError):
                log.warning("notify change not understood", extra={"fields": {"op": str(msg.get("op"))[:40]}})
            return
        code = msg.get("dossier_code") or (key.decode("utf-8", "replace") if key else None)
        if not isinstance(code, str) or not code:
            return
        if topic == self.settings.topic_findings:
            try:
                self.view.put_finding(finding_row(msg))
            except (KeyError, TypeError, ValueError):
                log.warning("finding message not understood", extra={"fields": {"dossier_code": code}})
            self._pending[code] = (None, time.monotonic() + self.retry_for)
        else:
            eid = msg.get("event_id")
            self._pending[code] = (str(eid) if eid else None, time.monotonic() + self.retry_for)

    def _refresh_pending(self) -> None:
        done = []
        for code, (eid, until) in list(self._pending.items()):
            doc = self.store.dossier(code)
            stored = doc is not None and (eid is None or any(
                str(e.get("event_id")) == eid for e in doc.get("events") or ()))
            if stored or time.monotonic() > until:
                if doc is not None:
                    self.view.put_dossier(row_from_doc(doc))
                done.append(code)
        for code in done:
            self._pending.pop(code, None)

