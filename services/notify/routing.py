"""Who receives a finding (pure): the policy's roles resolved against the agency directory.

A recipient is one person (or webhook) on one channel. Its `id` is stable
(`<channel>:<role>@<agency>` or `webhook:<name>`), the unit of deduplication together with the
finding and the escalation level. The directory is duck-typed to `shared.domain.directory.Directory`
(`get`, `ancestors`, `responsible_head`).
"""
from __future__ import annotations

from dataclasses import dataclass

from shared.contracts.findings import SEVERITIES

from .policy import Policy, Route

# the finding's responsible_role -> the policy role that reaches that person
RESPONSIBLE = {"officer": "head", "agency_head": "head", "one_stop_chief": "one_stop_chief",
               "parent_head": "parent_head"}


@dataclass(frozen=True)
class Recipient:
    id: str                    # channel:role@agency, or webhook:name
    person: str                # role@agency (what an acknowledgement names), or webhook:name
    channel: str               # email | sms | webhook
    address: str | None        # None: the directory has no contact for this channel
    agency_code: str           # the recipient's agency (its calendar decides working hours)
    role: str
    name: str = ""
    title: str = ""
    target: str | None = None  # webhook name


def people_for(directory, agency_code: str, role: str) -> list[tuple[str, str, object]]:
    """(role label, agency code, person) for one policy role at an agency."""
    agency = directory.get(agency_code)
    if agency is None:
        return []
    if role == "head":
        acting = getattr(agency, "acting_head", None)
        person = acting or getattr(agency, "head", None)
        return [("acting_head" if acting else "head", agency_code, person)] if person else []
    if role == "deputies":
        return [(f"deputy{i + 1}", agency_code, p) for i, p in enumerate(getattr(agency, "deputies", None) or ())]
    if role == "one_stop_chief":
        p = getattr(agency, "one_stop_chief", None)
        return [("one_stop_chief", agency_code, p)] if p else []
    if role == "parent_head":
        ancestors = directory.ancestors(agency_code)
        return people_for(directory, ancestors[0], "head") if ancestors else []
    raise ValueError(f"unknown role {role!r}")


def _person_recipients(label, code, person, channels, sms_enabled) -> list[Recipient]:
    out = []
    for ch in channels:
        if ch == "sms" and not sms_enabled:
            continue
        if ch == "email":
            address = getattr(person, "email", None) or None
        else:   # the directory's SMS number, else the phone
            address = getattr(person, "sms", None) or getattr(person, "phone", None) or None
        out.append(Recipient(f"{ch}:{label}@{code}", f"{label}@{code}", ch, address, code, label,
                             getattr(person, "name", "") or "", getattr(person, "title", "") or ""))
    reachable = [r for r in out if r.address]
    # a person reachable on some channel is fine; one reachable on none is kept (address None) so
    # that the failure is recorded and visible instead of silently dropped
    return reachable or out[:1]


def webhook_recipients(finding: dict, policy: Policy, directory) -> list[Recipient]:
    out = []
    agency = finding["agency_code"]
    sev = SEVERITIES.index(finding["severity"])
    for w in policy.webhooks:
        if w.rules and finding["rule"] not in w.rules:
            continue
        if sev < SEVERITIES.index(w.min_severity):
            continue
        if w.agency and w.agency != agency and w.agency not in (directory.ancestors(agency) if directory.get(agency) else []):
            continue
        out.append(Recipient(f"webhook:{w.name}", f"webhook:{w.name}", "webhook", w.url, agency,
                             "webhook", w.name, target=w.name))
    return out


def recipients_for(finding: dict, route: Route, policy: Policy, directory, level: int = 0,
                   *, sms_enabled: bool | None = None) -> list[Recipient]:
    """Recipients of a finding at an escalation level (0 = the route's roles; k ≥ 1 = the head of
    the k-th ancestor of the responsible agency), webhooks included; duplicates removed."""
    if sms_enabled is None:
        sms_enabled = bool(policy.sms_url_template)
    agency = finding["agency_code"]
    people: list[tuple[str, str, object]] = []
    if level == 0:
        for role in route.roles:
            if role == "responsible":
                role = RESPONSIBLE.get(finding.get("responsible_role") or "", "head")
            people += people_for(directory, agency, role)
    else:
        ancestors = directory.ancestors(agency) if directory.get(agency) else []
        if len(ancestors) >= level:
            people += people_for(directory, ancestors[level - 1], "head")
    out: dict[str, Recipient] = {}
    for label, code, person in people:
        for r in _person_recipients(label, code, person, route.channels, sms_enabled):
            out.setdefault(r.id, r)
    for r in webhook_recipients(finding, policy, directory):
        out.setdefault(r.id, r)
    return list(out.values())


def escalation_levels(finding: dict, directory) -> int:
    """How many ancestors the responsible agency has (the deepest possible escalation level)."""
    agency = finding["agency_code"]
    return len(directory.ancestors(agency)) if directory.get(agency) else 0
