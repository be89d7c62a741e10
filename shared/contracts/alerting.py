"""The alerting read model: how a finding stands with its recipients — acknowledgement,
escalation, repeats. One view, the same on the sla API (`GET /v1/findings`,
`/v1/dossiers/<code>/findings`), on the notify API (`GET /v1/findings/<id>`) and on the dashboard.

notify owns these facts (it receives the acknowledgements) and writes them in the
`NOTIFY_FINDINGS` collection of the shared database; the contract is that collection's name, the
fields below and the view built from them. Readers call `alerting_for(db, ids)` (one `_id` `$in`
read) instead of copying them, so there is one truth and nothing to keep in sync.
See docs/alerts.md.
"""
from __future__ import annotations

from datetime import datetime

from shared.domain.instants import stored_utc

NOTIFY_FINDINGS = "notify_findings"
# the fields of a `NOTIFY_FINDINGS` document the view reads
FIELDS = ("acked_at", "acked_by", "level", "repeats", "next_escalation_at", "next_repeat_at",
          "revision", "state", "episode")


def _iso(t) -> str | None:
    return stored_utc(t).isoformat() if isinstance(t, datetime) else None


def alerting(doc: dict | None) -> dict | None:
    """The public view of notify's record of a finding; None when notify has not seen it."""
    if doc is None:
        return None
    acked = doc.get("acked_at") is not None
    return {
        "acknowledged": acked,
        "acknowledged_at": _iso(doc.get("acked_at")),
        "acknowledged_by": doc.get("acked_by"),
        # 0: the responsible agency only; 1: the parent agency's head too (by lateness or for
        # lack of acknowledgement), and so on up the directory
        "escalation_level": int(doc.get("level") or 0),
        "repeats_sent": int(doc.get("repeats") or 0),
        "next_escalation_at": _iso(doc.get("next_escalation_at")),
        "next_repeat_at": _iso(doc.get("next_repeat_at")),
        "notify_revision": doc.get("revision"),     # below the finding's revision: notify lags
    }


def alerting_for(db, finding_ids) -> dict[str, dict]:
    """`alerting` of each finding notify has seen, by finding id (missing ids: not seen)."""
    ids = sorted(set(finding_ids))
    if not ids:
        return {}
    docs = db[NOTIFY_FINDINGS].find({"_id": {"$in": ids}}, dict.fromkeys(FIELDS, 1))
    return {d["_id"]: alerting(d) for d in docs}
