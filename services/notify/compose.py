"""What a notification says when it is sent: the finding as of now, rendered for its channel.

Every figure of a mail is computed at sending (docs/alerts.md); an alert whose finding was
resolved, or a reminder whose finding was acknowledged, is not sent (None).
"""
from __future__ import annotations

from datetime import datetime
from typing import Callable
from urllib.parse import quote

from shared.domain.instants import stored_utc

from .acks import Acks
from .channels import Outgoing
from .outbox import Outbox
from .policy import Policy
from .store import NotifyStore
from .templates import Renderer, TemplateMissing, local_text
from .worktime import WorkTime

# the finding fields a webhook payload carries
WEBHOOK_FIELDS = ("rule", "state", "severity", "dossier_code", "procedure_code", "agency_code",
                  "responsible_role", "legal_basis", "title", "overdue_working_hours", "ruleset",
                  "revision", "details")


class Composer:
    def __init__(self, store: NotifyStore, policy: Policy, worktime: WorkTime, renderer: Renderer,
                 acks: Acks, outbox: Outbox | None, *,
                 procedure_name: Callable[[str], str | None], requirement: Callable[[str | None, str], str | None],
                 dashboard_url: str = ""):
        self.store, self.policy, self.worktime, self.renderer = store, policy, worktime, renderer
        self.dashboard_url = (dashboard_url or "").rstrip("/")
        self.acks, self.outbox = acks, outbox
        self.procedure_name, self.requirement = procedure_name, requirement

    def dossier_url(self, dossier_code: str) -> str | None:
        """The dossier's page on the dashboard (DASHBOARD_URL), for the alert's reader."""
        if not self.dashboard_url:
            return None
        return f"{self.dashboard_url}/ho-so/{quote(dossier_code, safe='/')}"

    def outgoing(self, doc: dict, now: datetime) -> Outgoing | None:
        """The message of a notification sent at `now`; None when it must not be sent any more."""
        if doc["kind"] == "digest":
            return Outgoing(doc["channel"], doc["address"], doc["subject"], doc["text"], doc.get("html"),
                            message_id=str(doc["_id"]))
        f = self.outbox.snapshot(doc["finding_id"]) if doc.get("snapshot") and self.outbox else None
        if f is not None and f.get("episode", 0) != doc.get("episode", 0):
            return None   # resolved and re-opened since: that alert belonged to the earlier episode
        if f is None:
            f = self.store.get_finding(doc["finding_id"])
        if f is None:
            raise TemplateMissing(f"finding {doc['finding_id']} is not in the store")
        if doc["kind"] in ("alert", "repeat") and f["state"] == "resolved":
            return None
        lateness = doc.get("reason") == "lateness"
        if (doc["kind"] == "repeat" or (doc["level"] >= 1 and not lateness)) and f.get("acked_at") is not None:
            return None
        route = self.policy.route(f["rule"], f["severity"])
        f = self.worktime.as_of(f, now)
        ctx = self.renderer.context(f, agency_name=self.worktime.agency_name(f["agency_code"]),
                                    procedure_name=self.procedure_name(f.get("procedure_code") or ""),
                                    recipient_name=doc.get("recipient_name") or "",
                                    recipient_title=doc.get("recipient_title") or "",
                                    dossier_url=self.dossier_url(f["dossier_code"]))
        ack = None if doc["kind"] == "resolved" else self.acks.ack_url(f["_id"], doc["person"], now)
        req = self.requirement(f.get("ruleset"), f["rule"])
        escalation = None
        if doc["level"] >= 1 and doc["kind"] != "resolved":
            escalation = {"reason": "lateness" if lateness else "unacknowledged",
                          "after_wh": route.escalate_after_wh,
                          "first_sent_local": local_text(doc.get("first_sent_at")),
                          "acked_local": local_text(f.get("acked_at"))}
        r = self.renderer.render_alert(ctx, kind=doc["kind"], level=doc["level"],
                                       escalate_after_wh=route.escalate_after_wh, ack_url=ack,
                                       requirement=req, escalation=escalation)
        if doc["channel"] == "webhook":
            finding = {k: v for k, v in f.items() if k in WEBHOOK_FIELDS}
            finding.update(finding_id=f["_id"], detected_at=_iso(f.get("detected_at")), due_at=_iso(f.get("due_at")))
            payload = {"type": f"motcua.notification.{doc['kind']}", "notification_id": str(doc["_id"]),
                       "level": doc["level"], "subject": r.subject, "text": r.text, "ack_url": ack,
                       "finding": finding, "sent_at": now.isoformat()}
            return Outgoing("webhook", doc["address"], r.subject, r.text, payload=payload,
                            target=doc.get("target"), message_id=str(doc["_id"]))
        text = r.sms if doc["channel"] == "sms" else r.text
        files = ()
        if doc["channel"] == "email" and doc["kind"] != "resolved":
            # the document the law requires next, pre-filled on the rule set's form (.docx)
            from .documents import attachments_for
            files = attachments_for(f, agency_name=ctx["agency_name"],
                                    procedure_name=self.procedure_name(f.get("procedure_code") or ""))
        return Outgoing(doc["channel"], doc["address"], r.subject, text,
                        r.html if doc["channel"] == "email" else None, message_id=str(doc["_id"]),
                        attachments=files)


def _iso(t) -> str | None:
    t = stored_utc(t)
    return t.isoformat() if t else None
