"""Sending: claim due notifications, render, send, record; retries with backoff, then `failed`.

Leases, claims and "at most one duplicate per crash": docs/architecture.md, "Delivery".
"""
from __future__ import annotations

import logging
import time as _time
from datetime import datetime, timedelta

from shared.platform.clock import Clock, ensure_utc
from shared.platform.runtime import backoff_delay

from .channels import ChannelError
from .compose import Composer
from .delivery import DeliveryLog, log_fields
from .outbox import Outbox
from .policy import Policy
from .store import NotifyStore
from .templates import TemplateMissing

log = logging.getLogger("motcua.notify")


# notifications claimed from the queue per send batch (a crash repeats at most one batch)
CLAIM_BATCH = 50


class Dispatcher:
    def __init__(self, store: NotifyStore, policy: Policy, channels: dict, clock: Clock, composer: Composer,
                 deliveries: DeliveryLog, outbox: Outbox | None, *, lease: timedelta,
                 send_threads: int = 4, claim_batch: int = CLAIM_BATCH):
        self.store, self.policy, self.channels, self.clock = store, policy, channels, clock
        self.composer, self.deliveries, self.outbox, self.lease = composer, deliveries, outbox, lease
        self.send_threads, self.claim_batch = send_threads, claim_batch
        self._pool = None

    def pool(self):
        """The threads that send a batch side by side (sends wait on the network)."""
        if self._pool is None:
            from concurrent.futures import ThreadPoolExecutor
            self._pool = ThreadPoolExecutor(max(1, self.send_threads), thread_name_prefix="notify-send")
        return self._pool

    def dispatch_queue(self, now: datetime | None = None, max_items: int = 1000) -> int:
        """Claim and send due notifications from the queue (at most `max_items`); returns how
        many were attempted."""
        n = 0
        while n < max_items:
            t = ensure_utc(now or self.clock.now())
            docs = self.store.claim_due(t, self.lease, min(self.claim_batch, max_items - n))
            if not docs:
                break
            self.send_all(docs, t)
            n += len(docs)
        return n

    def fresh(self, doc: dict, now: datetime) -> bool:
        """A leased alert may still be sent by this instance: its lease must not end while it is
        being sent, or another sender could take it too (the queue sends it when it ends)."""
        return doc.get("lease_end") is None or doc["lease_end"] - now > self.lease / 4

    def send_leased(self, now: datetime) -> int:
        """Send the alerts leased at planning (outbox.py); returns how many were attempted."""
        if self.outbox is None:
            return 0
        leased = self.outbox.take()
        if not leased:
            return 0
        keep = [d for d in leased if self.fresh(d, now)]
        try:
            if keep:
                self.send_all(keep, now)
        finally:
            self.outbox.forget({d["finding_id"] for d in leased})
            self.outbox.finished(len(leased))
        return len(keep)

    def send_all(self, docs: list[dict], t: datetime) -> None:
        """Send a batch; the successful sends are recorded together afterwards (one batched
        write). A crash before that leaves the batch's sent notifications leased, so each is
        sent once more after the lease (`reclaimed`)."""
        sent: list[tuple[dict, datetime, float]] = []
        try:
            if self.send_threads > 1 and len(docs) > 1:
                list(self.pool().map(lambda d: self.deliver(d, t, sent), docs))
            else:
                for d in docs:
                    self.deliver(d, t, sent)
        finally:
            if sent:
                self.deliveries.sent(sent)

    def deliver(self, doc: dict, now: datetime, sent: list) -> None:
        """Render and send one notification; failures and retries are recorded here, a success
        is appended to `sent` for the caller to record."""
        fields = log_fields(doc)
        channel = self.channels.get(doc["channel"])
        try:
            msg = self.composer.outgoing(doc, now)
        except (TemplateMissing, Exception) as exc:   # rendering is deterministic: retrying won't help
            log.exception("notification failed: cannot render", extra={"fields": fields})
            self.deliveries.failed(doc, now, f"render: {type(exc).__name__}: {exc}"[:300], 0.0)
            return
        if msg is None:
            self.store.finish(doc["_id"], {"status": "cancelled", "cancelled_at": now,
                                           "error": "resolved or acknowledged before delivery"})
            return
        if channel is None:
            self.deliveries.failed(doc, now, f"channel {doc['channel']!r} is not configured", 0.0)
            return
        t0 = _time.perf_counter()
        try:
            channel.send(msg)
        except ChannelError as exc:
            spent = _time.perf_counter() - t0
            attempts = doc.get("attempts", 0) + 1
            if exc.permanent or attempts >= self.policy.retry_attempts:
                self.deliveries.failed(doc, now, str(exc), spent)
                return
            delay = backoff_delay(attempts, self.policy.retry_base_seconds, self.policy.retry_max_seconds)
            self.deliveries.record(doc, now, "error", str(exc), spent)
            self.store.retry_at(doc["_id"], now + timedelta(seconds=delay),
                                {"attempts": attempts, "error": str(exc)})
            self.deliveries.count("retries", doc["channel"])
            log.warning("send failed; will retry", extra={"fields": {**fields, "attempt": attempts,
                                                                      "retry_in_s": delay, "error": str(exc)}})
            return
        sent.append((doc, ensure_utc(self.clock.now()), _time.perf_counter() - t0))   # atomic: threads share it
