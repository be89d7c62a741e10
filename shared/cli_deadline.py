"""`motcua deadline`: compute a legal due date and explain it (DESIGN.md §5, §12)."""
from __future__ import annotations

import argparse
import json
from datetime import datetime

from shared.cli import CliError
from shared.limits import parse_limit
from shared.workcal import TZ, CalendarError, calendar_for, explain_due

DEFAULT_RULESET = "nd61-107"


def _instant(text: str, what: str) -> datetime:
    try:
        t = datetime.fromisoformat(text.strip())
    except ValueError:
        raise CliError(f"{what}: {text!r} is not an ISO 8601 instant (e.g. 2024-11-05T08:15:00+07:00)") from None
    if t.utcoffset() is None:
        raise CliError(f"{what}: {text!r} has no UTC offset; write e.g. {text.strip()}+07:00")
    return t


def _pause(text: str) -> tuple[datetime, datetime | None]:
    start_text, sep, end_text = text.partition("/")
    if not sep or not start_text.strip():
        raise CliError(f"--pause {text!r}: expected START/END (ISO 8601 instants; END empty = still paused)")
    start = _instant(start_text, "--pause start")
    end = _instant(end_text, "--pause end") if end_text.strip() else None
    if end is not None and end < start:
        raise CliError(f"--pause {text!r}: the end is before the start")
    return start, end


def run(args: argparse.Namespace) -> int:
    received = _instant(args.received, "--received")
    try:
        limit = parse_limit(args.limit)
    except ValueError as exc:
        raise CliError(f"--limit: {exc}") from None
    pauses = [_pause(p) for p in args.pause or []]
    now = _instant(args.now, "--now") if args.now else None
    if any(end is None for _, end in pauses) and now is None:
        raise CliError("a pause without an end (still paused) needs --now")
    try:
        cal = calendar_for(args.office, args.overrides)
        info = explain_due(cal, received, limit, pauses, ruleset=args.ruleset,
                           catalog_version=args.catalog_version, now=now)
    except (CalendarError, ValueError) as exc:
        raise CliError(str(exc)) from None
    if args.json:
        print(json.dumps(info, ensure_ascii=False, indent=2))
    else:
        due_local = datetime.fromisoformat(info["due_at"]).astimezone(TZ)
        print(f"Hạn giải quyết: {due_local:%H:%M ngày %d/%m/%Y} (giờ Việt Nam, {due_local:%z}) — "
              f"{info['due_at']}")
        print()
        print("Cách tính:")
        for line in info["lines"]:
            print(f"  - {line}")
    return 0


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "deadline", help="compute a legal due date and explain it",
        description="Compute the legal due date of a dossier (DESIGN.md §5) and explain it in Vietnamese.")
    p.add_argument("--received", required=True, metavar="ISO",
                   help="receipt instant with a UTC offset, e.g. 2024-11-05T08:15:00+07:00")
    p.add_argument("--limit", required=True, metavar="LIMIT", help="5wd, 40wh, 30cd or same-day")
    p.add_argument("--pause", action="append", metavar="ISO/ISO",
                   help="a pause of the clock START/END (repeatable; END empty = still paused, needs --now)")
    p.add_argument("--office", default="default", help="office id from offices.yaml (default: default)")
    p.add_argument("--overrides", action="append", metavar="FILE",
                   help="province override file (repeatable), applied after the office's own")
    p.add_argument("--now", metavar="ISO", help="current instant, for a pause still running")
    p.add_argument("--ruleset", default=DEFAULT_RULESET, help=f"rule set id shown in the explanation (default {DEFAULT_RULESET})")
    p.add_argument("--catalog-version", default="-", help="catalog version shown in the explanation")
    p.add_argument("--json", action="store_true", help='print {"due_at": ISO, …, "lines": [...]} as JSON')
    p.set_defaults(func=run)
