"""`motcua rebuild` and `motcua dlq show|redrive` (DESIGN.md §12)."""
from __future__ import annotations

import json

from shared.cli import CliError


def register(subparsers) -> None:
    rb = subparsers.add_parser(
        "rebuild", help="replay dossier.events into fresh sla collections and switch over",
        description="Replay the event topic from the beginning into new collections "
                    "(dossiers_<ts>, findings_<ts>) and point the live pointer at them. "
                    "Stop the sla workers first.")
    rb.add_argument("--no-switch", action="store_true", help="build the collections but keep the live ones")
    rb.add_argument("--force", action="store_true", help="run even if sla workers are in the consumer group")
    rb.add_argument("--group", default="sla", help="the workers' consumer group (default: sla)")
    rb.set_defaults(func=_rebuild)

    dlq = subparsers.add_parser("dlq", help="dead letters of dossier.events: show, redrive")
    dsub = dlq.add_subparsers(dest="dlq_command", metavar="ACTION")
    show = dsub.add_parser("show", help="print dead letters (personal data redacted), oldest first")
    show.add_argument("--limit", type=_positive, default=20, help="how many, newest N (default 20)")
    show.add_argument("--json", action="store_true", help="one JSON object per line")
    show.set_defaults(func=_dlq_show)
    red = dsub.add_parser("redrive", help="publish dead letters back to their original topic")
    red.add_argument("--dry-run", action="store_true", help="list what would be redriven, publish nothing")
    red.set_defaults(func=_dlq_redrive)
    dlq.set_defaults(func=lambda args: (dlq.print_help(), 2)[1])


def _positive(text: str) -> int:
    import argparse
    try:
        n = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
    if n < 1:
        raise argparse.ArgumentTypeError("must be at least 1")
    return n


def _settings():
    from shared.config import Settings
    return Settings.from_env()


def read_dlq(settings, limit: int | None = None, timeout_ms: int = 3000) -> list:
    """Every record of the DLQ topic (the last `limit`), without a consumer group."""
    from kafka import KafkaConsumer, TopicPartition
    from kafka.errors import KafkaError

    from shared.messaging import decode
    try:
        consumer = KafkaConsumer(bootstrap_servers=settings.kafka_bootstrap_servers.split(","),
                                 group_id=None, enable_auto_commit=False, client_id="motcua-dlq")
    except KafkaError as exc:
        raise CliError(f"cannot reach Kafka at {settings.kafka_bootstrap_servers}: {exc}") from None
    try:
        parts = consumer.partitions_for_topic(settings.topic_events_dlq)
        if not parts:
            return []
        tps = [TopicPartition(settings.topic_events_dlq, p) for p in sorted(parts)]
        consumer.assign(tps)
        ends = consumer.end_offsets(tps)
        begins = consumer.beginning_offsets(tps)
        for tp in tps:
            start = begins[tp] if limit is None else max(begins[tp], ends[tp] - limit)
            consumer.seek(tp, start)
        out = []
        pending = {tp for tp in tps if consumer.position(tp) < ends[tp]}
        while pending:
            recs = consumer.poll(timeout_ms=timeout_ms)
            if not recs:
                break
            for tp, rs in recs.items():
                for r in rs:
                    if r.offset < ends[tp]:
                        out.append((r, decode(r.value)))
            pending = {tp for tp in pending if consumer.position(tp) < ends[tp]}
        out.sort(key=lambda x: (x[0].timestamp, x[0].partition, x[0].offset))
        return out[-limit:] if limit else out
    finally:
        consumer.close()


def _dlq_show(args) -> int:
    from .dlq import printable

    rows = read_dlq(_settings(), args.limit)
    if not rows:
        print("no dead letters")
        return 0
    for rec, value in rows:
        shown = printable(value)
        if args.json:
            print(json.dumps({"dlq_offset": rec.offset, **shown}, ensure_ascii=False, default=str))
        else:
            o = shown["origin"]
            print(f"#{rec.partition}:{rec.offset} {shown.get('failed_at')} {shown['reason']} "
                  f"from {o['topic']}[{o['partition']}]@{o['offset']} key={o['key']}")
            print(f"    error: {shown['error']}")
            print(f"    value: {json.dumps(shown['value'], ensure_ascii=False)[:500]}")
    return 0


def _dlq_redrive(args) -> int:
    import base64

    from kafka import KafkaProducer

    settings = _settings()
    rows = read_dlq(settings)
    if not rows:
        print("no dead letters")
        return 0
    # a raw producer: the original bytes go back as they were (not re-encoded)
    publisher = None if args.dry_run else KafkaProducer(
        bootstrap_servers=settings.kafka_bootstrap_servers.split(","), acks="all",
        enable_idempotence=True, client_id="motcua-dlq-redrive")
    n = 0
    try:
        for rec, value in rows:
            origin = value["origin"]
            raw = (value["value"].encode("utf-8") if value.get("value_encoding") == "utf-8"
                   else base64.b64decode(value["value"]))
            if args.dry_run:
                print(f"would redrive {origin['topic']}[{origin['partition']}]@{origin['offset']} "
                      f"key={origin['key']} ({value['reason']})")
            else:
                # the original bytes, as they were; a message that still fails returns to the DLQ
                publisher.send(origin["topic"], key=(origin["key"] or "").encode("utf-8"),
                                         value=raw, headers=[("dlq.redriven_from",
                                                              f"{rec.partition}:{rec.offset}".encode())]
                                         ).get(timeout=10)
            n += 1
    finally:
        if publisher is not None:
            publisher.close()
    print(f"{'would redrive' if args.dry_run else 'redrove'} {n} message(s)")
    return 0


def _rebuild(args) -> int:
    from .bootstrap import bootstrap
    from .rebuild import group_members, rebuild

    sla = bootstrap(_settings(), appname="motcua-cli")
    settings = sla.settings
    if not args.force:
        try:
            members = group_members(settings, args.group)
        except Exception as exc:   # noqa: BLE001 - reported as a CLI error
            raise CliError(f"cannot reach Kafka at {settings.kafka_bootstrap_servers}: {exc}") from None
        if members:
            raise CliError(f"{members} consumer(s) in group {args.group!r}: stop the sla workers "
                           "first (or --force)")
    res = rebuild(settings, sla.db(), sla.clock, sla.ctx(), switch=not args.no_switch)
    print(f"replayed {res.messages} message(s) ({res.rejected} rejected) into "
          f"{res.names.dossiers} ({res.dossiers} dossiers) and {res.names.findings} ({res.findings} findings)")
    if res.switched:
        print(f"live collections switched from {res.previous.dossiers}/{res.previous.findings}")
    return 0
