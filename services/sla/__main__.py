"""`python -m services.sla worker [--metrics-port N]` — the sla consumer of dossier.events."""
from __future__ import annotations

import argparse
import sys


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m services.sla",
                                     description="The sla service: legal deadlines and findings.")
    sub = parser.add_subparsers(dest="cmd", metavar="COMMAND")
    w = sub.add_parser("worker", help="consume dossier.events (consumer group 'sla') until SIGTERM")
    w.add_argument("--metrics-port", type=int, default=0,
                   help="serve the worker's Prometheus metrics on 127.0.0.1:PORT (0: off)")
    w.add_argument("--group", default="sla", help="consumer group (default: sla)")
    args = parser.parse_args(argv)
    if args.cmd != "worker":
        parser.print_help()
        return 2
    from .worker import run_worker
    return run_worker(metrics_port=args.metrics_port or None, group_id=args.group)


if __name__ == "__main__":
    sys.exit(main())
