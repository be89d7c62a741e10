"""Intake's use case, free of Flask: validate events, check references and tenancy, store them
as pending, publish them to Kafka in order, mark them published.

`Intake.submit(principal, payloads)` returns one `Outcome` per payload (status code + body); the
single-event endpoint is a batch of one, so both share exactly the same semantics.
"""
from __future__ import annotations

import hashlib
import json
import logging
import time
from dataclasses import dataclass, field
from typing import Any, Callable

from shared.events import FieldError, to_wire, validate_event
from shared.messaging import Published

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


def body_hash(event: dict) -> str:
    """SHA-256 of the normalised event (canonical JSON): "same body" for idempotency."""
    canon = json.dumps(event, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(canon.encode("utf-8")).hexdigest()


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


def _accepted_body(doc: dict) -> dict:
    return {"event_id": doc["_id"], "status": "published", "topic": doc["topic"],
            "partition": doc["partition"], "offset": doc["offset"],
            "recorded_at": doc["value"]["recorded_at"]}


class Intake:
    def __init__(self, *, store: Callable[[], IntakeStore], publisher: Callable[[], Any],
                 clock, topic: str, catalog: Callable[[], Any], directory: Callable[[], Any],
                 publish_timeout: float = 5.0, metrics=None,
                 on_publish_failure: Callable[[Any], None] | None = None):
        self._store = store
        self._publisher = publisher
        self.clock = clock
        self.topic = topic
        self._catalog = catalog
        self._directory = directory
        self.publish_timeout = publish_timeout
        self.metrics = metrics      # object with .rejected (Counter[reason]) and .publish (Histogram)
        self.on_publish_failure = on_publish_failure   # gets the publisher that failed

    # -- the use case ---------------------------------------------------------------------------

    def submit(self, principal, payloads: list) -> list[Outcome]:
        """Validate, store and publish; one Outcome per payload, in order."""
        catalog, directory = self._catalog(), self._directory()
        outcomes: list[Outcome | None] = [None] * len(payloads)
        candidates: list[tuple[int, dict, str]] = []     # (index, wire event, hash)
        seen: dict[str, tuple[int, str]] = {}            # event_id -> (first index, hash)
        follow: dict[int, int] = {}                      # duplicate index -> first index
        for i, payload in enumerate(payloads):
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
            wire = to_wire(event)
            digest = body_hash(wire)
            eid = wire["event_id"]
            if eid in seen:
                first, first_hash = seen[eid]
                if first_hash != digest:
                    outcomes[i] = self._conflict(eid)
                else:
                    follow[i] = first
                continue
            seen[eid] = (i, digest)
            candidates.append((i, wire, digest))

        if candidates:
            self._store_and_publish(principal, candidates, outcomes)
        for i, first in follow.items():
            src = outcomes[first]
            if src.status in (200, 202):
                outcomes[i] = Outcome(200, dict(src.body, duplicate=True))
            else:
                outcomes[i] = Outcome(src.status, src.body, src.headers)
        return outcomes  # type: ignore[return-value]

    def _store_and_publish(self, principal, candidates, outcomes) -> None:
        store = self._store()
        now = self.clock.now()
        docs = []
        for i, wire, digest in candidates:
            value = dict(wire, recorded_at=now.isoformat())
            docs.append({"_id": wire["event_id"], "hash": digest, "status": "pending",
                         "dossier_code": wire["dossier_code"], "agency_code": wire["agency_code"],
                         "type": wire["type"], "key_id": principal.key_id, "recorded_at": now,
                         "value": value})
        existing_ids = store.insert_pending(docs)
        existing = store.get_many(existing_ids)
        to_publish: list[tuple[int, dict, bool]] = []     # (index, doc, is_retry)
        for (i, wire, digest), doc in zip(candidates, docs):
            if doc["_id"] not in existing_ids:
                to_publish.append((i, doc, False))
                continue
            old = existing.get(doc["_id"])
            if old is None:          # vanished between insert and read: treat as conflict-free retry
                outcomes[i] = _err(503, [FieldError("store_unavailable", "$",
                                                    "event store inconsistent; retry")],
                                   {"Retry-After": "1"})
            elif old["hash"] != digest:
                outcomes[i] = self._conflict(doc["_id"])
            elif old["status"] == "published":
                outcomes[i] = Outcome(200, dict(_accepted_body(old), duplicate=True))
            else:                    # pending: the earlier attempt may not have reached Kafka
                to_publish.append((i, old, True))
        results = self._publish(to_publish)
        marks = []
        for (i, doc, retry), res in zip(to_publish, results):
            if isinstance(res, Published):
                marks.append((doc["_id"], res.topic, res.partition, res.offset))
                body = _accepted_body(dict(doc, topic=res.topic, partition=res.partition,
                                           offset=res.offset))
                outcomes[i] = Outcome(200, dict(body, duplicate=True)) if retry else Outcome(202, body)
                log.info("event published", extra={"fields": {
                    "event_id": doc["_id"], "type": doc["type"], "dossier_code": doc["dossier_code"],
                    "agency_code": doc["agency_code"], "partition": res.partition,
                    "offset": res.offset, "retry": retry}})
            else:
                outcomes[i] = self._reject(503, [FieldError(
                    "broker_unavailable", "$",
                    "the event could not be published to Kafka; retry with the same event_id")],
                    {"Retry-After": "5"}, reason="broker_unavailable")
                log.warning("publish failed", extra={"fields": {
                    "event_id": doc["_id"], "dossier_code": doc["dossier_code"], "error": repr(res)}})
        try:
            store.mark_published(marks, self.clock.now())
        except Exception as exc:   # noqa: BLE001 - published already: the 2xx stands, a retry republishes
            log.error("could not mark events published (they stay pending)",
                      extra={"fields": {"count": len(marks), "error": repr(exc)}})

    def _publish(self, items: list[tuple[int, dict, bool]]) -> list[Published | Exception]:
        """Publish in the given order; per dossier, nothing is published after a failure."""
        if not items:
            return []
        t0 = time.perf_counter()
        try:
            publisher = self._publisher()
        except Exception as exc:   # noqa: BLE001 - e.g. NoBrokersAvailable while bootstrapping
            return [BrokerUnavailable(repr(exc))] * len(items)
        out: list[Published | Exception] = [BrokerUnavailable("not attempted")] * len(items)
        failed_dossiers: set[str] = set()
        deadline = time.monotonic() + self.publish_timeout
        if hasattr(publisher, "send") and len(items) > 1:
            futures = []
            for k, (_, doc, _) in enumerate(items):
                try:
                    futures.append((k, publisher.send(self.topic, doc["dossier_code"], doc["value"],
                                                      {"event_id": doc["_id"], "type": doc["type"]})))
                except Exception as exc:   # noqa: BLE001
                    out[k] = exc
                    failed_dossiers.add(doc["dossier_code"])
                    break                  # keep order: nothing after a failed send
            for k, fut in futures:
                try:
                    md = fut.get(timeout=max(0.05, deadline - time.monotonic()))
                    out[k] = Published(md.topic, md.partition, md.offset)
                except Exception as exc:   # noqa: BLE001
                    out[k] = exc
        else:
            for k, (_, doc, _) in enumerate(items):
                if doc["dossier_code"] in failed_dossiers:
                    continue
                try:
                    out[k] = publisher.publish(self.topic, doc["dossier_code"], doc["value"],
                                               {"event_id": doc["_id"], "type": doc["type"]},
                                               timeout=max(0.05, deadline - time.monotonic()))
                except Exception as exc:   # noqa: BLE001
                    out[k] = exc
                    failed_dossiers.add(doc["dossier_code"])
        if self.metrics is not None:
            self.metrics.publish.observe(time.perf_counter() - t0)
        if self.on_publish_failure is not None and not all(isinstance(r, Published) for r in out):
            self.on_publish_failure(publisher)
        return out

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
