"""Scale out: `--scale sla-worker=3 --scale notify-worker=2` with 10,000 events across many
dossiers. Every expected finding (the engine's own, replayed in memory) is stored once, no alert
is sent twice, and the apply throughput of 1 and of 3 sla workers is printed (not asserted).

MOTCUA_COMPOSE_EVENTS sets the number of events (default 10,000)."""
from __future__ import annotations

import os
import subprocess
import time
import uuid
from collections import Counter

import load
from conftest import STORE_PROBE, figure

N_EVENTS = int(os.environ.get("MOTCUA_COMPOSE_EVENTS", "2000"))

APPLIED = r'''
import json, urllib.request
try:
    text = urllib.request.urlopen("http://127.0.0.1:9101/metrics", timeout=5).read().decode()
    n = sum(float(l.split()[-1]) for l in text.splitlines() if l.startswith("sla_events_applied_total"))
except Exception:
    n = -1
print(json.dumps(n))
'''


def applied_total(stack) -> float:
    """sla_events_applied_total summed over the running sla workers (each asked inside its container)."""
    total = 0.0
    for cid in stack.container_ids("sla-worker"):
        res = subprocess.run(["docker", "exec", "-i", cid, "python", "-"], input=APPLIED,
                             capture_output=True, text=True, timeout=30)
        try:
            total += max(0.0, float(res.stdout.strip().splitlines()[-1]))
        except (ValueError, IndexError):
            pass
    return total


def apply_with(stack, workers: int, n_events: int, timeout: float = 900) -> tuple[float, float]:
    """Start `workers` sla workers on a backlog of `n_events` and measure until it is applied.
    Returns (steady events/s from the first to the last applied event, seconds from `up`)."""
    t0 = time.monotonic()
    stack.up("--scale", f"sla-worker={workers}", "--scale", "notify-worker=2", wait=300)
    first = last = None
    seen = 0.0
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        n = applied_total(stack)
        now = time.monotonic()
        if n > 0 and first is None:
            first = (now, n)
        if n > seen:
            seen, last = n, now
        if n >= n_events:
            break
        time.sleep(0.5)
    assert seen >= n_events, f"{workers} sla worker(s) applied {seen:.0f} of {n_events} events in {timeout:.0f}s"
    rate = (seen - first[1]) / (last - first[0]) if last and first and last > first[0] else float("nan")
    return rate, last - t0


def test_scale_out_three_sla_and_two_notify_workers(stack):
    tag = "s" + uuid.uuid4().hex[:6]
    events = load.make_events(N_EVENTS, tag)
    codes = list(dict.fromkeys(e["dossier_code"] for e in events))
    half = set(codes[: len(codes) // 2])
    first_half = [e for e in events if e["dossier_code"] in half]
    second_half = [e for e in events if e["dossier_code"] not in half]
    figure(f"scale-out: {len(events)} events, {len(codes)} dossiers")

    # a backlog for one sla worker, then one for three (fresh containers: counters start at 0)
    stack.dc("up", "-d", "--scale", "sla-worker=0", "--scale", "notify-worker=2", profiles=())
    t = time.monotonic()
    recorded = stack.post_all(first_half)
    post_s = time.monotonic() - t
    rate1, wall1 = apply_with(stack, 1, len(first_half))
    stack.dc("up", "-d", "--scale", "sla-worker=0", "--scale", "notify-worker=2", profiles=())
    t = time.monotonic()
    recorded.update(stack.post_all(second_half))
    post_s += time.monotonic() - t
    rate3, wall3 = apply_with(stack, 3, len(second_half))
    figure(f"scale-out: intake accepted {len(events)} events in {post_s:.1f} s "
           f"({len(events) / post_s:.0f} ev/s, batches of 500)")
    figure(f"scale-out: apply throughput 1 sla worker {rate1:.0f} ev/s ({len(first_half)} events, "
           f"{wall1:.1f} s from up); 3 sla workers {rate3:.0f} ev/s ({len(second_half)} events, "
           f"{wall3:.1f} s from up); ratio {rate3 / rate1:.2f}")

    # every expected finding stored once; then every alert sent once
    expected = load.expected_findings(events, recorded)
    want = {f for ids in expected.values() for f in ids}
    t = time.monotonic()
    deadline = t + 600
    while True:
        probe = stack.exec_python("sla-api", STORE_PROBE, tag)
        stored = probe["findings"]
        missing = want - set(stored)
        events_in = {eid for ids in probe["events"].values() for eid in ids}
        lost = {e["event_id"] for e in events} - events_in
        if not missing and not lost or time.monotonic() > deadline:
            break
        time.sleep(3)
    twice = {f: s for f, s in stored.items() if len(s) != 1}
    extra = {f: s for f, s in stored.items() if f not in want}
    figure(f"scale-out: findings expected {len(want)}, stored {len(stored)}, missing {len(missing)}, "
           f"stored more than once {len(twice)}, others {len(extra)} "
           f"(states {dict(Counter(s[0] for s in extra.values()))}: opened by an earlier event, closed by a later)")
    assert not lost, f"{len(lost)} accepted events never applied, e.g. {sorted(lost)[:3]}"
    assert not missing, f"{len(missing)} expected findings not stored, e.g. {sorted(missing)[:5]}"
    assert not twice
    assert all(s == ["resolved"] for s in extra.values()), f"unexpected open findings: {list(extra.items())[:5]}"

    sent_before, stable_since = -1, time.monotonic()
    deadline = time.monotonic() + 900
    while time.monotonic() < deadline:
        mail = [m for m in stack.mail() if tag in m["Subject"]]
        if len(mail) != sent_before:
            sent_before, stable_since = len(mail), time.monotonic()
        elif time.monotonic() - stable_since > 20:
            break
        time.sleep(3)
    alerts_s = stable_since - t
    probe = stack.exec_python("sla-api", STORE_PROBE, tag)
    by_notification = Counter(load.notification_of(m["MessageID"]) for m in mail)
    dup_mail = {n: c for n, c in by_notification.items() if c > 1}
    sent = {n: [d for d in ds if d[0] == "sent"] for n, ds in probe["deliveries"].items()}
    dup_sent = {n: ds for n, ds in sent.items() if len(ds) > 1}
    email_sent = sum(1 for n, ds in sent.items() if ds and probe["notifications"].get(n) == "email")
    figure(f"scale-out: alerts in Mailpit {len(mail)} (e-mail notifications sent per the store "
           f"{email_sent}), sent twice: {len(dup_mail)} in Mailpit, {len(dup_sent)} in the delivery log; "
           f"findings to last alert {alerts_s:.0f} s")
    assert mail, "no alert reached Mailpit"
    assert not dup_mail, f"alerts sent twice: {list(dup_mail.items())[:5]}"
    assert not dup_sent
    assert len(mail) == email_sent
