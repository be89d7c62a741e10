"""Scale out: `--scale sla-worker=3 --scale notify-worker=2` with 10,000 events across many
dossiers. Every expected finding (the engine's own, replayed in memory) is stored once, no alert
is sent twice, and the apply throughput of 1 and of 3 sla workers is printed (not asserted).

MOTCUA_COMPOSE_EVENTS sets the number of events (default 10,000; docs/compose.md has the figures).
"""
from __future__ import annotations

import os
import time
import uuid
from collections import Counter

import load
from helpers.compose import figure

N_EVENTS = int(os.environ.get("MOTCUA_COMPOSE_EVENTS", "10000"))
PARTITIONS = int(os.environ.get("TOPIC_PARTITIONS", "6"))

def settle(stack, workers: int, timeout: float = 300) -> None:
    """Until the sla group is stable with `workers` members owning every partition, for 2 s."""
    deadline = time.monotonic() + timeout
    since = None
    while True:
        g = stack.group_state("sla", "dossier.events")
        ok = g is not None and g["state"] == "Stable" and (g["assigned"], g["members"]) == (PARTITIONS, workers)
        now = time.monotonic()
        since = (since or now) if ok else None
        if since is not None and now - since >= 2:
            return
        assert now < deadline, f"the sla group did not settle on {workers} worker(s) within {timeout:.0f}s: {g}"
        time.sleep(0.5)


def apply_with(stack, workers: int, events: list[dict], recorded: dict,
               timeout: float = float(os.environ.get("MOTCUA_COMPOSE_APPLY_TIMEOUT", "1200"))) -> tuple[float, float, float]:
    """Start `workers` sla workers, wait until the group has settled (every partition owned, by
    `workers` members), then post `events` and wait until the group's committed lag is 0 (offsets
    are committed after the writes). Returns (events/s from the first post to lag 0, those
    seconds, seconds from `up` until the group settled)."""
    t0 = time.monotonic()
    # no --wait: a worker is ready when it owns partitions, which `settle` sees before the first
    # healthcheck would
    stack.dc("up", "-d", "--scale", f"sla-worker={workers}", "--scale", "notify-worker=2")
    settle(stack, workers)
    settle_s = time.monotonic() - t0
    t1 = time.monotonic()
    recorded.update(stack.post_all(events))
    deadline = time.monotonic() + timeout
    g, shown = None, time.monotonic()
    while time.monotonic() < deadline:
        g = stack.group_state("sla", "dossier.events")
        if g is not None and g["lag"] == 0:
            apply_s = time.monotonic() - t1
            return len(events) / apply_s, apply_s, settle_s
        if g is not None and time.monotonic() - shown >= 60:   # a long run shows its pace (-s)
            shown = time.monotonic()
            print(f"scale-out: {workers} sla worker(s): lag {g['lag']} of {len(events)} events "
                  f"{shown - t1:.0f} s after the first post", flush=True)
        time.sleep(0.5)
    raise AssertionError(f"{workers} sla worker(s) did not apply {len(events)} events within {timeout:.0f}s ({g})")


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
    probe, deadline = {}, time.monotonic() + 30
    while True:     # drained means applied; a last read a moment later costs nothing
        probe = stack.store(tag)
        stored = probe["findings"]
        missing = want - set(stored)
        events_in = {eid for ids in probe["events"].values() for eid in ids}
        lost = {e["event_id"] for e in events} - events_in
        if (not missing and not lost) or time.monotonic() > deadline:
            break
        time.sleep(2)
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
    probe = stack.store(tag)
    sent = {n: [d for d in ds if d[0] == "sent"] for n, ds in probe["deliveries"].items()}
    email_sent = sum(1 for n, ds in sent.items() if ds and probe["notifications"].get(n) == "email")
    mail = stack.wait_mail_count(tag, email_sent)
    by_notification = Counter(load.notification_of(m["MessageID"]) for m in mail)
    dup_mail = {n: c for n, c in by_notification.items() if c > 1}
    dup_sent = {n: ds for n, ds in sent.items() if len(ds) > 1}
    figure(f"scale-out: alerts in Mailpit {len(mail)} (e-mail notifications sent per the store "
           f"{email_sent}), sent twice: {len(dup_mail)} in Mailpit, {len(dup_sent)} in the delivery log; "
           f"applied, stored and every due alert sent {alerts_s:.0f} s after the last post")
    assert mail, "no alert reached Mailpit"
    assert not dup_mail, f"alerts sent twice: {list(dup_mail.items())[:5]}"
    assert not dup_sent
    assert len(mail) == email_sent
