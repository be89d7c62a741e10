"""Fakes and builders of the sla tests: a tiny engine with the legal engine's interface (its
states, evaluations and `FindingChange`s have the fields the handler reads), its context, events,
Kafka records and a consumer. The real engine and real Kafka/FerretDB: tests/integration."""
from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone

from kafka import TopicPartition

from shared.domain.engine.context import EngineContext
from shared.domain.engine.rules import FindingChange
from shared.platform.messaging import encode
from services.sla.dlq import Origin
from services.sla.projection import Incoming

T0 = datetime(2024, 11, 5, 1, 0, tzinfo=timezone.utc)
FINDINGS = "sla.findings"


# --- a tiny engine with the documented interface (shared/domain/engine is tested on its own) ---------
@dataclass
class FState:
    dossier_code: str
    event_ids: list = field(default_factory=list)
    received_at: datetime | None = None
    closed: bool = False
    due_at: datetime | None = None             # the legal engine's: none in this fake
    procedure_field: str | None = None

    def to_doc(self):
        return {"dossier_code": self.dossier_code, "event_ids": list(self.event_ids),
                "received_at": self.received_at, "closed": self.closed}

    @classmethod
    def from_doc(cls, doc):
        return cls(doc["dossier_code"], list(doc["event_ids"]), doc["received_at"], doc["closed"])


# the fake engine reads nothing of its context; the handler warms the calendars up
FAKE_CTX = EngineContext(catalog=None, calendars=lambda office: None, rulesets=None)


@dataclass
class FEval:
    findings: list
    next_check_at: datetime | None


class FakeEngine:
    """OVERDUE one hour after receipt while not resolved; refuses `dossier.withdrawn`."""
    DossierState = FState

    @staticmethod
    def new_state(code):
        return FState(code)

    @staticmethod
    def apply(state, event, ctx):
        if event["event_id"] in state.event_ids:
            return state
        if event["type"] == "dossier.withdrawn":
            raise ValueError("cannot withdraw in this fake")
        s = FState.from_doc(state.to_doc())
        s.event_ids.append(event["event_id"])
        if event["type"] == "dossier.received":
            s.received_at = event["occurred_at"]
        if event["type"] == "dossier.resolved":
            s.closed = True
        return s

    @staticmethod
    def evaluate(state, now, ctx):
        if state.received_at is None or state.closed:
            return FEval([], None)
        due = state.received_at + timedelta(hours=1)
        if now >= due:
            return FEval([{"finding_id": f"{state.dossier_code}:OVERDUE", "rule": "OVERDUE",
                           "severity": "critical", "dossier_code": state.dossier_code,
                           "due_at": due, "detected_at": now}], None)
        return FEval([], due)

    @staticmethod
    def reconcile(previous, evaluation, now):
        changes = []
        current = {f["finding_id"]: f for f in evaluation.findings}
        for fid, f in current.items():
            if fid not in previous or previous[fid]["state"] == "resolved":
                changes.append(FindingChange("opened", fid, dict(f, state="open")))
        for fid, p in previous.items():
            if fid not in current and p["state"] != "resolved":
                changes.append(FindingChange("resolved", fid, dict(
                    {k: v for k, v in p.items() if k != "revision"}, state="resolved", resolved_at=now)))
        return changes


def event(code, etype="dossier.received", when=T0, **data):
    base = {"dossier.received": {"procedure_code": "1.001193", "channel": "direct",
                                 "components": ["to-khai"],
                                 "applicant": {"kind": "citizen", "name": "Nguyễn Văn A",
                                               "phone": "0901234567"}},
            "dossier.resolved": {"outcome": "approved"},
            "dossier.withdrawn": {"reason": "rút hồ sơ"}}[etype]
    return {"event_id": str(uuid.uuid4()), "type": etype, "dossier_code": code,
            "occurred_at": when.isoformat(), "recorded_at": when.isoformat(),
            "agency_code": "000.00.17.H56", "data": dict(base, **data)}


def incoming(ev, offset=0, partition=0, raw=None):
    return Incoming(ev["dossier_code"] if isinstance(ev, dict) else "x",
                    raw if raw is not None else encode(ev), partition,
                    Origin("dossier.events", partition, offset))


def published(bus):
    return [(m.key, m.value["finding_id"], m.value["state"], m.value["revision"])
            for m in bus.messages(FINDINGS)]


# --- Kafka records and a consumer -------------------------------------------------------------
@dataclass
class Rec:
    topic: str
    partition: int
    offset: int
    key: str | None
    value: bytes


class FakeConsumer:
    def __init__(self, batches, partitions=(0,)):
        self.batches = list(batches)
        self.tps = {TopicPartition("dossier.events", p) for p in partitions}
        self.commits = []
        self.seeks = []
        self.closed = False

    def poll(self, timeout_ms=0, max_records=None):
        if not self.batches:
            return {}
        recs = self.batches.pop(0)
        out = {}
        for r in recs:
            out.setdefault(TopicPartition(r.topic, r.partition), []).append(r)
        return out

    def assignment(self):
        return set(self.tps)

    paused: set = frozenset()

    def pause(self, *tps):
        self.paused = set(self.paused) | set(tps)

    def resume(self, *tps):
        self.paused = set(self.paused) - set(tps)

    def commit(self, offsets):
        self.commits.append({tp.partition: om.offset for tp, om in offsets.items()})

    def committed(self, tp):
        return None

    def seek_to_beginning(self, tp):
        self.seeks.append(tp.partition)

    def end_offsets(self, tps):
        return {tp: 10 for tp in tps}

    def position(self, tp):
        return 7

    def close(self, autocommit=False):
        self.closed = True


def rec(ev, offset, raw=None):
    return Rec("dossier.events", 0, offset, ev["dossier_code"] if ev else "D-x",
               raw if raw is not None else encode(ev))
