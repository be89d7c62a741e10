"""The `monitoring` profile: Prometheus scrapes every service's /metrics, and when the sla worker
is stopped the service-down alert goes through Alertmanager to Mailpit."""
from __future__ import annotations

import time

from helpers.compose import figure

JOBS = {"intake", "sla-api", "notify-api", "sla-worker", "notify-worker", "dashboard"}


def targets_up(stack) -> dict[str, int]:
    data = stack.http.get(f"{stack.url('prometheus')}/api/v1/query", params={"query": "up"}, timeout=10).json()
    out: dict[str, int] = {}
    for r in data["data"]["result"]:
        job = r["metric"]["job"]
        out[job] = out.get(job, 0) + int(float(r["value"][1]))
    return out


def test_a_stopped_worker_raises_an_alert_that_reaches_mailpit(stack):
    t0 = time.monotonic()
    stack.up("--scale", "sla-worker=1", "--scale", "notify-worker=1")
    deadline = time.monotonic() + 120
    up = {}
    while time.monotonic() < deadline:
        up = targets_up(stack)
        if all(up.get(job, 0) >= 1 for job in JOBS):
            break
        time.sleep(1)
    assert all(up.get(job, 0) >= 1 for job in JOBS), f"targets up: {up}"
    rules = stack.http.get(f"{stack.url('prometheus')}/api/v1/rules", timeout=10).json()
    loaded = {r["name"] for g in rules["data"]["groups"] for r in g["rules"]}
    assert {"ServiceDown", "ConsumerLagGrowing", "DeadLetters", "NotificationsFailed",
            "DetectionLagHigh"} <= loaded
    figure(f"monitoring: every service scraped by Prometheus ({time.monotonic() - t0:.0f} s after scaling to one worker each)")

    before = {m["ID"] for m in stack.mail('subject:"ServiceDown"')}
    t1 = time.monotonic()
    stack.dc("stop", "sla-worker", profiles=("monitoring",))
    try:
        alerts = stack.wait_mail("ServiceDown", timeout=240, also=lambda m: m["ID"] not in before
                                 and m["Subject"].startswith("[FIRING") and "sla-worker" in m["Subject"])
        assert [a["Address"] for a in alerts[0]["To"]] == ["ops@motcua.local"]
        figure(f"monitoring: sla-worker stopped -> '{alerts[0]['Subject'][:90]}' in Mailpit after "
               f"{time.monotonic() - t1:.0f} s")
    finally:
        # started again for what follows; no wait for its healthcheck: nothing after this needs it
        stack.dc("start", "sla-worker", profiles=("monitoring",))
