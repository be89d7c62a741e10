"""Dossier events for the compose tests and what the sla engine says they must produce.

Events come from `motcua demo`'s generator (the package's catalog, directory and realistic
scenarios), limited to dossiers whose every instant is days in the past, so the findings they
produce do not change while a test runs; dossier codes carry a tag so a test reads back only its
own dossiers. The expected findings are the engine's own, replayed in memory on the same events.
"""
from __future__ import annotations

import random
from collections import defaultdict
from datetime import datetime, timedelta, timezone

# scenarios of shared.cli.local whose dossiers were received at least 3 days ago
STABLE_MIN_AGE = timedelta(days=3)


def make_events(n_events: int, tag: str, seed: int | None = None, now: datetime | None = None) -> list[dict]:
    """About `n_events` events (whole dossiers), codes `<demo code>-<tag>`, in posting order.
    Event ids come from `seed` (random by default: two calls must not reuse an id)."""
    from shared.domain.catalog import load_catalog
    from shared.cli.local import demo_events
    from shared.platform.config import Settings
    from shared.domain.directory import load_directory

    settings = Settings.from_env({})
    catalog = load_catalog(settings.catalog_file)
    directory = load_directory(settings.directory_file)
    now = now or datetime.now(timezone.utc)
    rng = random.Random(random.randrange(2**63) if seed is None else seed)
    out: list[dict] = []
    batch_no = 0
    while len(out) < n_events:
        events = demo_events(catalog, directory, now, rng, 240)
        by_code: dict[str, list[dict]] = defaultdict(list)
        for e in events:
            by_code[e["dossier_code"]].append(e)
        for code, evs in by_code.items():
            received = datetime.fromisoformat(evs[0]["occurred_at"])
            if now - received < STABLE_MIN_AGE:
                continue
            new_code = f"{code}-{tag}{batch_no}"
            for e in evs:
                out.append({**e, "dossier_code": new_code})
        batch_no += 1
    # keep whole dossiers only
    codes, kept = set(), []
    for e in out:
        if len(kept) >= n_events and e["dossier_code"] not in codes:
            break
        codes.add(e["dossier_code"])
        kept.append(e)
    return kept


def expected_findings(events: list[dict], recorded: dict[str, str],
                      now: datetime | None = None) -> dict[str, set[str]]:
    """dossier code -> finding ids the engine produces for its events (all states), each event
    with the `recorded_at` intake gave it (`recorded`: event id -> instant)."""
    from shared.domain.engine.context import default_context
    from shared.domain.engine.rules import evaluate
    from shared.domain.engine.state import replay
    from shared.contracts.events import load_stored

    ctx = default_context()
    now = now or datetime.now(timezone.utc)
    by_code: dict[str, list[dict]] = defaultdict(list)
    for e in events:
        by_code[e["dossier_code"]].append(e)
    out = {}
    for code, evs in by_code.items():
        state = replay([load_stored({**e, "recorded_at": recorded[e["event_id"]]}) for e in evs], ctx)
        out[code] = {f.finding_id for f in evaluate(state, now, ctx).findings}
    return out


def notification_of(message_id: str) -> str:
    """The notification id inside an alert's Message-ID (<time.pid.random.ID@motcua>)."""
    local = message_id.strip("<>").rsplit("@", 1)[0]
    return local.split(".", 3)[3] if local.count(".") >= 3 else local
