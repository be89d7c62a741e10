"""`motcua local up|down|status|env` (the stack of deploy/local) and `motcua demo`."""
from __future__ import annotations

import argparse
import sys

from shared.cli import CliError
from shared.domain.instants import TZ, UTC

LOCAL_HELP = """\
Run the whole system on this machine without Docker: Kafka (jars from Maven Central, Java 17),
FerretDB (built with Go), an SMTP catcher writing .eml files, and the three services.

Environment: MOTCUA_LOCAL_NAME (stack name, default dev), MOTCUA_LOCAL_DIR (state root, default
.local), MOTCUA_CACHE_DIR, MOTCUA_KAFKA_PORT (19092), MOTCUA_KAFKA_CONTROLLER_PORT (19093),
MOTCUA_FERRETDB_PORT (27027), MOTCUA_FERRETDB_DEBUG_PORT (27028), MOTCUA_SMTP_PORT (1025),
MOTCUA_INTAKE_PORT (8001), MOTCUA_SLA_PORT (8002), MOTCUA_NOTIFY_PORT (8003), MOTCUA_DASHBOARD_PORT (8004),
MOTCUA_SLA_METRICS_PORT (9101), MOTCUA_NOTIFY_METRICS_PORT (9102) for the workers' /metrics.

Rehearsal mode: `motcua local up --clock FILE` starts the services on a virtual clock held in
FILE (MOTCUA_CLOCK_FILE): time moves only when you move it (`motcua local clock set|advance`),
so a month of deadlines, repeats, escalations and digests plays in minutes (`motcua demo
--month`). `local status` shows the clock; `local env` exports it. See docs/rehearsal.md.
"""


def register(sub) -> None:
    local = sub.add_parser("local", help="the local stack without Docker (up|down|status|env)",
                           description=LOCAL_HELP, formatter_class=argparse.RawDescriptionHelpFormatter)
    local.add_argument("--name", help="stack name (default: $MOTCUA_LOCAL_NAME or dev)")
    lsub = local.add_subparsers(dest="local_command", metavar="ACTION", required=True)
    p = lsub.add_parser("up", help="start what is not running and wait until it is healthy")
    p.add_argument("--infra-only", action="store_true", help="Kafka, FerretDB and SMTP only, no services")
    p.add_argument("--timeout", type=float, default=120.0, help="seconds to wait for each part (default 120)")
    p.add_argument("--clock", metavar="FILE",
                   help="rehearsal mode: the services read the time from FILE (created at now if missing)")
    p.add_argument("--clock-start", metavar="ISO",
                   help="with --clock: set the virtual clock to this instant first (e.g. 2026-11-02T07:00+07:00)")
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
    p = lsub.add_parser("clock", help="the rehearsal clock: show | set ISO | advance DURATION (e.g. 1d, 3h, 90m)")
    p.add_argument("clock_action", choices=("show", "set", "advance"), nargs="?", default="show")
    p.add_argument("value", nargs="?", help="an instant with offset (set) or a duration such as 1d, 3h, 90m (advance)")
    p.set_defaults(func=_clock)
    register_demo(sub)


def _cfg(args):
    from shared.dev.stackconfig import StackConfig, StackError
    try:
        return StackConfig.from_env(name=args.name)
    except StackError as exc:
        raise CliError(str(exc)) from None


def _guard(fn, *a, **kw):
    from shared.dev.stackconfig import StackError
    try:
        return fn(*a, **kw)
    except StackError as exc:
        raise CliError(str(exc)) from None


def _print_report(report: dict) -> None:
    width = max((len(k) for k in report), default=0)
    for name, what in report.items():
        print(f"{name:<{width}}  {what}")


# --------------------------------------------------------------------------- rehearsal clock

def _clock_record(cfg):
    """The file naming the rehearsal clock of a stack (absent: the services use the system clock)."""
    return cfg.config_dir / "clock_file"


def rehearsal_clock(cfg):
    """The `FileClock` of a stack started with `--clock`, else None."""
    from shared.platform.clock import FileClock
    rec = _clock_record(cfg)
    return FileClock(rec.read_text().strip()) if rec.exists() else None


def _parse_instant(text: str, what: str):
    from datetime import datetime
    try:
        t = datetime.fromisoformat(text)
    except ValueError:
        raise CliError(f"{what}: not an ISO 8601 instant: {text!r}") from None
    if t.tzinfo is None:
        raise CliError(f"{what}: {text!r} has no UTC offset (e.g. 2026-11-02T07:00+07:00)")
    return t


def _parse_duration(text: str):
    import re
    from datetime import timedelta
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([dhm])\s*", text or "")
    if not m:
        raise CliError(f"advance: invalid duration {text!r} (e.g. 1d, 3h, 90m)")
    n, unit = float(m.group(1)), m.group(2)
    return timedelta(days=n) if unit == "d" else timedelta(hours=n) if unit == "h" else timedelta(minutes=n)


def _start_clock(cfg, path: str, start: str | None) -> str:
    """Create (or reuse) the clock file, record it for the stack and export it to the services."""
    import os
    from datetime import datetime, timezone
    from pathlib import Path

    from shared.platform.clock import FileClock
    f = Path(path).expanduser().resolve()
    clock = FileClock(f)
    if start:
        clock.set(_parse_instant(start, "--clock-start"))
    elif not f.exists():
        f.parent.mkdir(parents=True, exist_ok=True)
        clock.set(datetime.now(timezone.utc))
    try:
        clock.now()
    except (OSError, ValueError) as exc:
        raise CliError(f"--clock {f}: not a clock file ({exc}); it must hold one ISO 8601 instant") from None
    rec = _clock_record(cfg)
    rec.parent.mkdir(parents=True, exist_ok=True)
    rec.write_text(str(f))
    os.environ["MOTCUA_CLOCK_FILE"] = str(f)     # the services inherit it (localstack.service_env)
    return str(f)


def _clock_line(cfg) -> str:
    clock = rehearsal_clock(cfg)
    if clock is None:
        return "clock: system time"
    try:
        now = clock.now().astimezone(TZ).strftime("%Y-%m-%d %H:%M %a (Asia/Ho_Chi_Minh)")
    except (OSError, ValueError) as exc:
        now = f"unreadable ({type(exc).__name__})"
    return f"clock: REHEARSAL, {clock.path} = {now}; move it with `motcua local clock set|advance`"


def _clock(args) -> int:
    cfg = _cfg(args)
    clock = rehearsal_clock(cfg)
    if clock is None:
        raise CliError(f"stack {cfg.name} runs on the system clock; start it with `motcua local up --clock FILE`")
    if args.clock_action == "set":
        if not args.value:
            raise CliError("clock set needs an instant, e.g. 2026-11-09T09:00+07:00")
        clock.set(_parse_instant(args.value, "clock set"))
    elif args.clock_action == "advance":
        clock.set(clock.now() + _parse_duration(args.value))
    elif args.value:
        raise CliError("clock show takes no value")
    print(_clock_line(cfg))
    return 0


def _up(args) -> int:
    from shared.dev import localstack
    cfg = _cfg(args)
    if args.clock_start and not args.clock:
        raise CliError("--clock-start needs --clock FILE")
    if args.clock:
        _start_clock(cfg, args.clock, args.clock_start)
    elif rehearsal_clock(cfg) is not None:
        import os
        os.environ["MOTCUA_CLOCK_FILE"] = str(rehearsal_clock(cfg).path)   # keep the stack's clock
    report = _guard(localstack.up, cfg, infra_only=args.infra_only, timeout=args.timeout)
    _print_report(report)
    if rehearsal_clock(cfg) is not None:
        with cfg.env_file.open("a") as f:
            import shlex
            f.write(f"export MOTCUA_CLOCK_FILE={shlex.quote(str(rehearsal_clock(cfg).path))}\n")
        if any(v == "already running" for k, v in report.items() if k not in ("kafka", "ferretdb", "smtp")):
            print("note: services that were already running keep the clock they started with "
                  "(motcua local down, then up --clock)")
    print(_clock_line(cfg))
    print(f"\nstack {cfg.name} is up; state in {cfg.state_dir}, logs in {cfg.log_dir}")
    print(f"environment for clients: source {cfg.env_file}   (or: eval \"$(motcua local env)\")")
    return 0


def _down(args) -> int:
    from shared.dev import localstack
    cfg = _cfg(args)
    report = _guard(localstack.down, cfg, wipe=args.wipe)
    if _clock_record(cfg).exists():
        _clock_record(cfg).unlink()      # the next `up` runs on the system clock unless --clock
    if report:
        _print_report(report)
    else:
        print(f"stack {cfg.name}: nothing was running")
    return 0


def _status(args) -> int:
    from shared.dev import localstack
    cfg = _cfg(args)
    rows = localstack.status(cfg)
    cols = ("name", "state", "pid", "address", "health")
    widths = {c: max(len(c), *(len(str(r[c])) for r in rows)) for c in cols}
    print("  ".join(c.upper().ljust(widths[c]) for c in cols))
    for r in rows:
        print("  ".join(str(r[c]).ljust(widths[c]) for c in cols))
    print(_clock_line(cfg))
    running = any(r["state"] == "running" for r in rows)
    return 0 if running else 3


def _env(args) -> int:
    from shared.dev import localstack
    cfg = _cfg(args)
    sys.stdout.write(localstack.env_text(cfg))
    if rehearsal_clock(cfg) is not None:
        import shlex
        sys.stdout.write(f"export MOTCUA_CLOCK_FILE={shlex.quote(str(rehearsal_clock(cfg).path))}\n")
    return 0


def _provision(args) -> int:
    from shared.dev.provision import provision
    _guard(provision, _cfg(args))
    print("Kafka jars and FerretDB binary are in the cache")
    return 0


# --------------------------------------------------------------------------- motcua demo

DEMO_HELP = """\
Post a realistic sample of dossier events (procedures from the catalog, agencies from the
directory, Vietnamese applicants) to the intake API of a running stack. Some dossiers are
backdated past their deadline, so overdue alerts appear at once in MAIL_DIR.
Without --key, an admin key bound to the directory's root agency is created in MongoDB
(MONGO_URI, MONGO_DB) through shared.platform.auth.

--month plays a scripted month on the rehearsal clock of a stack started with
`motcua local up --clock FILE` (MOTCUA_CLOCK_FILE from `motcua local env`): receipts, a
supplement, an apology, lateness, repeats, escalations, an acknowledgement, closing notices and
the daily digests land in MAIL_DIR in about six minutes (docs/rehearsal.md).
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
    # two-level government and Decree 118/2025: received through VNeID at a branch of the
    # provincial centre for a commune (transferred late), stopped at the applicant's request,
    # an apology / extension request on the form of the rule set in force
    ("branch_vneid", 2), ("stopped", 4), ("extended", 6),
]
_ND118_FROM = (2025, 7, 1)


def _office_morning(day, hour=8, minute=30):
    """08:30 (Asia/Ho_Chi_Minh) on `day`, moved back to Friday when it is a weekend, as UTC."""
    from datetime import datetime, timedelta

    while day.weekday() >= 5:
        day -= timedelta(days=1)
    local = datetime(day.year, day.month, day.day, hour, minute, tzinfo=TZ)
    return local.astimezone(UTC)


def demo_events(catalog, directory, now, rng, count: int = 15) -> list[dict]:
    """Sample events (wire format: ISO strings), in the order a counter would post them.

    Every instant is <= `now`; dossiers of the overdue scenarios are received long enough ago to
    be past their legal deadline."""
    import uuid as _uuid
    from datetime import date, timedelta

    procs = [p for p in catalog if not getattr(p, "sample", False)] or list(catalog)
    communes = [a for a in _agencies(directory) if (a.level or "").lower() == "xã"]
    provincial = [a for a in _agencies(directory) if a not in communes and a.parent]
    centres = {a.code for a in _agencies(directory) if (a.level or "").lower() == "trung tâm tỉnh"}
    branches = [a for a in _agencies(directory) if a.parent in centres]
    if not procs or not communes:
        raise CliError("the catalog or the directory is empty: nothing to build a demo from")
    vn = now.astimezone(TZ)
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
        handler = agency
        if scenario == "branch_vneid" and branches:
            handler = communes[i % len(communes)]
            agency = branches[i % len(branches)]
        received = _office_morning((vn - timedelta(days=days_ago)).date(), 8 + i % 3, 15 * (i % 4))
        if received > now:
            received = now - timedelta(minutes=30)
        nd118 = received.astimezone(TZ).date() >= date(*_ND118_FROM)
        code = f"{agency.code}-{received.astimezone(TZ):%y%m%d}-{seq_base + i:04d}"
        required = list(proc.required_component_ids()) if hasattr(proc, "required_component_ids") else []
        components = required[:-1] if scenario == "incomplete" and len(required) > 1 else required
        organization = "doanh nghiệp" in proc.field.lower() or "kinh doanh" in proc.field.lower()
        applicant = ({"kind": "organization", "name": rng.choice(_COMPANIES)} if organization else
                     {"kind": "citizen", "name": f"{rng.choice(_FAMILY)} {rng.choice(_MIDDLE)} {rng.choice(_GIVEN)}"})
        clerk = {"id": f"cb-{agency.code[-6:]}-01", "name": "Lý Thị Ngân", "role": "counter"}
        data = {"procedure_code": proc.code, "channel": ["direct", "online", "postal"][i % 3],
                "components": components, "digitized": components[: max(0, len(components) - i % 2)],
                "applicant": applicant}
        if scenario == "branch_vneid" and handler is not agency:
            data.update(channel="vneid", handling_agency_code=handler.code,
                        submitted_at=(received - timedelta(hours=2)).isoformat())
        ev("dossier.received", code, agency.code, received, data, clerk)
        if scenario == "branch_vneid" and handler is not agency:
            # electronic data must go at once: three hours later is a transfer fault of the branch
            ev("dossier.transferred", code, agency.code, received + timedelta(hours=3),
               {"to_agency_code": handler.code}, clerk)
            ev("dossier.assigned", code, handler.code, received + timedelta(hours=4),
               {"officer": {"id": f"cv-{i:03d}", "name": f"{rng.choice(_FAMILY)} {rng.choice(_MIDDLE)} {rng.choice(_GIVEN)}"}})
            continue
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
        circular = "03/2025/TT-VPCP" if nd118 else "01/2018/TT-VPCP"
        if scenario == "stopped":
            data = {"reason": "Người nộp hồ sơ đề nghị dừng giải quyết",
                    "requested_at": (t + timedelta(days=1)).isoformat()}
            if nd118:
                data["form"] = {"circular": circular, "number": "05"}   # Thông báo dừng giải quyết
            ev("dossier.stopped", code, agency.code, t + timedelta(days=1, hours=1), data, clerk)
        if scenario == "extended":
            ev("dossier.apology_issued", code, agency.code, t + timedelta(days=2), {
                "new_appointment_at": (t + timedelta(days=12)).isoformat(),
                "reason": "Cần xác minh thông tin với cơ quan liên quan",
                "form": {"circular": circular, "number": "04"}})
        if scenario == "resolved_late":
            ev("dossier.resolved", code, agency.code, now - timedelta(days=2),
               {"outcome": "approved"})
    return events


def _agencies(directory) -> list:
    return list(directory)      # Directory iterates over its Agency objects


def register_demo(sub) -> None:
    p = sub.add_parser("demo", help="post a realistic sample of dossier events to the running stack",
                       description=DEMO_HELP, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--intake-url", help="intake base URL (default: $INTAKE_URL)")
    p.add_argument("--key", help="API key to post with (default: create an admin key)")
    p.add_argument("--count", type=int, default=15, help="number of dossiers (default 15, at most 500)")
    p.add_argument("--seed", type=int, help="random seed (same seed, same events)")
    p.add_argument("--wait", type=float, default=0.0,
                   help="then wait up to this many seconds for alert e-mails in MAIL_DIR")
    p.add_argument("--dry-run", action="store_true",
                   help="print the events as JSON lines, post nothing (still reads the catalog and "
                        "directory in force: MongoDB, else the files)")
    p.add_argument("--month", action="store_true",
                   help="play a scripted month on the rehearsal clock (needs MOTCUA_CLOCK_FILE)")
    p.add_argument("--days", type=int, default=30, help="with --month: how many days (default 30, 5 to 60)")
    p.add_argument("--step-seconds", type=float, default=2.0,
                   help="with --month: real seconds the workers get at each step (default 2)")
    p.add_argument("--digest-seconds", type=float, default=11.0,
                   help="with --month: real seconds at each morning's digest time (default 11: the "
                        "notify scheduler runs every 10 s)")
    p.set_defaults(func=_demo)


def _demo(args) -> int:
    import json
    import random

    from shared.cli import cli_db, reference_catalog, reference_directory
    from shared.platform.clock import clock_from_env
    from shared.platform.config import Settings, env

    if not 1 <= args.count <= 500:
        raise CliError("--count must be between 1 and 500")
    settings = Settings.from_env()
    if args.month and not env("MOTCUA_CLOCK_FILE"):
        raise CliError("--month needs the rehearsal clock: motcua local up --clock FILE, then "
                       "eval \"$(motcua local env)\" (the services must read the same clock)")
    # the stack's own reference data (imported into MongoDB, else the files), so that intake
    # accepts the agencies and procedures the demo posts; a dry run posts nothing, so without a
    # stack it shows the events of the files
    try:
        db = cli_db(settings)
    except CliError:
        if not args.dry_run:
            raise
        print("motcua demo: MongoDB not reachable: the dry run uses CATALOG_FILE and DIRECTORY_FILE",
              file=sys.stderr)
        db = None
    if db is None:
        from shared.domain.catalog import load_catalog
        from shared.domain.directory import load_directory
        catalog, directory = load_catalog(settings.catalog_file), load_directory(settings.directory_file)
    else:
        catalog, directory = reference_catalog(settings, db), reference_directory(settings, db)
    if args.month:
        return _demo_month(args, settings, catalog, directory)
    rng = random.Random(args.seed)
    events = demo_events(catalog, directory, clock_from_env().now(), rng, args.count)
    if args.dry_run:
        for e in events:
            print(json.dumps(e, ensure_ascii=False))
        return 0
    url = (args.intake_url or env("INTAKE_URL")).rstrip("/")
    key = args.key or _demo_key(db, directory)
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


def _demo_month(args, settings, catalog, directory) -> int:
    import json

    from shared.cli import cli_db
    from shared.platform.clock import FileClock
    from shared.platform.config import env
    from shared.dev.demo_month import month_script, play

    if not 5 <= args.days <= 60:
        raise CliError("--days must be between 5 and 60")
    if args.step_seconds < 0 or args.digest_seconds < 0:
        raise CliError("--step-seconds and --digest-seconds must not be negative")
    path = env("MOTCUA_CLOCK_FILE")
    if not path:
        raise CliError("--month needs the rehearsal clock: motcua local up --clock FILE, then "
                       "eval \"$(motcua local env)\" (the services must read the same clock)")
    clock = FileClock(path)
    try:
        start = clock.now()
    except (OSError, ValueError) as exc:
        raise CliError(f"MOTCUA_CLOCK_FILE={path}: cannot read the clock ({exc})") from None
    steps = month_script(catalog, directory, start, days=args.days, seed=args.seed or 0,
                         digest_wait=args.digest_seconds, step_wait=args.step_seconds)
    if args.dry_run:
        for s in steps:
            print(json.dumps({"at": s.at.isoformat(), "wait": s.wait, "acks": s.acks,
                              "events": s.events}, ensure_ascii=False))
        return 0
    url = (args.intake_url or env("INTAKE_URL")).rstrip("/")
    sla_url, notify_url = env("SLA_URL").rstrip("/"), env("NOTIFY_URL").rstrip("/")
    if not (url and sla_url and notify_url):
        raise CliError("--month needs INTAKE_URL, SLA_URL and NOTIFY_URL (eval \"$(motcua local env)\")")
    key = args.key or _demo_key(cli_db(settings), directory)
    mail_dir = env("MAIL_DIR")
    before = _eml_count(mail_dir)
    total = sum(s.wait for s in steps)
    print(f"playing {args.days} days from {start.isoformat()} in about {total / 60:.0f} min "
          f"({len(steps)} steps); alerts in {mail_dir or 'MAIL_DIR'}")
    import requests
    with requests.Session() as http:
        http.headers["Authorization"] = f"Bearer {key}"

        def post(e):
            if _post_all(url, key, [e], http):
                raise CliError(f"intake refused {e['type']} of {e['dossier_code']} (see above)")

        def acknowledge(code):
            r = http.get(f"{sla_url}/v1/dossiers/{code}/findings", timeout=15)
            ids = [f["finding_id"] for f in (r.json().get("findings", []) if r.ok else [])
                   if f["rule"] == "OVERDUE" and f["state"] != "resolved"]
            for fid in ids:
                http.post(f"{notify_url}/v1/findings/{fid}/ack", json={"note": "Đã chỉ đạo xử lý (demo)"},
                          timeout=15)
            print(f"  acknowledged the OVERDUE alert of {code}" if ids else
                  f"  {code}: no open OVERDUE finding to acknowledge yet")

        def say(line):
            print(f"{line}: {_eml_count(mail_dir) - before} e-mail(s) so far" if mail_dir else line, flush=True)

        try:
            done = play(steps, clock, post=post, acknowledge=acknowledge, say=say)
        except requests.RequestException as exc:
            raise CliError(f"the stack did not answer ({type(exc).__name__}); is it running? "
                           "(motcua local status)") from None
    print(f"done: {done['events']} events, {done['acks']} acknowledgement(s), "
          f"{_eml_count(mail_dir) - before} new e-mail(s) in {mail_dir}")
    return 0


def _demo_key(db, directory) -> str:
    from pymongo.errors import PyMongoError

    from shared.platform.auth import KeyStore

    roots = [a.code for a in _agencies(directory) if not a.parent]
    if not roots:
        raise CliError("the directory has no root agency to bind the demo key to")
    try:
        _key_id, secret = KeyStore(db).create(roots[0], "admin", "motcua demo")
    except PyMongoError as exc:
        raise CliError(f"cannot create a demo API key in MongoDB at MONGO_URI ({type(exc).__name__}); "
                       "is the stack running? (motcua local up)") from None
    return secret


def _post_all(url: str, key: str, events: list[dict], session=None) -> int:
    import contextlib

    import requests

    failed = 0
    with (contextlib.nullcontext(session) if session is not None else requests.Session()) as http:
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
