"""`motcua local up|down|status|env` (the stack of deploy/local) and `motcua demo`."""
from __future__ import annotations

import argparse
import sys

from shared.cli import CliError

LOCAL_HELP = """\
Run the whole system on this machine without Docker: Kafka (jars from Maven Central, Java 17),
FerretDB (built with Go), an SMTP catcher writing .eml files, and the three services.

Environment: MOTCUA_LOCAL_NAME (stack name, default dev), MOTCUA_LOCAL_DIR (state root, default
.local), MOTCUA_CACHE_DIR, MOTCUA_KAFKA_PORT (19092), MOTCUA_KAFKA_CONTROLLER_PORT (19093),
MOTCUA_FERRETDB_PORT (27027), MOTCUA_FERRETDB_DEBUG_PORT (27028), MOTCUA_SMTP_PORT (1025),
MOTCUA_INTAKE_PORT (8001), MOTCUA_SLA_PORT (8002), MOTCUA_NOTIFY_PORT (8003), MOTCUA_DASHBOARD_PORT (8004),
MOTCUA_SLA_METRICS_PORT (9101), MOTCUA_NOTIFY_METRICS_PORT (9102) for the workers' /metrics.
"""


def register(sub) -> None:
    local = sub.add_parser("local", help="the local stack without Docker (up|down|status|env)",
                           description=LOCAL_HELP, formatter_class=argparse.RawDescriptionHelpFormatter)
    local.add_argument("--name", help="stack name (default: $MOTCUA_LOCAL_NAME or dev)")
    lsub = local.add_subparsers(dest="local_command", metavar="ACTION", required=True)
    p = lsub.add_parser("up", help="start what is not running and wait until it is healthy")
    p.add_argument("--infra-only", action="store_true", help="Kafka, FerretDB and SMTP only, no services")
    p.add_argument("--timeout", type=float, default=120.0, help="seconds to wait for each part (default 120)")
    p.set_defaults(func=_up)
    p = lsub.add_parser("down", help="stop everything this stack started")
    p.add_argument("--wipe", action="store_true", help="also delete data, logs and mail of the stack")
    p.set_defaults(func=_down)
    p = lsub.add_parser("status", help="what runs, its pid, address and health")
    p.set_defaults(func=_status)
    p = lsub.add_parser("env", help="print `export` lines for clients of the stack")
    p.set_defaults(func=_env)
    p = lsub.add_parser("provision", help="download the Kafka jars and build FerretDB, start nothing")
    p.set_defaults(func=_provision)
    register_demo(sub)


def _cfg(args):
    from shared.localstack import StackConfig, StackError
    try:
        return StackConfig.from_env(name=args.name)
    except StackError as exc:
        raise CliError(str(exc)) from None


def _guard(fn, *a, **kw):
    from shared.localstack import StackError
    try:
        return fn(*a, **kw)
    except StackError as exc:
        raise CliError(str(exc)) from None


def _print_report(report: dict) -> None:
    width = max((len(k) for k in report), default=0)
    for name, what in report.items():
        print(f"{name:<{width}}  {what}")


def _up(args) -> int:
    from shared import localstack
    cfg = _cfg(args)
    report = _guard(localstack.up, cfg, infra_only=args.infra_only, timeout=args.timeout)
    _print_report(report)
    print(f"\nstack {cfg.name} is up; state in {cfg.state_dir}, logs in {cfg.log_dir}")
    print(f"environment for clients: source {cfg.env_file}   (or: eval \"$(motcua local env)\")")
    return 0


def _down(args) -> int:
    from shared import localstack
    cfg = _cfg(args)
    report = _guard(localstack.down, cfg, wipe=args.wipe)
    if report:
        _print_report(report)
    else:
        print(f"stack {cfg.name}: nothing was running")
    return 0


def _status(args) -> int:
    from shared import localstack
    cfg = _cfg(args)
    rows = localstack.status(cfg)
    cols = ("name", "state", "pid", "address", "health")
    widths = {c: max(len(c), *(len(str(r[c])) for r in rows)) for c in cols}
    print("  ".join(c.upper().ljust(widths[c]) for c in cols))
    for r in rows:
        print("  ".join(str(r[c]).ljust(widths[c]) for c in cols))
    running = any(r["state"] == "running" for r in rows)
    return 0 if running else 3


def _env(args) -> int:
    from shared import localstack
    sys.stdout.write(localstack.env_text(_cfg(args)))
    return 0


def _provision(args) -> int:
    from shared import localstack
    _guard(localstack.provision, _cfg(args))
    print("Kafka jars and FerretDB binary are in the cache")
    return 0


# --------------------------------------------------------------------------- motcua demo

DEMO_HELP = """\
Post a realistic sample of dossier events (procedures from the catalog, agencies from the
directory, Vietnamese applicants) to the intake API of a running stack. Some dossiers are
backdated past their deadline, so overdue alerts appear at once in MAIL_DIR.
Without --key, an admin key bound to the directory's root agency is created in MongoDB
(MONGO_URI, MONGO_DB) through shared.auth.
"""

_FAMILY = ["Nguyễn", "Trần", "Lê", "Phạm", "Huỳnh", "Võ", "Phan", "Trương", "Đặng", "Bùi"]
_MIDDLE = ["Văn", "Thị", "Minh", "Ngọc", "Hữu", "Thanh", "Quốc", "Thu"]
_GIVEN = ["An", "Bình", "Châu", "Dũng", "Hạnh", "Khoa", "Lan", "Mai", "Nam", "Phúc", "Quyên",
          "Sơn", "Tâm", "Uyên", "Vinh", "Yến"]
_COMPANIES = ["Công ty TNHH Thương mại Tân An", "Công ty Cổ phần Xây dựng Đức Hòa",
              "Hợp tác xã Nông nghiệp Bến Lức"]
# scenario -> how many days before now the dossier was received (office days, roughly)
_SCENARIOS = [
    ("overdue", 16), ("overdue", 23), ("in_progress", 0), ("resolved_on_time", 3),
    ("supplement_twice", 6), ("incomplete", 1), ("overdue_no_transfer", 12), ("resolved_late", 30),
    ("in_progress", 1), ("returned", 5), ("overdue", 40), ("refused", 2),
]


def _office_morning(day, hour=8, minute=30):
    """08:30 (Asia/Ho_Chi_Minh) on `day`, moved back to Friday when it is a weekend, as UTC."""
    from datetime import datetime, timedelta, timezone
    from zoneinfo import ZoneInfo

    while day.weekday() >= 5:
        day -= timedelta(days=1)
    local = datetime(day.year, day.month, day.day, hour, minute, tzinfo=ZoneInfo("Asia/Ho_Chi_Minh"))
    return local.astimezone(timezone.utc)


def demo_events(catalog, directory, now, rng, count: int = 12) -> list[dict]:
    """Sample events (wire format: ISO strings), in the order a counter would post them.

    Every instant is <= `now`; dossiers of the overdue scenarios are received long enough ago to
    be past their legal deadline."""
    import uuid as _uuid
    from datetime import timedelta

    procs = [p for p in catalog if not getattr(p, "sample", False)] or list(catalog)
    communes = [a for a in _agencies(directory) if (a.level or "").lower() == "xã"]
    provincial = [a for a in _agencies(directory) if a not in communes and a.parent]
    if not procs or not communes:
        raise CliError("the catalog or the directory is empty: nothing to build a demo from")
    vn = now.astimezone(_tz())
    events: list[dict] = []
    seq_base = rng.randint(1, 9000)

    def ev(etype, code, agency, at, data, actor=None):
        e = {"event_id": str(_uuid.UUID(int=rng.getrandbits(128), version=4)), "type": etype,
             "dossier_code": code, "occurred_at": min(at, now).isoformat(), "agency_code": agency,
             "data": data}
        if actor:
            e["actor"] = actor
        events.append(e)

    for i in range(count):
        scenario, days_ago = _SCENARIOS[i % len(_SCENARIOS)]
        proc = procs[i % len(procs)]
        commune_level = "xã" in (proc.level or "xã").lower()
        pool = communes if commune_level or not provincial else provincial
        agency = pool[i % len(pool)]
        received = _office_morning((vn - timedelta(days=days_ago)).date(), 8 + i % 3, 15 * (i % 4))
        if received > now:
            received = now - timedelta(minutes=30)
        code = f"{agency.code}-{received.astimezone(_tz()):%y%m%d}-{seq_base + i:04d}"
        required = list(proc.required_component_ids()) if hasattr(proc, "required_component_ids") else []
        components = required[:-1] if scenario == "incomplete" and len(required) > 1 else required
        organization = "doanh nghiệp" in proc.field.lower() or "kinh doanh" in proc.field.lower()
        applicant = ({"kind": "organization", "name": rng.choice(_COMPANIES)} if organization else
                     {"kind": "citizen", "name": f"{rng.choice(_FAMILY)} {rng.choice(_MIDDLE)} {rng.choice(_GIVEN)}"})
        clerk = {"id": f"cb-{agency.code[-6:]}-01", "name": "Lý Thị Ngân", "role": "counter"}
        ev("dossier.received", code, agency.code, received, {
            "procedure_code": proc.code, "channel": ["direct", "online", "postal"][i % 3],
            "components": components, "digitized": components[: max(0, len(components) - i % 2)],
            "applicant": applicant}, clerk)
        if scenario in ("incomplete", "overdue_no_transfer", "in_progress") and days_ago == 0:
            continue
        if scenario == "refused":
            ev("dossier.refused", code, agency.code, received + timedelta(minutes=20),
               {"reason": "Hồ sơ không thuộc thẩm quyền giải quyết của cơ quan"}, clerk)
            continue
        if scenario == "overdue_no_transfer":
            continue
        t = received + timedelta(hours=1)
        ev("dossier.transferred", code, agency.code, t, {"to_agency_code": agency.code}, clerk)
        ev("dossier.assigned", code, agency.code, t + timedelta(minutes=30),
           {"officer": {"id": f"cv-{i:03d}", "name": f"{rng.choice(_FAMILY)} {rng.choice(_MIDDLE)} {rng.choice(_GIVEN)}"}})
        if scenario == "supplement_twice" and required:
            for k in range(2):
                ev("dossier.supplement_requested", code, agency.code, t + timedelta(hours=2 + 24 * k),
                   {"stage": "handling", "components": [required[k % len(required)]],
                    "reason": "Bản sao chưa được chứng thực, đề nghị bổ sung"})
                ev("dossier.supplement_received", code, agency.code, t + timedelta(hours=20 + 24 * k),
                   {"components": [required[k % len(required)]]})
        if scenario in ("resolved_on_time", "returned"):
            ev("dossier.resolved", code, agency.code, t + timedelta(hours=3),
               {"outcome": "approved", "note": "Đã giải quyết"})
            if scenario == "returned":
                ev("dossier.returned", code, agency.code, t + timedelta(hours=5), {})
        if scenario == "resolved_late":
            ev("dossier.resolved", code, agency.code, now - timedelta(days=2),
               {"outcome": "approved"})
    return events


def _tz():
    from zoneinfo import ZoneInfo
    return ZoneInfo("Asia/Ho_Chi_Minh")


def _agencies(directory) -> list:
    return list(directory)      # Directory iterates over its Agency objects


def register_demo(sub) -> None:
    p = sub.add_parser("demo", help="post a realistic sample of dossier events to the running stack",
                       description=DEMO_HELP, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--intake-url", help="intake base URL (default: $INTAKE_URL)")
    p.add_argument("--key", help="API key to post with (default: create an admin key)")
    p.add_argument("--count", type=int, default=12, help="number of dossiers (default 12, at most 500)")
    p.add_argument("--seed", type=int, help="random seed (same seed, same events)")
    p.add_argument("--wait", type=float, default=0.0,
                   help="then wait up to this many seconds for alert e-mails in MAIL_DIR")
    p.add_argument("--dry-run", action="store_true", help="print the events as JSON lines, post nothing")
    p.set_defaults(func=_demo)


def _demo(args) -> int:
    import json
    import random

    from shared.catalog import load_catalog
    from shared.clock import clock_from_env
    from shared.config import Settings, env
    from shared.directory import load_directory

    if not 1 <= args.count <= 500:
        raise CliError("--count must be between 1 and 500")
    settings = Settings.from_env()
    try:
        catalog = load_catalog(settings.catalog_file)
        directory = load_directory(settings.directory_file)
    except (OSError, ValueError) as exc:
        raise CliError(f"cannot load the catalog/directory: {exc}") from None
    rng = random.Random(args.seed)
    events = demo_events(catalog, directory, clock_from_env().now(), rng, args.count)
    if args.dry_run:
        for e in events:
            print(json.dumps(e, ensure_ascii=False))
        return 0
    url = (args.intake_url or env("INTAKE_URL")).rstrip("/")
    key = args.key or _demo_key(settings, directory)
    mail_dir = env("MAIL_DIR")
    before = _eml_count(mail_dir)
    failed = _post_all(url, key, events)
    dossiers = len({e["dossier_code"] for e in events})
    print(f"posted {len(events) - failed}/{len(events)} events for {dossiers} dossiers to {url}")
    if failed:
        raise CliError(f"{failed} event(s) were rejected (see above)")
    if args.wait > 0:
        if not mail_dir:
            raise CliError("--wait needs MAIL_DIR (eval \"$(motcua local env)\")")
        n = _wait_for_mail(mail_dir, before, args.wait)
        print(f"{n} new alert e-mail(s) in {mail_dir}" if n else
              f"no alert e-mail in {mail_dir} after {args.wait:.0f}s: see the logs of sla-worker and notify-worker")
    return 0


def _demo_key(settings, directory) -> str:
    from pymongo import MongoClient
    from pymongo.errors import PyMongoError

    from shared.auth import KeyStore

    roots = [a.code for a in _agencies(directory) if not a.parent]
    if not roots:
        raise CliError("the directory has no root agency to bind the demo key to")
    client = MongoClient(settings.mongo_uri, serverSelectionTimeoutMS=5000, tz_aware=True)
    try:
        _key_id, secret = KeyStore(client[settings.mongo_db]).create(roots[0], "admin", "motcua demo")
    except PyMongoError as exc:
        raise CliError(f"cannot create a demo API key in MongoDB at MONGO_URI ({type(exc).__name__}); "
                       "is the stack running? (motcua local up)") from None
    finally:
        client.close()
    return secret


def _post_all(url: str, key: str, events: list[dict]) -> int:
    import requests

    failed = 0
    with requests.Session() as http:
        http.headers["Authorization"] = f"Bearer {key}"
        for e in events:
            try:
                resp = http.post(f"{url}/v1/events", json=e, timeout=15)
            except requests.RequestException as exc:
                raise CliError(f"cannot reach intake at {url} ({type(exc).__name__}); "
                               "is the stack running? (motcua local status)") from None
            if resp.status_code not in (200, 201, 202):
                failed += 1
                print(f"{e['dossier_code']} {e['type']}: HTTP {resp.status_code} {resp.text[:300]}",
                      file=sys.stderr)
    return failed


def _eml_count(mail_dir: str) -> int:
    from pathlib import Path
    d = Path(mail_dir) if mail_dir else None
    return len(list(d.glob("*.eml"))) if d and d.is_dir() else 0


def _wait_for_mail(mail_dir: str, before: int, timeout: float) -> int:
    import time
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if _eml_count(mail_dir) > before:
            break
        time.sleep(1)
    return _eml_count(mail_dir) - before
