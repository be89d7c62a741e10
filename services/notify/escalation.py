"""Escalation for lack of acknowledgement, and repeats: when they are due, and what they plan.

A finding's schedule (`next_escalation_at`, `next_repeat_at`) is set once when an episode starts
(`first_schedule`) and moved on by each run; times count working hours of the responsible
agency's calendar. docs/architecture.md, "Scheduled work".
"""
from __future__ import annotations

import logging
from datetime import datetime
from typing import TYPE_CHECKING

from shared.domain.instants import stored_utc

from .policy import Policy, Route
from .routing import Recipient, escalation_levels
from .store import NotifyStore
from .worktime import WorkTime

if TYPE_CHECKING:
    from .planning import Planner

log = logging.getLogger("motcua.notify")


def first_schedule(f: dict, route: Route, now: datetime, worktime: WorkTime, directory) -> dict:
    """The schedule of a new episode of a finding: its first escalation (when the route
    escalates and the directory has a level above) and its first repeat (when it repeats)."""
    sched = {}
    if route.escalate_after_wh and route.max_level >= 1 and escalation_levels(f, directory) >= 1:
        sched["next_escalation_at"] = worktime.add_working(f["agency_code"], now, route.escalate_after_wh)
    if route.repeat_every_wh and route.max_repeats > 0:
        sched["next_repeat_at"] = worktime.add_working(f["agency_code"], now, route.repeat_every_wh)
    return sched


def recipient_of(d: dict) -> Recipient:
    """The recipient of a stored notification or `notify_alerted` entry."""
    return Recipient(d["recipient"], d["person"], d["channel"], d["address"], d["agency_code"], d["role"],
                     d.get("recipient_name") or "", d.get("recipient_title") or "", d.get("target"))


class Escalation:
    def __init__(self, store: NotifyStore, policy: Policy, directory, worktime: WorkTime, planner: "Planner"):
        self.store, self.policy, self.directory, self.worktime, self.planner = \
            store, policy, directory, worktime, planner

    def escalate(self, now: datetime) -> int:
        """Escalation for lack of acknowledgement: only when the previous level's alert reached
        its recipients `escalate_after` working hours ago (a deferred, retried or failed alert
        gave them no time yet); otherwise the check moves to when it will have."""
        n = 0
        for f in self.store.due_escalations(now):
            route = self.policy.route(f["rule"], f["severity"])
            level = f.get("level", 0) + 1
            deepest = min(route.max_level, escalation_levels(f, self.directory))
            if level > deepest or not route.escalate_after_wh:
                self.store.set_finding(f["_id"], {"next_escalation_at": None})
                continue
            reached = [stored_utc(d["at"]) for d in self.store.alerted_for(f["_id"], f.get("episode", 0))
                       if d.get("kind") == "alert" and d.get("level") == level - 1 and d.get("at")]
            first = min(reached) if reached else None
            ready = self.worktime.add_working(f["agency_code"], first or now, route.escalate_after_wh)
            if first is None or (ready is not None and ready > now):
                if ready is not None:   # not delivered yet: look again one full period later
                    self.store.set_finding(f["_id"], {"next_escalation_at": ready},
                                           expect={"level": f.get("level", 0)})
                continue
            nxt = None
            if level < deepest:
                nxt = self.worktime.add_working(f["agency_code"], now, route.escalate_after_wh)
            if not self.store.set_finding(f["_id"], {"level": level, "next_escalation_at": nxt},
                                          expect={"level": f.get("level", 0)}):
                continue   # another instance did it
            n += self.planner.plan(f, route, level, now, reason="unacknowledged", first_sent_at=first)
            log.info("finding escalated", extra={"fields": {"finding_id": f["_id"], "level": level}})
        return n

    def repeat(self, now: datetime) -> int:
        """Repeats of unacknowledged alerts, to each recipient alerted in the episode."""
        n = 0
        for f in self.store.due_repeats(now):
            route = self.policy.route(f["rule"], f["severity"])
            seq = f.get("repeats", 0) + 1
            nxt = None
            if route.repeat_every_wh and seq < route.max_repeats:
                nxt = self.worktime.add_working(f["agency_code"], now, route.repeat_every_wh)
            if not self.store.set_finding(f["_id"], {"repeats": seq, "next_repeat_at": nxt},
                                          expect={"repeats": f.get("repeats", 0)}):
                continue
            seen = set()
            for d in self.store.alerted_for(f["_id"], f.get("episode", 0)):
                if d.get("kind") != "alert" or d["recipient"] in seen:
                    continue
                seen.add(d["recipient"])
                if d.get("planned_at") is not None and route.repeat_every_wh:
                    # a recipient alerted later (an escalation) counts from their own alert:
                    # never a repeat in the same moment as the alert it would repeat. Half a
                    # period, not a whole one: the finding's repeat ticks drift by the
                    # scheduler's interval, and a tick seconds early must not skip the recipient
                    since = self.worktime.add_working(d["agency_code"], stored_utc(d["planned_at"]),
                                                      route.repeat_every_wh / 2)
                    if since is not None and since > now:
                        continue
                r = recipient_of(d)
                n += self.planner.insert(f, r, d["level"], "repeat", seq,
                                         self.planner.due_for(r, now, route.any_hour), now)
        return n
