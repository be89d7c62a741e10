"""`motcua rules list|show`: the rule sets, their binding by date, and each rule as data
(Vietnamese title, article, citation, verified against, severity, responsible, parameters,
what the law requires now), from shared/data/rules/ or another rulesets.yaml."""
from __future__ import annotations

import argparse
import json
from datetime import date, datetime

from shared.cli import CliError


def _load(path: str | None):
    from shared.domain.engine.ruledata import RuleDataError, default_rulesets, load_rulesets
    try:
        return load_rulesets(path) if path else default_rulesets()
    except RuleDataError as exc:
        raise CliError(str(exc)) from None


def _param(v) -> str:
    if hasattr(v, "strftime"):
        return v.strftime("%H:%M")
    if isinstance(v, tuple):
        return ", ".join(v)
    return str(v)


def ruleset_data(rs) -> dict:
    return {
        "id": rs.id, "title": rs.title, "source": rs.source, "verified_against": rs.verified_against,
        "clock": {"supplement_in_handling": rs.supplement_in_handling},
        "forms": {k: {"number": f.number, "title": f.title, "circular": f.circular}
                  for k, f in rs.forms.items()},
        "absent": list(rs.absent),
        "rules": [{"code": s.code, "title": s.title, "article": s.article, "citation": s.citation,
                   "verified_against": s.verified_against, "confidence": s.confidence,
                   "severity": s.severity, "responsible": s.responsible,
                   "reception_responsible": s.reception_responsible, "escalate_to": s.escalate_to,
                   "params": {k: _param(v) for k, v in s.params.items()},
                   "requirement": s.requirement} for s in rs.rules.values()],
    }


CLOCK_VI = {"restart": "tính lại từ đầu sau khi nhận đủ hồ sơ bổ sung",
            "pause": "tạm dừng; thời gian đã giải quyết được tính tiếp",
            "procedure": "theo từng thủ tục trong danh mục (mặc định: tạm dừng)"}


def _show(args) -> int:
    sets = _load(args.rulesets)
    if args.received:
        try:
            t = datetime.fromisoformat(args.received)
        except ValueError:
            raise CliError(f"--received: {args.received!r} is not an ISO 8601 instant") from None
        if t.utcoffset() is None:
            raise CliError(f"--received: {args.received!r} has no UTC offset (e.g. +07:00)")
        why = sets.why(t)
        rs = sets.get(why["ruleset"])
    elif args.ruleset:
        try:
            rs = sets.get(args.ruleset)
        except KeyError as exc:
            raise CliError(str(exc.args[0])) from None
        why = None
    else:
        raise CliError("say which rule set: RULESET, or --received ISO (the rule set of a receipt)")
    data = ruleset_data(rs)
    if args.rule:
        data["rules"] = [r for r in data["rules"] if r["code"] == args.rule]
        if not data["rules"]:
            raise CliError(f"rule set {rs.id} has no rule {args.rule}"
                           + (" (absent from this law)" if args.rule in rs.absent else ""))
    if why:
        data["why"] = why
    if args.json:
        print(json.dumps(data, ensure_ascii=False, indent=2))
        return 0
    print(f"Bộ quy tắc {rs.id}: {rs.title}")
    if why:
        print(f"Vì sao: {why['text']}")
    print(f"Đối chiếu với: {rs.verified_against}")
    print(f"Bổ sung hồ sơ trong quá trình giải quyết: {CLOCK_VI[rs.supplement_in_handling]}")
    if rs.forms:
        circular = next(iter(rs.forms.values())).circular
        print(f"Biểu mẫu ({circular}): " + "; ".join(f"Mẫu số {f.number} {f.title}" for f in rs.forms.values()))
    if rs.absent and not args.rule:
        print(f"Không có trong bộ quy tắc này: {', '.join(rs.absent)}")
    for r in data["rules"]:
        print()
        print(f"{r['code']} — {r['title']}")
        print(f"  Điều khoản: {r['article']}")
        print(f"  Căn cứ: {r['citation']}")
        print(f"  Đối chiếu với: {r['verified_against']}")
        print(f"  Mức độ: {r['severity']}; tin cậy: {r['confidence']}; trách nhiệm: {r['responsible']}"
              + (f" (tại khâu tiếp nhận: {r['reception_responsible']})" if r["reception_responsible"] else "")
              + (f"; chuyển cấp: {r['escalate_to']}" if r["escalate_to"] else ""))
        if r["params"]:
            print("  Tham số: " + ", ".join(f"{k}={v}" for k, v in r["params"].items()))
        print(f"  Việc cần làm: {r['requirement']}")
    return 0


def _list(args) -> int:
    sets = _load(args.rulesets)
    rows = [{"effective_from": d.isoformat(), "ruleset": rid, "title": sets.get(rid).title}
            for d, rid in sets.bindings]
    if args.json:
        print(json.dumps({"default": sets.default, "bindings": rows}, ensure_ascii=False, indent=2))
        return 0
    print(f"Mặc định (trước mọi mốc): {sets.default}")
    for r in rows:
        print(f"Từ {date.fromisoformat(r['effective_from']):%d/%m/%Y}: {r['ruleset']} — {r['title']}")
    return 0


def register(subparsers) -> None:
    p = subparsers.add_parser("rules", help="show the legal rule sets and their rules",
                              description="The rule sets (shared/data/rules/), bound by receipt date.")
    sub = p.add_subparsers(dest="rules_command", metavar="SUBCOMMAND", required=True)
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--rulesets", metavar="FILE", help="another rulesets.yaml (default: the shipped one)")
    common.add_argument("--json", action="store_true", help="print JSON")
    ls = sub.add_parser("list", parents=[common], help="rule sets by effective date")
    ls.set_defaults(func=_list)
    show = sub.add_parser("show", parents=[common], help="one rule set's rules (article, verified against, parameters)")
    show.add_argument("ruleset", nargs="?", help="rule set id, e.g. nd118-2025")
    show.add_argument("--received", metavar="ISO", help="the rule set of a dossier received at this instant, and why")
    show.add_argument("--rule", metavar="CODE", help="only this rule, e.g. SUPPLEMENT_REQUEST_LATE")
    show.set_defaults(func=_show)
