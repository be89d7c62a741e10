"""The vocabulary of the `sla.findings` contract (docs/architecture.md, "Contracts between
services"), defined once for the rules that write findings, the sla read API and notify."""
from __future__ import annotations

STATES = ("open", "escalated", "resolved")
SEVERITIES = ("info", "warning", "critical")                          # in rising order
ROLES = ("officer", "one_stop_chief", "agency_head", "parent_head")   # responsible_role
CONFIDENCES = ("high", "medium", "low")
