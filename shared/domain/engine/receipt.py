"""The due date of a receipt, as the counter prints it on the Giấy tiếp nhận hồ sơ và hẹn trả kết
quả (Mẫu 01), computed by the engine itself: intake's 202 for a `dossier.received` and its receipt
endpoint call this, the sla service folds the same event with the same `apply` — one computation,
so the slip and the stored initial due date cannot disagree (tests/unit/test_receipt.py checks it
on 1,000 random receipts).

What a new dossier's slip says depends, besides the reference data, only on its receipt instant,
its receiving agency and its procedure: the result is memoised on those (a batch of receipts for
one procedure at one counter instant costs one `apply`). tests/unit/test_receipt.py varies every
other field of the event to keep that true.
"""
from __future__ import annotations

import threading
from collections import OrderedDict
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
    key = _memo_key(event, ctx)
    if key is None:
        return compute_receipt_due(event, ctx)
    hit = _MEMO.get(key, ctx)
    if hit is None:
        hit = compute_receipt_due(event, ctx)
        _MEMO.put(key, ctx, hit)
    return dict(hit)


def compute_receipt_due(event: dict, ctx) -> dict:
    """`receipt_due` without the memo: one `apply` of the event on a new dossier."""
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


def _memo_key(event: dict, ctx) -> tuple | None:
    """(context, calendar version, receipt instant, receiving agency, procedure); None for an
    event `apply` would reject or may read differently (then it is computed, and raises)."""
    at, agency, data = event.get("occurred_at"), event.get("agency_code"), event.get("data")
    if not (event.get("event_id") and event.get("dossier_code") and isinstance(agency, str)
            and isinstance(data, dict) and isinstance(at, datetime) and at.utcoffset() is not None):
        return None
    procedure = data.get("procedure_code")
    if not isinstance(procedure, str):
        return None
    # the calendar file may be reloaded under the same context: its version is its content
    calendar = getattr(ctx.calendars(ctx.office_for(agency)), "version", None)
    if calendar is None:
        return None
    return id(ctx), calendar, at, agency, procedure


class _Memo:
    """A bounded LRU, shared by a process's threads. Entries keep their context, so a context
    collected and another one built at the same address can never answer for it."""

    def __init__(self, size: int):
        self.size = size
        self._items: OrderedDict[tuple, tuple[object, dict]] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: tuple, ctx) -> dict | None:
        with self._lock:
            item = self._items.get(key)
            if item is None or item[0] is not ctx:
                return None
            self._items.move_to_end(key)
            return item[1]

    def put(self, key: tuple, ctx, value: dict) -> None:
        with self._lock:
            self._items[key] = (ctx, value)
            self._items.move_to_end(key)
            while len(self._items) > self.size:
                self._items.popitem(last=False)

    def clear(self) -> None:
        with self._lock:
            self._items.clear()


_MEMO = _Memo(1024)      # an entry holds a few KB of text
