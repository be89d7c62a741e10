"""The notify worker's loop: consume `sla.findings` (group `notify`), store and plan, commit, send.

Offsets are committed after `handle_many` stored the findings and their notification records;
sending happens after the commit, from those records. A bad message goes to `<topic>.dlq`
(shared/contracts/deadletter.py); a
store failure rewinds the batch and backs off. Protocol: docs/architecture.md, "notify".
"""
from __future__ import annotations

import logging
import threading
import time

from shared.platform.consumer import commit_batch, rewind
from shared.contracts.deadletter import ERROR_MAX, DeadLetters, Failed, TooManyDeadLetters, failed_record
from shared.platform.messaging import decode
from shared.platform.runtime import Backoff

from .sender import BackgroundSender
from .service import NotifyService

log = logging.getLogger("motcua.notify.loop")

# "never" for the monotonic timestamps below: time.monotonic() counts from an unspecified point
# (boot, on Linux), so 0.0 is not "long ago" on a machine up for less than an interval
NEVER = float("-inf")


class NotifyLoop:
    def __init__(self, consumer, service: NotifyService, publisher, dlq_topic: str, *, metrics=None,
                 poll_timeout: float = 0.5, schedule_interval: float = 10.0, max_records: int = 500,
                 dispatch_batch: int = 1000, background_send: bool = False, max_backlog: int = 1000,
                 dispatch_interval: float = 1.0, background_schedule: bool = False,
                 max_dead_letters_in_a_row: int = 1000):
        self.consumer, self.service, self.publisher, self.dlq_topic = consumer, service, publisher, dlq_topic
        # more dead letters in a row than this: TooManyDeadLetters ends the loop (a bad deploy
        # of sla or notify, not bad messages: stop rather than drain the topic into the DLQ)
        self.dead_letters = DeadLetters(publisher, dlq_topic, service.clock, metrics,
                                        max_in_a_row=max_dead_letters_in_a_row)
        self.metrics = metrics
        self.poll_timeout, self.schedule_interval, self.max_records = poll_timeout, schedule_interval, max_records
        self.dispatch_batch = dispatch_batch
        # alerts leased at planning (the service's outbox) are sent by a sender of their own
        # while this loop polls and plans the next batch; at most `max_backlog` of them wait
        # (their lease is 2 min)
        self.sender = BackgroundSender(service) if background_send else None
        self.max_backlog = max_backlog
        # the queue scan (deferred alerts, retries, expired leases) reads the whole queue on
        # FerretDB: with a background sender it runs at most every `dispatch_interval` s, unless
        # the previous scan found work
        self.dispatch_interval = dispatch_interval
        self._last_dispatch = NEVER
        # escalations, repeats and digests scan notify_findings (every document, on FerretDB):
        # in the worker they run on a thread of their own, so a long scan never stalls polling
        self.background_schedule = background_schedule
        self.stop_event = threading.Event()
        self._last_schedule = NEVER
        self._backoff = Backoff()

    def stop(self) -> None:
        self.stop_event.set()

    def run(self) -> None:
        if self.sender is not None:
            self.sender.start()
        scheduler = None
        if self.background_schedule:
            scheduler = threading.Thread(target=self._schedule_forever, name="notify-scheduler", daemon=True)
            scheduler.start()
        try:
            while not self.stop_event.is_set():
                self.run_once()
        finally:
            self.stop_event.set()
            if scheduler is not None:
                scheduler.join(30)
            if self.sender is not None:
                self.sender.stop()
            try:
                self.consumer.close()
            except Exception:
                log.debug("consumer close failed", exc_info=True)

    def run_once(self) -> None:
        records = {}
        if self.sender is None or self.sender.wait(self.max_backlog, self.poll_timeout):
            records = self.consumer.poll(timeout_ms=int(self.poll_timeout * 1000), max_records=self.max_records)
        batch = [r for rs in records.values() for r in rs]
        if batch and not self._handle(batch):
            return
        try:
            mono = time.monotonic()
            if self.sender is None:
                self.service.dispatch_due(max_items=self.dispatch_batch)
            elif mono - self._last_dispatch >= self.dispatch_interval:
                if self.service.dispatch_queue(max_items=self.dispatch_batch) == 0:
                    self._last_dispatch = mono
            if not self.background_schedule and mono - self._last_schedule >= self.schedule_interval:
                self._last_schedule = mono
                self.service.run_scheduled()
        except Exception:
            log.exception("dispatch/scheduler failed; will retry")
            self.stop_event.wait(self._backoff.delay)

    def _schedule_forever(self) -> None:
        """The scheduler thread: `run_scheduled`, then `schedule_interval` s of rest (a run that
        scans a large store must not keep the database busy back to back)."""
        backoff = Backoff()
        while not self.stop_event.is_set():
            try:
                self.service.run_scheduled()
                backoff.reset()
            except Exception:
                log.exception("scheduler failed; will retry in %.1f s", backoff.delay)
                self.stop_event.wait(backoff.failed())
                continue
            self.stop_event.wait(self.schedule_interval)

    def _handle(self, batch) -> bool:
        failed: list[Failed] = []
        try:
            records, values = [], []
            for r in batch:
                try:
                    values.append(decode(r.value))
                    records.append(r)
                except (ValueError, UnicodeDecodeError) as exc:
                    failed.append(failed_record(r, "not_json", f"not UTF-8 JSON: {exc}"[:ERROR_MAX]))
            for r, res in zip(records, self.service.handle_many(values)):
                if isinstance(res, Exception):
                    failed.append(failed_record(r, "invalid_finding", str(res)[:ERROR_MAX]))
                elif self.metrics is not None:
                    self.metrics.findings.labels("stored" if res.stored else "skipped").inc()
            self.dead_letters.send(failed, len(batch))
        except TooManyDeadLetters:
            raise                  # not committed: read again once the cause is fixed
        except Exception:
            log.exception("batch failed; rewinding, retry after %.1f s", self._backoff.delay)
            self._rewind({(r.topic, r.partition) for r in batch})
            self.stop_event.wait(self._backoff.failed())
            return False
        self._backoff.reset()
        self._commit(batch)
        return True

    def _commit(self, batch) -> None:
        commit_batch(self.consumer, batch)

    def _rewind(self, tps) -> None:
        rewind(self.consumer, tps)
