"""The due date of a receipt, as the counter prints it on the Giấy tiếp nhận hồ sơ và hẹn trả kết
quả (Mẫu 01), computed by the engine itself: intake's 202 for a `dossier.received` and its receipt
endpoint call this, the sla service folds the same event with the same `apply` — one computation,
so the slip and the stored initial due date cannot disagree (tests/unit/test_receipt.py checks it
on 1,000 random receipts).
"""
from __future__ import annotations

from datetime import datetime, timezone

from shared.domain.engine.state import TZ, apply, new_state


def local_text(t: datetime | None) -> str | None:
    """'17:00 ngày 12/11/2024' in Vietnam's time."""
    if t is None:
        return None
    t = t.astimezone(TZ)
    return f"{t.hour:02d}:{t.minute:02d} ngày {t.day:02d}/{t.month:02d}/{t.year:04d}"


def _iso(t: datetime | None) -> str | None:
    return t.astimezone(timezone.utc).isoformat() if t is not None else None


def receipt_due(event: dict, ctx) -> dict:
    """The legal due date of a dossier from its `dossier.received` event alone (the event as
    `shared.contracts.events.load_stored` gives it), with the rule set, catalog and calendar versions
    that produced it and why that rule set applies. `due_at` is None when the procedure is not
    in the catalog on the receipt date (`reason` says so). A new dict at every call."""
    if event.get("type") != "dossier.received":
        raise ValueError(f"{event.get('type')!r} is not a dossier.received event")
    state = apply(new_state(event["dossier_code"]), event, ctx)
    rs = ctx.rulesets.get(state.ruleset)
    why = ctx.rulesets.why(state.received_at)
    out = {
        "due_at": _iso(state.due_at), "due_at_local": local_text(state.due_at),
        "received_at": _iso(state.received_at), "received_at_local": local_text(state.received_at),
        "clock_start": _iso(state.clock_start),
        "limit": state.limit, "office": state.office,
        "ruleset": state.ruleset, "ruleset_title": rs.title,
        "ruleset_reason": why["text"], "clock_model": state.supplement_policy,
        "catalog_version": state.catalog_version, "calendar_version": state.calendar_version,
    }
    if state.due_at is None:
        out["reason"] = (f"procedure {state.procedure_code} is not in the catalog in force on "
                         f"{state.received_at.astimezone(TZ):%Y-%m-%d}: no legal due date")
    return out

