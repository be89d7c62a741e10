"""The worker's background sender: sends the alerts leased at planning while the loop polls and
plans the next batch. The loop owns it (loop.py); the work it runs is the service's.

A dispatcher thread hands each leased alert to the send pool as it comes (no batch waits for its
slowest send); a marker thread records the accepted ones together every few milliseconds. At
most `max_unrecorded` alerts are being sent or accepted and not yet recorded at any moment: that
is how many a crash can make the queue send a second time. docs/architecture.md, "Delivery".
"""
from __future__ import annotations

import logging
import threading
import time

from bson import ObjectId

from shared.platform.clock import ensure_utc
from shared.platform.runtime import Backoff

from .delivery import log_fields

log = logging.getLogger("motcua.notify")


MAX_UNRECORDED = 50


class BackgroundSender:
    def __init__(self, service, max_unrecorded: int = MAX_UNRECORDED):
        self.service = service
        self.outbox = service.outbox
        self.dispatcher = service.dispatcher
        self._threads: list[threading.Thread] | None = None
        self._stop = threading.Event()
        self._sink: list = []              # accepted sends waiting for their marks (under outbox.cv)
        # a send takes a permit before it starts; the marker gives it back once the send is
        # recorded (or the send ends without one): the sends a crash would repeat stay bounded
        # when the SMTP server accepts faster than the store records
        self._permits = threading.BoundedSemaphore(max_unrecorded)

    def start(self) -> None:
        if self._threads is not None:
            return
        self._stop = threading.Event()
        self._sink = []
        self._threads = [threading.Thread(target=self._dispatch_run, name="notify-direct", daemon=True),
                         threading.Thread(target=self._marker_run, name="notify-marks", daemon=True)]
        for t in self._threads:
            t.start()

    def stop(self, timeout: float = 30.0) -> None:
        """Stop once what it holds is sent and marked (their offsets are committed; anything
        left is sent from the queue when its lease ends)."""
        threads = self._threads
        if threads is None:
            return
        self._stop.set()
        with self.outbox.cv:
            self.outbox.cv.notify_all()
        deadline = time.monotonic() + timeout
        for t in threads:
            t.join(max(0.0, deadline - time.monotonic()))
        self._threads = None

    def wait(self, limit: int, timeout: float) -> bool:
        """Back-pressure for the loop: at most `limit` leased alerts waiting or being sent."""
        return self.outbox.wait_below(limit, timeout)

    def _dispatch_run(self) -> None:
        cv = self.outbox.cv
        while True:
            with cv:
                while not self.outbox.items and not self._stop.is_set():
                    cv.wait(1.0)
                if not self.outbox.items:
                    return
                leased = self.outbox.take()     # the condition's lock is reentrant
            pool = self.dispatcher.pool()
            for d in leased:
                pool.submit(self._send_one, d)

    def _send_one(self, doc: dict) -> None:
        """One leased alert (a pool thread); accepted: into the marker thread's sink."""
        queued = False
        self._permits.acquire()
        try:
            now = ensure_utc(self.service.clock.now())
            if self.dispatcher.fresh(doc, now):
                out: list = []
                self.dispatcher.deliver(doc, now, out)
                if out:
                    with self.outbox.cv:
                        self._sink.extend(out)
                        self.outbox.cv.notify_all()
                    queued = True
        except Exception:
            log.exception("sending a leased alert failed; the queue sends it when its lease ends",
                          extra={"fields": log_fields(doc)})
        finally:
            self.outbox.forget([doc["finding_id"]])
            if not queued:
                self._permits.release()
                self.outbox.finished(1)

    def _marker_run(self) -> None:
        backoff = Backoff()
        cv = self.outbox.cv
        while True:
            with cv:
                while not self._sink and not (self._stop.is_set() and self.outbox.inflight == 0
                                              and not self.outbox.items):
                    cv.wait(1.0)
                if not self._sink:
                    return
                if len(self._sink) < 50 and self.outbox.inflight > len(self._sink):
                    cv.wait(0.02)   # a few more sends finish: fewer, larger writes
                batch, self._sink = self._sink, []
            try:
                self._record(batch, backoff)
            finally:
                for _ in batch:
                    self._permits.release()
                self.outbox.finished(len(batch))

    def _record(self, batch: list, backoff: Backoff) -> None:
        """Record accepted sends, trying again while the store fails: each was sent, and one not
        recorded is sent again when its lease ends. Meanwhile their permits stay taken, so no
        more than `max_unrecorded` go out while the store is down. Given up only when the sender
        stops (then they count as a crash's repeats)."""
        ids = [ObjectId() for _ in batch]          # the same delivery entries on every try
        while True:
            try:
                self.dispatcher.deliveries.sent(batch, ids=ids)
                backoff.reset()
                return
            except Exception:
                if self._stop.is_set():
                    log.exception("recording sent alerts failed while stopping; they will be sent "
                                  "again after their lease")
                    return
                log.exception("recording sent alerts failed; trying again in %.1f s", backoff.delay)
                self._stop.wait(backoff.failed())
