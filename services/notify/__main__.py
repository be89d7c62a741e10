"""`python -m services.notify worker [--metrics-port N]` — the notify consumer of sla.findings,
with the scheduler of deferred alerts, escalations, repeats and digests.
`python -m services.notify check-policy [FILE]` — validate a routing policy file."""
from __future__ import annotations

import argparse
import sys


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m services.notify",
                                     description="The notify service: alerts by e-mail, webhook and SMS.")
    sub = parser.add_subparsers(dest="cmd", metavar="COMMAND")
    w = sub.add_parser("worker", help="consume sla.findings (consumer group 'notify') until SIGTERM")
    w.add_argument("--metrics-port", type=int, default=0,
                   help="serve the worker's Prometheus metrics on 127.0.0.1:PORT (0: off)")
    c = sub.add_parser("check-policy", help="validate a routing policy file (default: NOTIFY_POLICY_FILE)")
    c.add_argument("file", nargs="?", default=None)
    args = parser.parse_args(argv)
    if args.cmd == "check-policy":
        from .policy import PolicyError, load_policy
        from shared.platform.config import env
        try:
            p = load_policy(args.file or env("NOTIFY_POLICY_FILE") or None)
        except PolicyError as exc:
            print(f"notify: error: {exc}", file=sys.stderr)
            return 2
        print(f"{p.source}: OK ({len(p.rules)} rule entries, {len(p.webhooks)} webhooks)")
        return 0
    if args.cmd != "worker":
        parser.print_help()
        return 2
    from .policy import PolicyError
    from .worker import run_worker
    try:
        return run_worker(metrics_port=args.metrics_port or None)
    except PolicyError as exc:
        print(f"notify: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
