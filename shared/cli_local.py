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
MOTCUA_INTAKE_PORT (8001), MOTCUA_SLA_PORT (8002), MOTCUA_NOTIFY_PORT (8003).
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
