"""The consumer loop: poll, hand the batch to the handler, dead-letter, commit; scheduled checks.

The loop owns offsets and threads; the handler owns the work. Protocol (delivery, held partitions,
scheduler, pipelined writes and commits, rebalance): docs/architecture.md, "sla".
"""
from __future__ import annotations

import gc
import logging
import threading
import time
from collections import deque
from concurrent.futures import ThreadPoolExecutor, wait
from dataclasses import dataclass

from shared.platform.consumer import commit_batch, rewind
from shared.platform.runtime import Backoff

from .dlq import DeadLetters, Origin
from .handlers import SlaHandler
from .projection import Incoming
from .repository import StaleWrite

log = logging.getLogger("motcua.sla.loop")

# "never" for the monotonic timestamps below: time.monotonic() counts from an unspecified point
# (boot, on Linux), so 0.0 is not "long ago" on a machine up for less than an interval
NEVER = float("-inf")


class Skipped(Exception):
    """A batch's write was not run: an earlier batch's write failed."""


@dataclass
class _InFlight:
    pending: object          # staging.Pending
    batch: list              # its Kafka records
    future: object           # concurrent.futures.Future of its write
    started: float
    finished: bool = False   # handler.finish() done (by the rebalance listener), not committed yet


class ConsumerLoop:
    def __init__(self, consumer, handler: SlaHandler, dead_letters: DeadLetters, *,
                 poll_timeout: float = 0.5, check_interval: float = 0.5, check_limit: int = 400,
                 lag_interval: float = 5.0, max_records: int = 500, load_step: float = 1.0,
                 check_budget: float = 10.0, pipeline: bool = False, max_inflight: int = 4,
                 write_batch: int = 100, freeze_gc: bool = False, commit_interval: float = 0.2):
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
        self._loads: list = []          # partitions.Loading in progress, oldest first
        self._paused: set = set()
        self._revoked: set = set()
        self._newly: set = set()
        self.stop_event = threading.Event()
        self._assigned: set = set()
        self._last_check = NEVER
        self._last_lag = NEVER
        self.batches = 0
        self._backoff = Backoff()
        self.pipeline = pipeline
        self.max_inflight = max(1, max_inflight)
        self.write_batch = max(1, write_batch)
        self.freeze_gc = freeze_gc
        self.commit_interval = commit_interval
        self._committable: list = []        # records of written batches not committed yet
        self._last_commit = NEVER
        self._inflight: deque[_InFlight] = deque()
        self._broken = threading.Event()    # a write failed: the writer skips the batches after it
        self.write_failures = 0             # failed batch writes handled (_fail)
        self._writer = ThreadPoolExecutor(1, thread_name_prefix="sla-writer") if pipeline else None
        self._warming: threading.Thread | None = None

    def stop(self) -> None:
        self.stop_event.set()

    def run(self) -> None:
        """Run until stop() (SIGTERM in the worker); commits and leaves the group on the way out."""
        # build the engine's calendars while the first poll joins the group
        self._warming = threading.Thread(target=self._warm_up, name="sla-warm-up", daemon=True)
        self._warming.start()
        try:
            while not self.stop_event.is_set():
                self.run_once()
        finally:
            try:
                self._drain()
            except Exception:   # not committed: re-read by the next owner (idempotent)
                log.exception("writes in flight failed at shutdown")
            if self._writer is not None:
                self._writer.shutdown(wait=True)
            try:
                self.handler.flush_marks()
            except Exception:   # a crash here only republishes the same revisions later
                log.exception("writing published marks failed")
            try:
                self.consumer.close(autocommit=False)
            except Exception:   # closing a consumer whose broker is gone must not hide the cause
                log.exception("consumer close failed")

    def run_once(self) -> None:
        busy = self._loads or self._inflight
        records = self.consumer.poll(timeout_ms=0 if busy else int(self.poll_timeout * 1000),
                                     max_records=self.max_records)
        batch = [r for rs in records.values() for r in rs]
        failures = self.write_failures
        # writes that ended (during the poll, or waited for by a revocation): commit or fail them
        # before the assignment changes what is held
        self._reap(block=False)
        self._track_assignment()
        if self._loads:
            self._load()
        if batch and self.write_failures != failures:
            # read after a batch that failed to be written: read again after it, not committed
            self._rewind({(r.topic, r.partition) for r in batch})
            batch = []
        loading = self._loading()
        if loading and batch:
            # not held yet: these records are read again once their partition is loaded
            later = {(r.topic, r.partition) for r in batch if r.partition in loading}
            if later:
                self._rewind(later)
                batch = [r for r in batch if (r.topic, r.partition) not in later]
        if batch:
            self._handle(batch)
        elif self._inflight or self._committable:
            self._reap(block=True)      # nothing new to prepare: wait for the writes, commit
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
                # hand the partitions over with their writes done and recorded as published
                # (the marks below); committed after the poll: no blocking consumer call may be
                # made from a rebalance callback
                loop._settle_writes()
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
        if (new or gone) and self._inflight:
            self._drain()
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

    def _warm_up(self) -> None:
        self.handler.warm_up()
        if self.freeze_gc and not gc.get_freeze_count():
            # what is loaded by now (modules, catalog, calendars, clients) lives as long as the
            # process: out of the collector's generations, a full collection no longer walks it
            gc.freeze()

    def _warmed(self) -> None:
        if self._warming is not None:
            self._warming.join()
            self._warming = None

    def _handle(self, batch) -> None:
        self._warmed()
        failures = self.write_failures
        items = [Incoming(r.key, r.value, r.partition, Origin.of(r))
                 for r in batch]
        if self.pipeline and self.handler.in_memory(items):
            # in parts of write_batch records: the first part's write starts while the next ones
            # are prepared, and only the last part's write is left when the poll's work is done
            n = self.write_batch
            for i in range(0, len(batch), n):
                self._submit(batch[i:i + n], items[i:i + n])
                if self.write_failures != failures:
                    self._rewind({(r.topic, r.partition) for r in batch[i + n:]})
                    return
            return
        if not self._drain():
            self._rewind({(r.topic, r.partition) for r in batch})   # read after a failed batch
            return
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
            log.exception("batch failed; retrying after %.1f s", self._backoff.delay)
            self._rewind({(r.topic, r.partition) for r in batch})
            self.stop_event.wait(self._backoff.failed())
            return
        self._backoff.reset()
        if rejected or items:
            self.dead_letters.send(rejected, len(items))
        self._commit(batch)
        self.batches += 1
        self.handler.metrics.batch_seconds.observe(time.perf_counter() - t0)

    def _commit(self, batch) -> None:
        if self._revoked:   # revoked during the poll: the new owner re-reads those records
            batch = [r for r in batch if (r.topic, r.partition) not in
                     {(tp.topic, tp.partition) for tp in self._revoked}]
        if batch:
            commit_batch(self.consumer, batch)

    # -- pipelined writes -----------------------------------------------------------------------
    def _submit(self, batch, items) -> None:
        """Prepare a batch on the held copies and queue its write; commit what has been written."""
        t0 = time.perf_counter()
        try:
            pending = self.handler.prepare(items)
        except Exception:
            # a bug (prepare reads nothing from the store): nothing of this batch is held or
            # committed; the writes before it go on
            log.exception("batch failed; retrying after %.1f s", self._backoff.delay)
            self._drain()
            self._rewind({(r.topic, r.partition) for r in batch})
            self.stop_event.wait(self._backoff.failed())
            return
        self._inflight.append(_InFlight(pending, batch, self._writer.submit(self._write, pending), t0))
        self._reap(block=False)
        while len(self._inflight) > self.max_inflight:
            self._reap(block=True, upto=1)

    def _write(self, pending) -> None:
        """On the writer thread: store and publish one batch, unless an earlier one failed."""
        if self._broken.is_set():
            raise Skipped()
        try:
            self.handler.write(pending)
        except BaseException:
            self._broken.set()
            raise

    def _settle_writes(self) -> None:
        """Wait until every write in flight has ended and record the successful ones (oldest
        first, up to a failure) as finished; their dead letters and commit wait for _reap."""
        if not self._inflight:
            return
        wait([job.future for job in self._inflight])
        for job in self._inflight:
            if job.future.exception() is not None:
                break
            if not job.finished:
                self.handler.finish(job.pending)
                job.finished = True

    def _drain(self) -> bool:
        """Wait for the writes in flight and commit them; False when one failed (see _fail)."""
        return self._reap(block=True)

    def _reap(self, block: bool, upto: int | None = None) -> bool:
        """Commit, oldest first, the batches whose write and publish are done (waiting for them
        when `block`, for at most `upto` batches; consecutive ones in one commit); False when a
        write failed (handled by _fail: nothing after it is committed)."""
        done: list[_InFlight] = []
        failed: BaseException | None = None
        dead_letter_failure = False
        while self._inflight and (upto is None or len(done) < upto):
            job = self._inflight[0]
            if not block and not job.future.done():
                break
            failed = job.future.exception()
            if failed is None:
                try:
                    self.dead_letters.send(job.pending.rejected, job.pending.items)
                except BaseException as exc:    # stored, not committed; nothing later either
                    failed, dead_letter_failure = exc, True
            if failed is not None:
                break
            self._inflight.popleft()
            if not job.finished:
                self.handler.finish(job.pending)
            done.append(job)
        if done:
            self._committable.extend(r for job in done for r in job.batch)
            self._backoff.reset()
            self.batches += len(done)
            now = time.perf_counter()
            for job in done:
                self.handler.metrics.batch_seconds.observe(now - job.started)
        # while batches keep coming, at most one commit per commit_interval (each is a broker
        # round trip on this thread); at once when waiting for the writes, after a failure and
        # right after a revocation (before the assignment is updated)
        if self._committable and ((block and upto is None) or failed is not None or self._revoked
                                  or time.monotonic() - self._last_commit >= self.commit_interval):
            self._commit(self._committable)
            self._committable = []
            self._last_commit = time.monotonic()
        if failed is not None:
            self._fail(failed)
            if dead_letter_failure:
                raise failed
            return False
        return True

    def _fail(self, exc: BaseException) -> None:
        """The oldest batch in flight failed: abandon it and every batch after it (newest first),
        rewind their partitions to the committed offsets, back off unless it was a StaleWrite."""
        self.write_failures += 1
        chain = list(self._inflight)
        self._inflight.clear()
        wait([j.future for j in chain])     # the ones after it end at once (Skipped)
        self._broken.clear()
        for job in reversed(chain):
            if not job.finished:        # finished: stored, published and recorded already
                self.handler.abandon(job.pending, job.future.exception() or (exc if job is chain[0] else None))
        self._rewind({(r.topic, r.partition) for j in chain for r in j.batch})
        if isinstance(exc, StaleWrite):
            self.handler.metrics.stale_retries.inc()
            return
        log.error("batch write failed; %d batch(es) re-read after %.1f s", len(chain), self._backoff.delay,
                  exc_info=exc)
        self.stop_event.wait(self._backoff.failed())

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
        self._warmed()
        if self._inflight and self.handler.due_now() and not self._drain():
            return              # a write failed: its batches are read again first
        end = time.monotonic() + self.check_budget
        try:
            while self.handler.check_due(parts, self.check_limit) == self.check_limit:
                if self.stop_event.is_set():
                    break
                if time.monotonic() >= end:
                    self._last_check = NEVER    # more is due: go on right after the next poll
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
