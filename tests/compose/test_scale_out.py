"""Scale out: `--scale sla-worker=3 --scale notify-worker=2` with 10,000 events across many
dossiers. Every expected finding (the engine's own, replayed in memory) is stored once, no alert
is sent twice, and the apply throughput of 1 and of 3 sla workers is printed (not asserted).

MOTCUA_COMPOSE_EVENTS sets the number of events (default 10,000)."""
from __future__ import annotations

import os
import time
import uuid
from collections import Counter

import load
from helpers.compose import STORE_PROBE, figure

N_EVENTS = int(os.environ.get("MOTCUA_COMPOSE_EVENTS", "1000"))
PARTITIONS = int(os.environ.get("TOPIC_PARTITIONS", "6"))

def apply_with(stack, workers: int, events: list[dict], recorded: dict,
               timeout: float = 1200) -> tuple[float, float, float]:
    """Start `workers` sla workers, wait until the group has settled (every partition owned, by
    `workers` members), then post `events` and wait until the group's committed lag is 0 (offsets
    are committed after the writes). Returns (events/s from the first post to lag 0, those
    seconds, seconds from `up` until the group settled)."""
    t0 = time.monotonic()
    stack.up("--scale", f"sla-worker={workers}", "--scale", "notify-worker=2", wait=300)
    deadline = time.monotonic() + 300
    settled_for = 0
    while settled_for < 3:
        assigned, _lag, members = stack.group_state("sla", "dossier.events")
        settled_for = settled_for + 1 if (assigned, members) == (PARTITIONS, workers) else 0
        assert time.monotonic() < deadline, f"the sla group did not settle: {assigned} partitions, {members} members"
        time.sleep(1)
    settle_s = time.monotonic() - t0
    t1 = time.monotonic()
    recorded.update(stack.post_all(events))
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        time.sleep(0.5)
        assigned, lag, _members = stack.group_state("sla", "dossier.events")
        if lag == 0:
            apply_s = time.monotonic() - t1
            return len(events) / apply_s, apply_s, settle_s
    raise AssertionError(f"{workers} sla worker(s) did not apply {len(events)} events within {timeout:.0f}s (lag {lag})")


def test_scale_out_three_sla_and_two_notify_workers(stack):
    tag = "s" + uuid.uuid4().hex[:6]
    events = load.make_events(N_EVENTS, tag)
    codes = list(dict.fromkeys(e["dossier_code"] for e in events))
    half = set(codes[: len(codes) // 2])
    first_half = [e for e in events if e["dossier_code"] in half]
    second_half = [e for e in events if e["dossier_code"] not in half]
    figure(f"scale-out: {len(events)} events, {len(codes)} dossiers")

    # the same load for one sla worker, then for three, each once its group has settled
    recorded: dict[str, str] = {}
    rate1, apply1, settle1 = apply_with(stack, 1, first_half, recorded)
    rate3, apply3, settle3 = apply_with(stack, 3, second_half, recorded)
    figure(f"scale-out: apply throughput (first post to committed lag 0, posting included) 1 sla worker "
           f"{rate1:.1f} ev/s ({len(first_half)} events in {apply1:.1f} s), 3 sla workers {rate3:.1f} ev/s "
           f"({len(second_half)} events in {apply3:.1f} s); ratio {rate3 / rate1:.2f}; group settled "
           f"{settle1:.0f} s / {settle3:.0f} s after up")

    # every expected finding stored once; then every alert sent once
    expected = load.expected_findings(events, recorded)
    want = {f for ids in expected.values() for f in ids}
    t = time.monotonic()
    stack.wait_drained()
    for _ in range(3):
        probe = stack.exec_python("sla-api", STORE_PROBE, tag)
        stored = probe["findings"]
        missing = want - set(stored)
        events_in = {eid for ids in probe["events"].values() for eid in ids}
        lost = {e["event_id"] for e in events} - events_in
        if not missing and not lost:
            break
        time.sleep(10)
    twice = {f: s for f, s in stored.items() if len(s) != 1}
    extra = {f: s for f, s in stored.items() if f not in want}
    figure(f"scale-out: findings expected {len(want)}, stored {len(stored)}, missing {len(missing)}, "
           f"stored more than once {len(twice)}, others {len(extra)} "
           f"(states {dict(Counter(s[0] for s in extra.values()))}: opened by an earlier event, closed by a later)")
    assert not lost, f"{len(lost)} accepted events never applied, e.g. {sorted(lost)[:3]}"
    assert not missing, f"{len(missing)} expected findings not stored, e.g. {sorted(missing)[:5]}"
    assert not twice
    assert all(s == ["resolved"] for s in extra.values()), f"unexpected open findings: {list(extra.items())[:5]}"

    stack.wait_sent()
    alerts_s = time.monotonic() - t
    mail = [m for m in stack.mail() if tag in m["Subject"]]
    probe = stack.exec_python("sla-api", STORE_PROBE, tag)
    by_notification = Counter(load.notification_of(m["MessageID"]) for m in mail)
    dup_mail = {n: c for n, c in by_notification.items() if c > 1}
    sent = {n: [d for d in ds if d[0] == "sent"] for n, ds in probe["deliveries"].items()}
    dup_sent = {n: ds for n, ds in sent.items() if len(ds) > 1}
    email_sent = sum(1 for n, ds in sent.items() if ds and probe["notifications"].get(n) == "email")
    figure(f"scale-out: alerts in Mailpit {len(mail)} (e-mail notifications sent per the store "
           f"{email_sent}), sent twice: {len(dup_mail)} in Mailpit, {len(dup_sent)} in the delivery log; "
           f"applied, stored and every due alert sent {alerts_s:.0f} s after the last post")
    assert mail, "no alert reached Mailpit"
    assert not dup_mail, f"alerts sent twice: {list(dup_mail.items())[:5]}"
    assert not dup_sent
    assert len(mail) == email_sent
