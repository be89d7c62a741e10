"""Acknowledgements: the signed link an alert carries, and what acknowledging stops.
docs/architecture.md, "Acknowledgement and resolution"."""
from __future__ import annotations

import logging
from datetime import datetime, timedelta

from shared.platform.clock import Clock, ensure_utc
from shared.domain.instants import stored_utc

from .policy import Policy
from .store import NotifyStore
from .tokens import sign_ack

log = logging.getLogger("motcua.notify")


class Acks:
    def __init__(self, store: NotifyStore, policy: Policy, clock: Clock, *, base_url: str = "",
                 secret: str = ""):
        self.store, self.policy, self.clock = store, policy, clock
        self.base_url = base_url.rstrip("/")
        self.secret = secret

    def ack_url(self, finding_id: str, person: str, now: datetime) -> str | None:
        if not self.secret or not self.base_url:
            return None
        token = sign_ack(self.secret, finding_id, person, now + timedelta(hours=self.policy.ack_ttl_hours))
        return f"{self.base_url}/v1/ack/{token}"

    def acknowledge(self, finding_id: str, person: str, by: str, via: str,
                    now: datetime | None = None, note: str | None = None) -> dict | None:
        """Record an acknowledgement; stops escalation and repeats. None if the finding is unknown."""
        now = ensure_utc(now or self.clock.now())
        f = self.store.get_finding(finding_id)
        if f is None:
            return None
        if f["state"] == "resolved":
            # an old link: nothing is pending, nothing to stop; say so rather than record an ack
            return {"finding_id": finding_id, "rule": f["rule"], "state": "resolved", "already_resolved": True,
                    "acknowledged_at": stored_utc(f.get("acked_at")), "acknowledged_by": f.get("acked_by"),
                    "first": False, "cancelled": 0}
        first = self.store.record_ack(finding_id, person, by, via, now, note)
        cancelled = self.store.cancel_pending(finding_id, ("repeat",), now, "acknowledged")
        # an escalation by lateness is the rule set's, not a reminder: an acknowledgement does
        # not stop it (sla shows the finding `escalated`; the parent head must be told)
        cancelled += self.store.cancel_pending(finding_id, ("alert",), now, "acknowledged", min_level=1,
                                               keep={"reason": "lateness"})
        log.info("finding acknowledged", extra={"fields": {"finding_id": finding_id, "recipient": person,
                                                            "via": via, "first": first}})
        f = self.store.get_finding(finding_id)
        return {"finding_id": finding_id, "rule": f["rule"], "state": f["state"], "already_resolved": False,
                "acknowledged_at": stored_utc(f.get("acked_at")),
                "acknowledged_by": f.get("acked_by"), "first": first, "cancelled": cancelled}
