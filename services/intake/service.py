"""Intake's use case, free of Flask: validate events, check references and tenancy, store them
as pending, publish them to Kafka in order, mark them published.

`Intake.submit(principal, payloads)` returns one `Outcome` per payload (status code + body); the
single-event endpoint is a batch of one, so both share exactly the same semantics.
"""
from __future__ import annotations

import hashlib
import json
import logging
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Callable

from pymongo.errors import PyMongoError

from shared.contracts.eventcheck import accept, accept_stored
from shared.contracts.events import FieldError, load_stored, out_of_range, to_wire, validate_event
from shared.platform.messaging import Published

from .store import IntakeStore

log = logging.getLogger("motcua.intake")

AGENCY_FIELDS = ("handling_agency_code", "to_agency_code", "from_agency_code")


class BrokerUnavailable(Exception):
    """Kafka could not acknowledge within the bound (or the producer cannot be built)."""


@dataclass
class Outcome:
    status: int
    body: dict
    headers: dict[str, str] = field(default_factory=dict)


def canonical(event: dict) -> str:
    """The normalised event as canonical JSON (sorted keys, compact, UTF-8 kept)."""
    return json.dumps(event, sort_keys=True, ensure_ascii=False, separators=(",", ":"))


def body_hash(event: dict, canon: str | None = None) -> str:
    """SHA-256 of the normalised event (canonical JSON): "same body" for idempotency."""
    return hashlib.sha256((canon or canonical(event)).encode("utf-8")).hexdigest()


def message_text(canon: str, recorded_at: str) -> str:
    """The Kafka message (as text) of an event whose canonical JSON is `canon`: that JSON with
    `recorded_at` as last member — the hashed text is encoded once, and stored as is."""
    return canon[:-1] + ',"recorded_at":' + json.dumps(recorded_at) + "}"


def message_bytes(value: dict, canon: str | None = None) -> bytes:
    """The Kafka message of `value` (the event plus `recorded_at`), as `message_text` builds it."""
    if canon is None:
        canon = canonical({k: v for k, v in value.items() if k != "recorded_at"})
    return message_text(canon, value["recorded_at"]).encode("utf-8")


def reference_errors(event: dict, catalog, directory) -> list[FieldError]:
    """Codes that are well-formed but unknown to the procedure catalog / agency directory.

    Component ids outside the procedure are *not* errors: sla flags them (RECEIVED_EXTRA).
    """
    errors: list[FieldError] = []
    agency = event.get("agency_code")
    if directory is not None and agency is not None and agency not in directory:
        errors.append(FieldError("unknown_agency", "agency_code",
                                 f"agency {agency!r} is not in the agency directory"))
    data = event.get("data") or {}
    if directory is not None:
        for name in AGENCY_FIELDS:
            code = data.get(name)
            if code is not None and code not in directory:
                errors.append(FieldError("unknown_agency", f"data.{name}",
                                         f"agency {code!r} is not in the agency directory"))
    code = data.get("procedure_code")
    if catalog is not None and code is not None and code not in catalog:
        errors.append(FieldError("unknown_procedure", "data.procedure_code",
                                 f"procedure {code!r} is not in the procedure catalog"))
    return errors


def _err(status: int, errors: list, headers=None) -> Outcome:
    return Outcome(status, {"errors": [e.as_dict() if hasattr(e, "as_dict") else e for e in errors]},
                   dict(headers or {}))


def stored_value(doc: dict) -> dict:
    """The event plus `recorded_at` of a stored document: its `message` (documents written before
    `message` existed carry it as the `value` sub-document)."""
    return doc["value"] if "value" in doc else json.loads(doc["message"])


def stored_message(doc: dict) -> bytes:
    """The Kafka message of a stored document, for a retry: the bytes first sent."""
    return doc["message"].encode("utf-8") if "message" in doc else message_bytes(doc["value"])


def _accepted_body(doc: dict, recorded_at: str | None = None) -> dict:
    return {"event_id": doc["_id"], "status": "published", "topic": doc["topic"],
            "partition": doc["partition"], "offset": doc["offset"],
            "recorded_at": recorded_at or stored_value(doc)["recorded_at"]}


class Intake:
    def __init__(self, *, store: Callable[[], IntakeStore], publisher: Callable[[], Any],
                 clock, topic: str, catalog: Callable[[], Any], directory: Callable[[], Any],
                 publish_timeout: float = 5.0, metrics=None,
                 on_publish_failure: Callable[[Any], None] | None = None,
                 engine_ctx: Callable[[], Any] | None = None):
        self._store = store
        self._publisher = publisher
        self.clock = clock
        self.topic = topic
        self._catalog = catalog
        self._directory = directory
        self.publish_timeout = publish_timeout
        self.metrics = metrics      # object with .rejected (Counter[reason]) and .publish (Histogram)
        self.on_publish_failure = on_publish_failure   # gets the publisher that failed
        self._engine_ctx = engine_ctx     # the legal engine's context: the receipt's due date
        self._executor: ThreadPoolExecutor | None = None
        self._executor_lock = threading.Lock()

    # -- the use case ---------------------------------------------------------------------------

    def submit(self, principal, payloads: list) -> list[Outcome]:
        """Validate, store and publish; one Outcome per payload, in order."""
        catalog, directory = self._catalog(), self._directory()
        outcomes: list[Outcome | None] = [None] * len(payloads)
        run: _Run | None = None                          # built at the first candidate
        seen: dict[str, tuple[int, str]] = {}            # event_id -> (first index, hash)
        follow: dict[int, int] = {}                      # duplicate index -> first index
        for i, payload in enumerate(payloads):
            wire = accept(payload)      # valid events: wire form, without marshmallow's bookkeeping
            event = wire
            if event is None:
                event, errors = validate_event(payload)
            if event is None:
                errors = errors + self._raw_reference_errors(payload, catalog, directory, errors)
                outcomes[i] = self._reject(422, errors)
                continue
            errors = reference_errors(event, catalog, directory)
            if errors:
                outcomes[i] = self._reject(422, errors)
                continue
            if not principal.can_access(event["agency_code"], directory):
                outcomes[i] = self._reject(403, [FieldError(
                    "forbidden_agency", "agency_code",
                    f"this API key may only post events of agency {principal.agency_code} "
                    f"and its subordinate agencies")])
                continue
            if wire is None:
                try:
                    wire = to_wire(event)
                except OverflowError:      # e.g. 0001-01-01T00:00:00+07:00 has no UTC form
                    outcomes[i] = self._reject(422, out_of_range(event))
                    continue
            canon = canonical(wire)
            digest = body_hash(wire, canon)
            eid = wire["event_id"]
            if eid in seen:
                first, first_hash = seen[eid]
                if first_hash != digest:
                    outcomes[i] = self._conflict(eid)
                else:
                    follow[i] = first
                continue
            seen[eid] = (i, digest)
            if run is None:
                run = _Run(self, principal, outcomes)
            run.add((i, wire, digest, canon), more=i + 1 < len(payloads))   # stored/sent by chunks

        if run is not None:
            run.finish()
        for i, first in follow.items():
            src = outcomes[first]
            if src.status in (200, 202):
                outcomes[i] = Outcome(200, dict(src.body, duplicate=True))
            else:
                outcomes[i] = Outcome(src.status, src.body, src.headers)
        return outcomes  # type: ignore[return-value]

    def _pool(self) -> ThreadPoolExecutor:
        """Threads that run a batch's MongoDB writes while the request thread validates and
        sends the next chunk (built on first use: after gunicorn's fork)."""
        if self._executor is None:
            with self._executor_lock:
                if self._executor is None:
                    self._executor = ThreadPoolExecutor(4, thread_name_prefix="intake-store")
        return self._executor

    def _published(self, i: int, doc: dict, retry: bool, res: Published,
                   recorded_at: str | None = None) -> Outcome:
        body = _accepted_body(dict(doc, topic=res.topic, partition=res.partition, offset=res.offset),
                              recorded_at)
        self.add_receipt(body, doc)
        return Outcome(200, dict(body, duplicate=True)) if retry else Outcome(202, body)

    def stored_event(self, doc: dict) -> dict:
        """A stored document's event as the sla service reads it from Kafka (aware UTC instants)."""
        value = stored_value(doc)
        return accept_stored(value) or load_stored(value)

    def receipt(self, doc: dict) -> dict | None:
        """The due date for the receipt slip of a stored `dossier.received` (None for other types):
        the engine's `receipt_due`, the same computation the sla service stores."""
        if doc.get("type") != "dossier.received" or self._engine_ctx is None:
            return None
        from shared.domain.engine import receipt_due
        try:
            out = receipt_due(self.stored_event(doc), self._engine_ctx())
        except PyMongoError:
            raise
        except Exception as exc:   # noqa: BLE001 - published already: the 2xx stands without a date
            log.warning("no due date for the receipt", extra={"fields": {
                "event_id": doc["_id"], "dossier_code": doc["dossier_code"], "error": repr(exc)[:300]}})
            out = {"due_at": None, "reason": f"the due date could not be computed ({type(exc).__name__})"}
        out["receipt_url"] = f"/v1/receipts/{doc['_id']}"
        return out

    def add_receipt(self, body: dict, doc: dict) -> None:
        rec = self.receipt(doc)
        if rec is not None:
            body["receipt"] = rec

    @staticmethod
    def _log_published(done: list[tuple[dict, bool, Published]]) -> None:
        """One line per event alone, one line per chunk of a batch (the logging machinery cost
        more than the rest of accepting a batch event)."""
        if len(done) == 1:
            doc, retry, res = done[0]
            log.info("event published", extra={"fields": {
                "event_id": doc["_id"], "type": doc["type"], "dossier_code": doc["dossier_code"],
                "agency_code": doc["agency_code"], "partition": res.partition,
                "offset": res.offset, "retry": retry}})
        elif done:
            log.info("events published", extra={"fields": {"count": len(done), "events": [
                {"event_id": doc["_id"], "type": doc["type"], "dossier_code": doc["dossier_code"],
                 "agency_code": doc["agency_code"], "partition": res.partition,
                 "offset": res.offset, "retry": retry} for doc, retry, res in done]}})

    def _not_published(self, doc: dict, res) -> Outcome:
        log.warning("publish failed", extra={"fields": {
            "event_id": doc["_id"], "dossier_code": doc["dossier_code"], "error": repr(res)}})
        return self._reject(503, [FieldError(
            "broker_unavailable", "$",
            "the event could not be published to Kafka; retry with the same event_id")],
            {"Retry-After": "5"}, reason="broker_unavailable")

    def _store_down(self) -> Outcome:
        return self._reject(503, [FieldError("store_unavailable", "$",
                                             "the event store is unavailable; retry later")],
                            {"Retry-After": "5"}, reason="store_unavailable")

    # -- helpers --------------------------------------------------------------------------------

    def _raw_reference_errors(self, payload, catalog, directory, schema_errors) -> list[FieldError]:
        """Reference checks on the fields that passed the schema, so every error comes at once."""
        if not isinstance(payload, dict):
            return []
        bad = {e.field for e in schema_errors}
        data = payload.get("data") if isinstance(payload.get("data"), dict) else {}
        agency = payload.get("agency_code")
        probe = {"agency_code": agency if isinstance(agency, str) and "agency_code" not in bad else None,
                 "data": {k: data.get(k) for k in (*AGENCY_FIELDS, "procedure_code")
                          if isinstance(data.get(k), str) and f"data.{k}" not in bad}}
        return reference_errors(probe, catalog, directory)

    def _conflict(self, event_id: str) -> Outcome:
        return self._reject(409, [FieldError(
            "event_id_conflict", "event_id",
            f"event {event_id} was already received with a different body")], reason="conflict")

    def _reject(self, status: int, errors: list[FieldError], headers=None, reason=None) -> Outcome:
        if self.metrics is not None:
            self.metrics.rejected.labels(reason or errors[0].code).inc()
        # codes and field paths only: messages may quote submitted values
        log.info("event rejected", extra={"fields": {
            "status": status, "errors": [f"{e.field}:{e.code}" for e in errors]}})
        return _err(status, errors, headers)


CHUNK = 100     # events stored and sent together inside one request


class _Run:
    """One request's accepted candidates, stored and published in order, in chunks of `CHUNK`.

    For each chunk: insert the documents `pending` (the unique `_id` is the idempotency check:
    one round trip, duplicates answered from the stored document), send the ones to publish
    (kafka-python returns at once; its thread delivers), and once every ack of a chunk is in,
    insert its receipts. A batch overlaps the stages: the next chunk is validated and its insert
    runs (on `Intake._pool()`) while the previous chunk is being delivered, receipts of a chunk
    are written while later chunks are still in flight. Guarantees are those of one chunk at a
    time: no event is sent before its pending document is stored; the response waits for every
    ack and receipt (a 2xx only for acknowledged events); order per dossier is send order; once a
    send fails (or the store fails after something was sent) nothing later in the request is
    sent — those events get a 503 and stay retryable. A single event is one chunk, inline (no
    thread hand-off); a store failure before anything was sent raises (503 for the request).
    """

    def __init__(self, intake: "Intake", principal, outcomes: list):
        self.intake = intake
        self.principal = principal
        self.outcomes = outcomes
        self.store = intake._store()
        self.now = intake.clock.now()
        self.chunk: list[tuple[int, dict, str, str]] = []   # (index, wire, hash, canonical)
        self.messages: dict[str, bytes] = {}     # event id -> Kafka message, for new documents
        self.at = self.now.isoformat()
        self.inserting = None            # (chunk, docs, future | existing ids): stored, not sent
        self.sent: list[tuple[list, list, float]] = []   # (items, futures, deadline), acks awaited
        self.receipts: list = []         # (future, count) of receipt inserts in the background
        self.publisher = None
        self.stopped: Callable[[dict, Any], Outcome] | None = None   # once set: nothing more sent
        self.anything_sent = False
        self.failed = False
        self.t0: float | None = None

    # -- stages ---------------------------------------------------------------------------------

    def add(self, cand: tuple[int, dict, str, str], more: bool) -> None:
        self.chunk.append(cand)
        if len(self.chunk) >= CHUNK or not more:
            self._store_chunk(more)

    def _store_chunk(self, more: bool) -> None:
        chunk, self.chunk = self.chunk, []
        if self.stopped is not None:            # nothing more is sent: not even stored
            for i, wire, _, _ in chunk:
                self.outcomes[i] = self.stopped({"_id": wire["event_id"],
                                                 "dossier_code": wire["dossier_code"]}, None)
            return
        docs = []
        for _, wire, digest, canon in chunk:
            text = message_text(canon, self.at)
            # the message as text: the exact bytes published, republished as they are on a retry
            docs.append({"_id": wire["event_id"], "hash": digest, "status": "pending",
                         "dossier_code": wire["dossier_code"], "agency_code": wire["agency_code"],
                         "type": wire["type"], "key_id": self.principal.key_id,
                         "recorded_at": self.now, "message": text})
            self.messages[wire["event_id"]] = text.encode("utf-8")
        previous, self.inserting = self.inserting, None
        if more or previous is not None:       # something to overlap with: insert in the background
            pending = self.intake._pool().submit(self.store.insert_pending, docs)
        else:
            pending = None
        if previous is not None:
            self._send(*previous)
        if pending is None:
            try:
                pending = self.store.insert_pending(docs)
            except PyMongoError:
                if not self.anything_sent:
                    raise
                self.stopped = lambda doc, res: self.intake._store_down()
                pending = set()
        self.inserting = (chunk, docs, pending)
        if not more:
            current, self.inserting = self.inserting, None
            self._send(*current)

    def _send(self, chunk, docs, pending) -> None:
        """Classify a stored chunk (new / duplicate / conflict) and send what is to publish."""
        if self.stopped is not None:
            for (i, _, _, _), doc in zip(chunk, docs):
                self.outcomes[i] = self.stopped(doc, None)
            return
        try:
            existing_ids = pending.result() if isinstance(pending, Future) else pending
            existing = self.store.get_many(existing_ids) if existing_ids else {}
        except PyMongoError:
            if not self.anything_sent:
                raise
            self.stopped = lambda doc, res: self.intake._store_down()
            self._send(chunk, docs, None)
            return
        items: list[tuple[int, dict, bool]] = []     # (index, doc, is_retry)
        for (i, wire, digest, _), doc in zip(chunk, docs):
            if doc["_id"] not in existing_ids:
                items.append((i, doc, False))
                continue
            old = existing.get(doc["_id"])
            if old is None:          # vanished between insert and read
                self.outcomes[i] = _err(503, [FieldError("store_unavailable", "$",
                                                         "event store inconsistent; retry")],
                                        {"Retry-After": "1"})
            elif old["hash"] != digest:
                self.outcomes[i] = self.intake._conflict(doc["_id"])
            elif old["status"] == "published":
                body = _accepted_body(old)
                self.intake.add_receipt(body, old)
                self.outcomes[i] = Outcome(200, dict(body, duplicate=True))
            else:                    # pending: the earlier attempt may not have reached Kafka
                items.append((i, old, True))
        if not items:
            return
        if self.t0 is None:
            self.t0 = time.perf_counter()
        deadline = time.monotonic() + self.intake.publish_timeout
        if self.publisher is None:
            try:
                self.publisher = self.intake._publisher()
            except Exception as exc:   # noqa: BLE001 - e.g. NoBrokersAvailable while bootstrapping
                self._stop_broker(BrokerUnavailable(repr(exc)))
                self._finalize(items, [BrokerUnavailable(repr(exc))] * len(items))
                return
        self.anything_sent = True
        futures: list = []
        for _, doc, retry in items:
            try:
                futures.append(self.publisher.send(self.intake.topic, doc["dossier_code"],
                                                   self._message(doc, retry),
                                                   {"event_id": doc["_id"], "type": doc["type"]}))
            except Exception as exc:   # noqa: BLE001 - keep order: nothing after a failed send
                futures.append(exc)
                self._stop_broker(BrokerUnavailable("not attempted"))
                break
        futures += [BrokerUnavailable("not attempted")] * (len(items) - len(futures))
        self.sent.append((items, futures, deadline))
        self._collect(block=False)

    def _message(self, doc: dict, retry: bool) -> bytes:
        """A new event's message was encoded with its hash; a retry's is rebuilt from the stored
        value (the same bytes for anything stored by this version)."""
        raw = None if retry else self.messages.get(doc["_id"])
        return raw if raw is not None else stored_message(doc)

    def _collect(self, block: bool) -> None:
        """Finish the sent chunks whose acks are all in (all of them when `block`), in order."""
        while self.sent:
            items, futures, deadline = self.sent[0]
            if not block and not all(isinstance(f, Exception) or f.is_done for f in futures):
                return
            self.sent.pop(0)
            results = []
            for f in futures:
                if isinstance(f, Exception):
                    results.append(f)
                    continue
                try:
                    md = f.get(timeout=max(0.05, deadline - time.monotonic()))
                    results.append(Published(md.topic, md.partition, md.offset))
                except Exception as exc:   # noqa: BLE001
                    results.append(exc)
            self._finalize(items, results, background=not block or bool(self.sent))

    def _finalize(self, items, results, background: bool = False) -> None:
        marks, done = [], []
        for (i, doc, retry), res in zip(items, results):
            if isinstance(res, Published):
                marks.append((doc["_id"], res.topic, res.partition, res.offset))
                done.append((doc, retry, res))
                self.outcomes[i] = self.intake._published(i, doc, retry, res,
                                                          None if retry else self.at)
            else:
                self.failed = True
                self.outcomes[i] = self.intake._not_published(doc, res)
        self.intake._log_published(done)
        if not marks:
            return
        if background:
            self.receipts.append((self.intake._pool().submit(
                self.store.mark_published, marks, self.intake.clock.now()), len(marks)))
        else:
            self._mark(lambda: self.store.mark_published(marks, self.intake.clock.now()), len(marks))

    def _stop_broker(self, exc: Exception) -> None:
        self.failed = True
        if self.stopped is None:
            self.stopped = lambda doc, res: self.intake._not_published(doc, exc)

    def _mark(self, write: Callable[[], Any], count: int) -> None:
        try:
            write()
        except Exception as exc:   # noqa: BLE001 - published already: the 2xx stands, a retry republishes
            log.error("could not mark events published (they stay pending)",
                      extra={"fields": {"count": count, "error": repr(exc)}})

    def finish(self) -> None:
        if self.chunk:
            self._store_chunk(more=False)
        if self.inserting is not None:
            current, self.inserting = self.inserting, None
            self._send(*current)
        self._collect(block=True)
        for fut, count in self.receipts:
            self._mark(fut.result, count)
        if self.t0 is not None and self.intake.metrics is not None:
            self.intake.metrics.publish.observe(time.perf_counter() - self.t0)
        if self.failed and self.publisher is not None and self.intake.on_publish_failure is not None:
            self.intake.on_publish_failure(self.publisher)
