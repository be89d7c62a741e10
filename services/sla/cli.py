"""`motcua rebuild` and `motcua dlq show|redrive` (DESIGN.md §12; dead letters: shared/contracts/deadletter.py)."""
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

    dlq = subparsers.add_parser(
        "dlq", help="dead letters of dossier.events (sla) or sla.findings (notify): show, redrive",
        description="Dead letters: messages a worker could not use, kept with their original bytes. "
                    "show and redrive offer the pending ones: not yet redriven, not failed again "
                    "as a later entry, not a second copy of the same message (docs/dead-letters.md).")
    dsub = dlq.add_subparsers(dest="dlq_command", metavar="ACTION")
    show = dsub.add_parser("show", help="print pending dead letters (personal data redacted), oldest first")
    _dlq_options(show)
    show.add_argument("--limit", type=_positive, default=20, help="how many, newest N (default 20)")
    show.add_argument("--json", action="store_true", help="one JSON object per line")
    show.add_argument("--all", action="store_true",
                      help="every entry with its status (pending, redriven, failed_again, duplicate)")
    show.set_defaults(func=_dlq_show)
    red = dsub.add_parser("redrive", help="publish pending dead letters back to their original topic",
                          description="Publish the selected pending dead letters (all of them without "
                                      "--reason/--key/--offsets) back to their topic, oldest first, "
                                      "and record each as redriven in the DLQ.")
    _dlq_options(red)
    red.add_argument("--dry-run", action="store_true", help="list what would be redriven, publish nothing")
    red.set_defaults(func=_dlq_redrive)
    dlq.set_defaults(func=lambda args: (dlq.print_help(), 2)[1])


def _dlq_options(p) -> None:
    p.add_argument("--service", choices=("sla", "notify"), default="sla",
                   help="whose dead letters: sla (dossier.events.dlq, the default) or notify "
                        "(sla.findings.dlq)")
    p.add_argument("--reason", action="append", default=[], metavar="REASON",
                   help="only entries with this reason, e.g. invalid_event (repeatable)")
    p.add_argument("--key", action="append", default=[], metavar="KEY",
                   help="only entries of this message key, the dossier code (repeatable)")
    p.add_argument("--offsets", action="append", default=[], type=_offsets, metavar="RANGE",
                   help="only entries at these DLQ offsets: N, A-B or A- (inclusive), optionally "
                        "P:A-B for partition P (repeatable)")


def _offsets(text: str):
    import argparse

    from shared.contracts.deadletter import parse_offsets
    try:
        return parse_offsets(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


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
    from shared.platform.config import Settings
    return Settings.from_env()


def dlq_topic_of(settings, service: str) -> str:
    from shared.contracts.deadletter import dlq_topic
    return dlq_topic(settings.topic_events if service == "sla" else settings.topic_findings)


def read_dlq(settings, topic: str, timeout_ms: int = 3000) -> list:
    """Every record of a DLQ topic as (partition, offset, timestamp, decoded value), without a
    consumer group (the whole topic: redrive markers may follow their entries anywhere)."""
    from kafka import KafkaConsumer, TopicPartition
    from kafka.errors import KafkaError

    from shared.platform.messaging import decode
    try:
        consumer = KafkaConsumer(bootstrap_servers=settings.kafka_bootstrap_servers.split(","),
                                 group_id=None, enable_auto_commit=False, client_id="motcua-dlq")
    except KafkaError as exc:
        raise CliError(f"cannot reach Kafka at {settings.kafka_bootstrap_servers}: {exc}") from None
    try:
        parts = consumer.partitions_for_topic(topic)
        if not parts:
            return []
        tps = [TopicPartition(topic, p) for p in sorted(parts)]
        consumer.assign(tps)
        ends = consumer.end_offsets(tps)
        consumer.seek_to_beginning(*tps)
        out = []
        pending = {tp for tp in tps if consumer.position(tp) < ends[tp]}
        while pending:
            recs = consumer.poll(timeout_ms=timeout_ms)
            if not recs:
                break
            for tp, rs in recs.items():
                for r in rs:
                    if r.offset < ends[tp]:
                        try:
                            value = decode(r.value)
                        except ValueError:
                            value = None      # not ours: entries() ignores it
                        out.append((r.partition, r.offset, r.timestamp, value))
            pending = {tp for tp in pending if consumer.position(tp) < ends[tp]}
        return out
    finally:
        consumer.close()


def _selection(args, statuses=None):
    from shared.contracts.deadletter import PENDING, Selection
    return Selection(tuple(args.reason), tuple(args.key), tuple(args.offsets),
                     (PENDING,) if statuses is None else statuses)


def _describe(e) -> str:
    from shared.contracts.events import redact_text
    o = e.value.get("origin") or {}
    text = (f"#{e.partition}:{e.offset} {e.value.get('failed_at')} {e.reason} from "
            f"{o.get('topic')}[{o.get('partition')}]@{o.get('offset')} key={redact_text(str(o.get('key')))}")
    if e.redriven_from is not None:
        text += " (failed again: redrive of #%s:%s)" % e.redriven_from
    return text


def _dlq_show(args) -> int:
    from shared.contracts.deadletter import entries, printable

    settings = _settings()
    topic = dlq_topic_of(settings, args.service)
    rows = [e for e in entries(read_dlq(settings, topic)) if _selection(args, () if args.all else None)(e)]
    if not rows:
        print(f"no dead letters in {topic}" + (" matching the selection" if _filtered(args) else ""))
        return 0
    for e in rows[-args.limit:]:
        shown = printable(e.value)
        if args.json:
            print(json.dumps({"dlq_partition": e.partition, "dlq_offset": e.offset, "status": e.status,
                              **shown}, ensure_ascii=False, default=str))
        else:
            print(_describe(e) + ("" if e.status == "pending" else f" [{e.status}]"))
            print(f"    error: {shown.get('error')}")
            print(f"    value: {json.dumps(shown['value'], ensure_ascii=False)[:500]}")
    return 0


def _filtered(args) -> bool:
    return bool(args.reason or args.key or args.offsets)


def _dlq_redrive(args) -> int:
    from kafka import KafkaProducer
    from kafka.errors import KafkaError

    from shared.platform.clock import clock_from_env
    from shared.contracts.deadletter import REDRIVEN_FROM, entries, original_bytes, redrive_marker
    from shared.platform.messaging import encode

    settings = _settings()
    topic = dlq_topic_of(settings, args.service)
    chosen = [e for e in entries(read_dlq(settings, topic)) if _selection(args)(e)]
    if not chosen:
        print(f"no dead letters in {topic}" + (" matching the selection" if _filtered(args) else ""))
        return 0
    producer = None
    if not args.dry_run:
        try:
            # a raw producer: the original bytes go back as they were (not re-encoded)
            producer = KafkaProducer(bootstrap_servers=settings.kafka_bootstrap_servers.split(","),
                                     acks="all", enable_idempotence=True, client_id="motcua-dlq-redrive")
        except KafkaError as exc:
            raise CliError(f"cannot reach Kafka at {settings.kafka_bootstrap_servers}: {exc}") from None
    clock = clock_from_env()
    n = lost = 0
    try:
        for e in chosen:
            raw = original_bytes(e.value)
            if raw is None:
                print(f"cannot redrive {_describe(e)}: its original bytes were not kept")
                lost += 1
                continue
            if args.dry_run:
                print(f"would redrive {_describe(e)}")
                n += 1
                continue
            key = (e.key or "").encode("utf-8")
            # the re-published copy names its entry: if it fails again, its dead letter says so
            md = producer.send(e.value["origin"]["topic"], key=key, value=raw,
                               headers=[(REDRIVEN_FROM, b"%d:%d" % e.coords)]).get(timeout=10)
            value, headers = redrive_marker(e, md, clock.now())
            producer.send(topic, key=key, value=encode(value),
                          headers=[(k, v.encode()) for k, v in headers.items()]).get(timeout=10)
            print(f"redrove {_describe(e)} -> {md.topic}[{md.partition}]@{md.offset}")
            n += 1
    except KafkaError as exc:
        raise CliError(f"redrive stopped after {n} message(s): {type(exc).__name__}: {exc} "
                       "(run it again: what was redriven is recorded)") from None
    finally:
        if producer is not None:
            producer.close()
    print(f"{'would redrive' if args.dry_run else 'redrove'} {n} message(s)"
          + (f"; {lost} could not be redriven" if lost else ""))
    return 1 if lost else 0


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
