"""The consumer loop: poll, hand the batch to the handler, dead-letter, commit; scheduled checks.

The loop owns offsets; the handler owns the work. Offsets are committed only after the batch's
effects are stored and published (at-least-once). Between polls, the instance evaluates the
dossiers of the partitions it owns whose `next_check_at` has passed (the scheduler), so a dossier
is only ever written by the instance that owns its partition, and a rebalance hands both its
events and its checks to the new owner. On a newly assigned partition, finding changes stored but
never published (a crash between store and publish) are published first.

The handler holds the documents of the assigned partitions in memory (`SlaHandler.start_assign`); a
rebalance listener (`listener()`) reports every revocation and assignment, including a partition
revoked and given back within one poll, so a partition is always reloaded from the store when it
comes (back) to this instance. A load runs in steps of about `load_step` seconds between polls (a
partition of 10^5-10^6 dossiers takes minutes on FerretDB, longer than max.poll.interval.ms);
until its load is complete a partition is paused, its records are read again later (rewound to the
committed offset) and it gets no scheduled checks. "Published" marks are written once per loop turn, after the batch
and the scheduled checks (so a burst of due dossiers is published before any mark is written).
"""
from __future__ import annotations

import logging
import threading
import time

from shared.consumer import commit_batch, rewind

from .dlq import DeadLetters, Origin
from .handlers import Incoming, SlaHandler
from .repository import StaleWrite

log = logging.getLogger("motcua.sla.loop")


class ConsumerLoop:
    def __init__(self, consumer, handler: SlaHandler, dead_letters: DeadLetters, *,
                 poll_timeout: float = 0.5, check_interval: float = 0.5, check_limit: int = 400,
                 lag_interval: float = 5.0, max_records: int = 500, load_step: float = 1.0,
                 check_budget: float = 10.0):
        self.consumer = consumer
        self.handler = handler
        self.dead_letters = dead_letters
        self.poll_timeout = poll_timeout
        self.check_interval = check_interval
        self.check_limit = check_limit
        self.lag_interval = lag_interval
        self.max_records = max_records
        self.load_step = load_step
        self.check_budget = check_budget
        self._loads: list = []          # handlers.Loading in progress, oldest first
        self._paused: set = set()
        self._revoked: set = set()
        self._newly: set = set()
        self.stop_event = threading.Event()
        self._assigned: set = set()
        self._last_check = 0.0
        self._last_lag = 0.0
        self.batches = 0
        self._backoff = 0.5

    def stop(self) -> None:
        self.stop_event.set()

    def run(self) -> None:
        """Run until stop() (SIGTERM in the worker); commits and leaves the group on the way out."""
        try:
            while not self.stop_event.is_set():
                self.run_once()
        finally:
            try:
                self.handler.flush_marks()
            except Exception:   # a crash here only republishes the same revisions later
                log.exception("writing published marks failed")
            try:
                self.consumer.close(autocommit=False)
            except Exception:   # closing a consumer whose broker is gone must not hide the cause
                log.exception("consumer close failed")

    def run_once(self) -> None:
        records = self.consumer.poll(timeout_ms=0 if self._loads else int(self.poll_timeout * 1000),
                                     max_records=self.max_records)
        self._track_assignment()
        if self._loads:
            self._load()
        batch = [r for rs in records.values() for r in rs]
        loading = self._loading()
        if loading and batch:
            # not held yet: these records are read again once their partition is loaded
            later = {(r.topic, r.partition) for r in batch if r.partition in loading}
            if later:
                self._rewind(later)
                batch = [r for r in batch if (r.topic, r.partition) not in later]
        if batch:
            self._handle(batch)
        now = time.monotonic()
        if now - self._last_check >= self.check_interval:
            self._last_check = now
            self._check_due()
        if self.handler.pending_marks():
            self._flush_marks(now)
        if now - self._last_lag >= self.lag_interval:
            self._last_lag = now
            self._record_lag()

    # -- rebalances -----------------------------------------------------------------------------
    def listener(self):
        """A kafka-python ConsumerRebalanceListener reporting to this loop (called inside poll)."""
        from kafka import ConsumerRebalanceListener

        loop = self

        class _Listener(ConsumerRebalanceListener):
            def on_partitions_revoked(self, revoked):
                loop._revoked.update(revoked)
                loop._newly.difference_update(revoked)
                try:    # the new owner would otherwise republish them (same revisions)
                    loop.handler.flush_marks()
                except Exception:
                    log.exception("writing published marks failed")

            def on_partitions_assigned(self, assigned):
                loop._newly.update(assigned)

        return _Listener()

    # -- internals ------------------------------------------------------------------------------
    def _flush_marks(self, now: float) -> None:
        try:
            self.handler.flush_marks()
        except Exception:   # kept for the next try; a crash only republishes the same revisions
            log.exception("writing published marks failed")

    def _partitions(self) -> list[int]:
        """Assigned and held (loaded) partitions."""
        loading = self._loading()
        return sorted(tp.partition for tp in self._assigned if tp.partition not in loading)

    def _loading(self) -> set[int]:
        return {p for ld in self._loads for p in ld.partitions}

    def _tps(self, partitions) -> set:
        return {tp for tp in self._assigned if tp.partition in set(partitions)}

    def _load(self) -> None:
        """Drive the loads in progress for about `load_step` seconds; pause what is not loaded
        yet, resume what is."""
        end = time.monotonic() + self.load_step
        while self._loads:
            ld = self._loads[0]
            if not ld.step(max(0.0, end - time.monotonic())):
                break
            self._loads.pop(0)
            held, n = ld.result
            log.info("partitions assigned", extra={"fields": {
                "partitions": ld.partitions, "republished": n, "held": held,
                "seconds": round(time.perf_counter() - ld.started, 3)}})
        waiting = self._tps(self._loading())
        if waiting - self._paused:
            self.consumer.pause(*(waiting - self._paused))
        done = self._paused - waiting
        if done:
            live = done & set(self.consumer.assignment())
            if live:
                self.consumer.resume(*live)
        self._paused = waiting

    def _track_assignment(self) -> None:
        current = set(self.consumer.assignment())
        new = (current - self._assigned) | (self._newly & current)
        gone = (self._assigned - current) | (self._revoked & self._assigned)
        self._revoked.clear()
        self._newly.clear()
        self._assigned = current
        self._paused = (self._paused & current) - gone     # kafka-python unpauses on reassignment
        if gone:
            lost = {tp.partition for tp in gone}
            # a load that includes a revoked partition starts again without it (fresh scan)
            again = []
            for ld in [ld for ld in self._loads if lost & set(ld.partitions)]:
                ld.cancel()
                self._loads.remove(ld)
                again.extend(p for p in ld.partitions if p not in lost)
            self.handler.forget_partitions(lost)
            if again:
                self._loads.append(self.handler.start_assign(again, claim=False))
        if new:
            parts = sorted(tp.partition for tp in new)
            self._loads.append(self.handler.start_assign(parts))

    def _handle(self, batch) -> None:
        items = [Incoming(r.key, r.value, r.partition, Origin(r.topic, r.partition, r.offset))
                 for r in batch]
        t0 = time.perf_counter()
        try:
            rejected = self.handler.handle(items)
        except StaleWrite:
            # another instance wrote these dossiers (rebalance in flight): re-read from the last
            # committed offsets; nothing of this batch was committed.
            self.handler.metrics.stale_retries.inc()
            self._rewind({(r.topic, r.partition) for r in batch})
            return
        except Exception:
            # transient (store or broker unavailable) or a bug: nothing was committed; back off,
            # re-read the batch, stay in the group.
            log.exception("batch failed; retrying after %.1f s", self._backoff)
            self._rewind({(r.topic, r.partition) for r in batch})
            self.stop_event.wait(self._backoff)
            self._backoff = min(self._backoff * 2, 30.0)
            return
        self._backoff = 0.5
        if rejected or items:
            self.dead_letters.send(rejected, len(items))
        self._commit(batch)
        self.batches += 1
        self.handler.metrics.batch_seconds.observe(time.perf_counter() - t0)

    def _commit(self, batch) -> None:
        commit_batch(self.consumer, batch)

    def _rewind(self, tps) -> None:
        rewind(self.consumer, tps)

    def _check_due(self) -> None:
        # small batches: each batch's findings are published before the next is evaluated, so a
        # burst of due dossiers is reported progressively rather than all at the end
        # at most ~check_budget seconds per loop turn (a burst of 10^4-10^5 due dossiers takes
        # minutes of FerretDB updates): the rest on the next turns, polling in between
        parts = self._partitions()
        if not parts:
            return
        end = time.monotonic() + self.check_budget
        try:
            while self.handler.check_due(parts, self.check_limit) == self.check_limit:
                if self.stop_event.is_set():
                    break
                if time.monotonic() >= end:
                    self._last_check = 0.0      # more is due: go on right after the next poll
                    break
        except StaleWrite:
            self.handler.metrics.stale_retries.inc()

    def _record_lag(self) -> None:
        tps = list(self._assigned)
        if not tps:
            return
        try:
            ends = self.consumer.end_offsets(tps)
            for tp in tps:
                lag = max(0, ends.get(tp, 0) - self.consumer.position(tp))
                self.handler.metrics.consumer_lag.labels(tp.topic, str(tp.partition)).set(lag)
        except Exception:   # lag is informative; never stop the loop for it
            log.debug("lag not available", exc_info=True)
