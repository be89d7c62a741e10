"""notify's side of each finding, held in memory for the dossier page: how the finding stands
(acknowledged, escalation level, repeats, next escalation), every notification planned for it
with its delivery status and instant, and the acknowledgements with their notes.

Loaded from notify's collections with the rest of the view (`store.DashboardStore.load`), then
kept current by notify's change messages (`services/notify/changes.py`, read by `feed.Feed`) and
by the acknowledgements polled from `acks`. Pure: no I/O here.
"""
from __future__ import annotations

import threading
from dataclasses import dataclass, field
from datetime import datetime, timezone

from .view import as_utc

_TIMES = ("acked_at", "next_escalation_at", "next_repeat_at", "sent_at", "failed_at", "cancelled_at",
          "created_at", "at")
_FINAL = ("sent", "failed", "cancelled")
_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)


@dataclass(slots=True)
class Alerting:
    """notify's record of a finding (its `notify_findings` document, the fields shown)."""
    episode: int = 0
    level: int = 0
    repeats: int = 0
    acked_at: datetime | None = None
    acked_by: str | None = None
    next_escalation_at: datetime | None = None
    next_repeat_at: datetime | None = None
    state: str | None = None


@dataclass(slots=True)
class Sent:
    """One notification and its outcome (as in `notifications`)."""
    id: str
    finding_id: str | None = None
    recipient: str | None = None
    person: str | None = None
    recipient_name: str | None = None
    recipient_title: str | None = None
    role: str | None = None
    channel: str | None = None
    kind: str | None = None
    level: int = 0
    seq: int = 0
    episode: int = 0
    reason: str | None = None
    status: str = "pending"
    error: str | None = None
    created_at: datetime | None = None
    sent_at: datetime | None = None
    failed_at: datetime | None = None
    cancelled_at: datetime | None = None

    @property
    def at(self) -> datetime | None:
        """When it reached its state: sent, failed, cancelled (else planned)."""
        return {"sent": self.sent_at, "failed": self.failed_at,
                "cancelled": self.cancelled_at}.get(self.status) or self.created_at


@dataclass(slots=True)
class Ack:
    at: datetime | None
    by: str | None
    via: str | None
    note: str | None = None
    recipient: str | None = None


@dataclass
class _State:
    findings: dict = field(default_factory=dict)    # finding id -> Alerting
    notes: dict = field(default_factory=dict)       # notification id -> Sent
    by_finding: dict = field(default_factory=dict)  # finding id -> [notification id]
    acks: dict = field(default_factory=dict)        # finding id -> [Ack]


def _ms(t: datetime | None):
    return t.replace(microsecond=t.microsecond // 1000 * 1000) if isinstance(t, datetime) else t


def _times(d: dict) -> dict:
    return {k: (as_utc(v) if k in _TIMES and v is not None else v) for k, v in d.items()}


class Alerts:
    """The copy, under a lock. `apply` takes notify's change messages (changes.py)."""

    def __init__(self):
        self._lock = threading.Lock()
        self._s = _State()
        self._strings: dict[str, str] = {}

    def _intern(self, s):
        # recipients, channels and kinds repeat across 10^5 notifications: one copy each
        if not isinstance(s, str):
            return s
        return self._strings.setdefault(s, s)

    # -- loading --------------------------------------------------------------------------------
    def replace_all(self, findings: list[dict], notifications: list[dict], acks: list[dict]) -> None:
        s = _State()
        for d in findings:
            s.findings[d["_id"]] = self._alerting(Alerting(), _times(d))
        for d in notifications:
            self._put_note(s, str(d["_id"]), _times(d), created=True)
        for a in acks:
            self._ack(s, _times(a))
        with self._lock:
            self._s = s

    # -- changes ---------------------------------------------------------------------------------
    def apply(self, msg: dict) -> None:
        """One change message of notify (changes.py); unknown ones are ignored."""
        op, fid = msg.get("op"), msg.get("finding_id")
        with self._lock:
            s = self._s
            if op == "finding" and fid:
                s.findings[fid] = self._alerting(s.findings.get(fid) or Alerting(), _times(msg.get("fields") or {}))
            elif op == "notification" and fid:
                n = dict(msg.get("notification") or {})
                nid = str(n.pop("id", ""))
                if nid:
                    self._put_note(s, nid, _times({**n, "finding_id": fid}), created=True)
            elif op == "outcome" and msg.get("id"):
                self._outcome(s, str(msg["id"]), _times(msg.get("fields") or {}), fid)
            elif op == "cancel" and fid:
                self._cancel(s, fid, msg)
            elif op == "ack" and fid:
                self._ack(s, _times(msg))

    def put_ack(self, ack: dict) -> None:
        """An acknowledgement read from `acks` (polled): as notify recorded it, with what it stops
        (notify's `Acks.acknowledge`: repeats, and escalations for lack of acknowledgement)."""
        a = _times(ack)
        with self._lock:
            s = self._s
            if self._ack(s, a):
                fid = a["finding_id"]
                self._cancel(s, fid, {"kinds": ["repeat"], "min_level": 0, "keep": {}, "at": a.get("at"),
                                      "reason": "acknowledged"})
                self._cancel(s, fid, {"kinds": ["alert"], "min_level": 1, "keep": {"reason": "lateness"},
                                      "at": a.get("at"), "reason": "acknowledged"})

    # -- reading ---------------------------------------------------------------------------------
    def finding(self, fid: str) -> Alerting | None:
        with self._lock:
            return self._s.findings.get(fid)

    def of(self, finding_ids) -> tuple[dict, dict, dict]:
        """({fid: Alerting}, {fid: [Sent] oldest first}, {fid: [Ack]}) of these findings."""
        with self._lock:
            s = self._s
            state = {f: s.findings[f] for f in finding_ids if f in s.findings}
            notes = {}
            for f in finding_ids:
                rows = [s.notes[n] for n in s.by_finding.get(f, ()) if n in s.notes]
                if rows:
                    notes[f] = sorted(rows, key=lambda n: (n.created_at is None, n.created_at or _EPOCH, n.id))
            acks = {f: list(s.acks[f]) for f in finding_ids if f in s.acks}
        return state, notes, acks

    def sizes(self) -> dict[str, int]:
        with self._lock:
            return {"alert_findings": len(self._s.findings), "notifications": len(self._s.notes)}

    # -- helpers (under the lock) ------------------------------------------------------------------
    @staticmethod
    def _alerting(a: Alerting, fields: dict) -> Alerting:
        for k in Alerting.__slots__:
            if k in fields:
                v = fields[k]
                setattr(a, k, int(v or 0) if k in ("episode", "level", "repeats") else v)
        return a

    def _put_note(self, s: _State, nid: str, d: dict, created: bool) -> None:
        n = s.notes.get(nid)
        if n is None:
            n = s.notes[nid] = Sent(id=nid)
        final = n.status in _FINAL
        for k in Sent.__slots__:
            if k == "id" or k not in d:
                continue
            if final and k in ("status", "error"):
                continue       # an outcome read before the plan (another partition) stands
            v = d[k]
            setattr(n, k, int(v or 0) if k in ("level", "seq", "episode") else self._intern(v))
        if n.finding_id:
            ids = s.by_finding.setdefault(n.finding_id, [])
            if nid not in ids:
                ids.append(nid)

    def _outcome(self, s: _State, nid: str, fields: dict, fid: str | None) -> None:
        n = s.notes.get(nid)
        if n is None:
            n = s.notes[nid] = Sent(id=nid)
        if n.status == "sent" and fields.get("status") != "sent":
            return            # sent wins, as in notify's `mark_sent`
        for k in ("status", "sent_at", "failed_at", "cancelled_at", "error"):
            if k in fields:
                setattr(n, k, fields[k])
        if n.status == "sent":
            n.error = None
        if fid and not n.finding_id:
            n.finding_id = fid
            s.by_finding.setdefault(fid, []).append(nid)

    @staticmethod
    def _cancel(s: _State, fid: str, msg: dict) -> None:
        kinds, min_level = set(msg.get("kinds") or ()), int(msg.get("min_level") or 0)
        keep = msg.get("keep") or {}
        at = as_utc(msg.get("at")) if msg.get("at") else None
        for nid in s.by_finding.get(fid, ()):
            n = s.notes.get(nid)
            if n is None or n.status != "pending" or n.kind not in kinds or n.level < min_level:
                continue
            if any(getattr(n, k, None) == v for k, v in keep.items()):
                continue
            n.status, n.cancelled_at, n.error = "cancelled", at, msg.get("reason")

    @staticmethod
    def _ack(s: _State, a: dict) -> bool:
        """Record an acknowledgement once; True when it is new here."""
        fid = a.get("finding_id")
        if not fid:
            return False
        acks = s.acks.setdefault(fid, [])
        # the store keeps milliseconds: the same ack read back differs in its microseconds
        if any(_ms(x.at) == _ms(a.get("at")) and x.by == a.get("by") for x in acks):
            return False
        acks.append(Ack(a.get("at"), a.get("by"), a.get("via"), a.get("note"), a.get("recipient")))
        acks.sort(key=lambda x: (x.at is None, x.at))
        f = s.findings.get(fid)
        if f is not None and f.acked_at is None:
            f.acked_at, f.acked_by = a.get("at"), a.get("by")
            f.next_escalation_at = f.next_repeat_at = None
        return True
