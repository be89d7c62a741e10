"""`motcua deadline`: compute a legal due date and explain it (DESIGN.md §5, §12), under the rule
set bound to the receipt instant (shared/data/rules/rulesets.yaml) unless --ruleset names one:
the explanation says which rule set and why, and applies its clock model to --supplement (a
supplement requested during handling: pause under nd61-107, restart from the complete dossier
under nd118-2025)."""
from __future__ import annotations

import argparse
import json
from datetime import datetime

from shared.cli import CliError
from shared.domain.limits import parse_limit
from shared.domain.instants import TZ
from shared.domain.workcal import CalendarError, calendar_for, explain_due



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
    from shared.domain.engine.ruledata import RuleDataError, default_rulesets, load_rulesets
    try:
        sets = load_rulesets(args.rulesets) if args.rulesets else default_rulesets()
    except RuleDataError as exc:
        raise CliError(str(exc)) from None
    why = sets.why(received)
    if args.ruleset:
        try:
            rs = sets.get(args.ruleset)
        except KeyError as exc:
            raise CliError(f"--ruleset: {exc.args[0]}") from None
        if rs.id != why["ruleset"]:
            why = dict(why, ruleset=rs.id, title=rs.title, supplement_in_handling=rs.supplement_in_handling,
                       text=(f"Bộ quy tắc {rs.id} ({rs.title}) do người dùng chỉ định (--ruleset); "
                             f"theo ngày tiếp nhận sẽ áp dụng {why['ruleset']}."))
    else:
        rs = sets.get(why["ruleset"])
    model = rs.supplement_policy(args.procedure_policy)
    start = received
    supplements = [_pause(p) for p in args.supplement or []]
    for s_start, s_end in supplements:
        if model == "restart":
            if s_end is None:
                pauses.append((s_start, None))        # waiting: the clock is stopped
            else:
                start = max(start, s_end)             # counted again from zero from the complete dossier
                pauses = [(a, b) for a, b in pauses if a >= start]
        else:
            pauses.append((s_start, s_end))
    if any(end is None for _, end in pauses) and now is None:
        raise CliError("a pause without an end (still paused) needs --now")
    try:
        cal = calendar_for(args.office, args.overrides)
        info = explain_due(cal, start, limit, pauses, ruleset=rs.id,
                           catalog_version=args.catalog_version, now=now)
    except (CalendarError, ValueError) as exc:
        raise CliError(str(exc)) from None
    clock = {"restart": "tính lại từ đầu sau khi nhận đủ hồ sơ bổ sung",
             "pause": "tạm dừng, thời gian đã giải quyết được tính tiếp"}[model]
    lines = [why["text"], f"Bổ sung hồ sơ trong quá trình giải quyết: {clock}."]
    if start != received:
        lines.append(f"Thời hạn được tính lại từ {start.astimezone(TZ):%H:%M ngày %d/%m/%Y} "
                     f"(nhận đủ hồ sơ bổ sung).")
    info["lines"] = lines + info["lines"]
    info["ruleset_reason"] = dict(why, clock_model=model, counted_from=start.isoformat())
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
    p.add_argument("--supplement", action="append", metavar="ISO/ISO",
                   help="a supplement requested during handling REQUESTED/RECEIVED (repeatable; "
                        "RECEIVED empty = still waiting, needs --now): paused or restarted by the rule set's clock model")
    p.add_argument("--procedure-policy", choices=("pause", "restart"), default=None,
                   help="the procedure's supplement_policy, used by a rule set whose clock model defers to the catalog (nd61-107)")
    p.add_argument("--now", metavar="ISO", help="current instant, for a pause still running")
    p.add_argument("--ruleset", default=None,
                   help="rule set id (default: the one bound to the receipt date in rulesets.yaml)")
    p.add_argument("--rulesets", metavar="FILE", help="another rulesets.yaml (default: the shipped one)")
    p.add_argument("--catalog-version", default="-", help="catalog version shown in the explanation")
    p.add_argument("--json", action="store_true", help='print {"due_at": ISO, …, "lines": [...]} as JSON')
    p.set_defaults(func=run)
