"""Daily digests: each working day at the policy's time, one e-mail per digest role to every
agency whose subtree has open findings, from notify's own store of the findings it received.
docs/architecture.md, "Scheduled work".
"""
from __future__ import annotations

import logging
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

from shared.domain.instants import stored_utc

from .policy import Policy
from .routing import Recipient, people_for
from .store import NotifyStore
from .templates import TZ, Renderer, greeting, late_text, local_text
from .worktime import WorkTime

if TYPE_CHECKING:
    from .planning import Planner

log = logging.getLogger("motcua.notify")


class Digests:
    def __init__(self, store: NotifyStore, policy: Policy, directory, worktime: WorkTime,
                 renderer: Renderer, planner: "Planner"):
        self.store, self.policy, self.directory, self.worktime = store, policy, directory, worktime
        self.renderer, self.planner = renderer, planner
        self._done: set[tuple[str, str]] = set()   # cache only; the unique index decides

    def run(self, now: datetime) -> int:
        """Create today's digest for every agency whose subtree has open findings, between the
        policy's digest time and `catch_up_hours` later, on the agency's working days."""
        local = now.astimezone(TZ)
        start = local.replace(hour=self.policy.digest_time.hour, minute=self.policy.digest_time.minute,
                              second=0, microsecond=0)
        if not start <= local < start + timedelta(hours=self.policy.digest_catch_up_hours) or self.directory is None:
            return 0   # only around the digest time: a finding at 15:00 must not trigger a digest
        day = local.date().isoformat()
        candidates: set[str] = set()
        for code in self.store.open_agencies():
            if code in self.directory:
                candidates.add(code)
                candidates.update(self.directory.ancestors(code))
        n = 0
        for code in sorted(candidates):
            if (day, code) in self._done:
                continue
            try:
                if not self.worktime.calendar(code).is_working_day(local.date()):
                    self._done.add((day, code))
                    continue
            except Exception:
                log.exception("calendar failed; digest skipped", extra={"fields": {"agency": code}})
                continue
            n += self._digest(code, day, local, now)
            self._done.add((day, code))
        if len(self._done) > 50_000:
            self._done = {k for k in self._done if k[0] == day}
        return n

    def content(self, agency_code: str, now: datetime) -> dict:
        """The lists of a digest: open findings of the agency's subtree, from the notify store."""
        sub = sorted(self.directory.subtree(agency_code))
        overdue, due_soon, violations = [], [], []
        for f in self.store.open_findings(sub):
            f = self.worktime.as_of(f, now)
            item = {"dossier_code": f["dossier_code"], "agency_name": self.worktime.agency_name(f["agency_code"]),
                    "title": f.get("title") or f["rule"], "rule": f["rule"],
                    "due_local": local_text(stored_utc(f.get("due_at"))),
                    "late_text": late_text(f.get("overdue_working_hours"))}
            (overdue if f["rule"] == "OVERDUE" else due_soon if f["rule"] == "DUE_SOON" else violations).append(item)
        return {"overdue": overdue, "due_soon": due_soon, "violations": violations}

    def _digest(self, code: str, day: str, local: datetime, now: datetime) -> int:
        content = self.content(code, now)
        if not any(content.values()):
            return 0
        n = 0
        for role in self.policy.digest_roles:
            for label, acode, person in people_for(self.directory, code, role):
                r = Recipient(f"email:{label}@{acode}", f"{label}@{acode}", "email",
                              getattr(person, "email", None) or None, acode, label,
                              getattr(person, "name", "") or "", getattr(person, "title", "") or "")
                ctx = dict(content, recipient_greeting=greeting(r.name, r.title),
                           agency_name=self.worktime.agency_name(code), date_local=local.strftime("%d/%m/%Y"))
                rendered = self.renderer.render_digest(ctx)
                pseudo = {"_id": f"digest:{day}:{code}", "episode": 0, "rule": "DIGEST", "severity": "info",
                          "dossier_code": None, "agency_code": code}
                n += self.planner.insert(pseudo, r, 0, "digest", 0, now, now, subject=rendered.subject,
                                         text=rendered.text, html=rendered.html,
                                         counts={k: len(v) for k, v in content.items()})
        return n
