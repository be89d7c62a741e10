"""Benchmark: findings on Kafka → e-mail accepted by a local SMTP server (aiosmtpd), through the
real notify worker on the real broker and MongoDB/FerretDB.

1. latency (publish → SMTP accepted) p50/p99 at a steady 100 findings/s;
2. throughput ceiling: a burst of findings published at once, drained as fast as the worker can;
3. baseline measured in the same run: the same e-mails sent by SmtpChannel alone (no Kafka, no
   store), i.e. what the SMTP hop costs by itself.

Run: `source .local/dev.env; pytest tests/perf/test_notify_perf.py -m perf -s`
"""
from __future__ import annotations

import statistics
import threading
import time
from datetime import datetime, timezone

import pytest

from shared.platform.clock import SystemClock
from shared.platform.config import Settings
from shared.domain.directory import default_directory
from shared.platform.messaging import KafkaPublisher
from services.notify.channels import Outgoing, SmtpChannel
from services.notify.policy import parse_policy

pytestmark = pytest.mark.perf

RATE = 100          # findings per second for the latency run
SECONDS = 5
BURST = 1000
POLICY = parse_policy({"defaults": {s: {"roles": ["head"], "channels": ["email"], "mode": "immediate",
                                        "any_hour": True, "repeat_every": None, "escalate_after": None}
                                    for s in ("info", "warning", "critical")}})
AGENCIES = ["000.00.10.H56", "000.00.11.H56", "000.00.12.H56"]


def finding(i: int, tag: str) -> dict:
    now = datetime.now(timezone.utc).isoformat()
    return dict(finding_id=f"{tag}-{i}", rule="OVERDUE", state="open", severity="critical",
                dossier_code=f"PERF-{tag}-{i}", procedure_code="1.001193", agency_code=AGENCIES[i % 3],
                responsible_role="agency_head", legal_basis="Điều 17 Nghị định 61/2018/NĐ-CP",
                title="Hồ sơ quá hạn", detected_at=now, due_at=now, overdue_working_hours=3.0,
                details={}, ruleset="nd61-107", revision=1)


def pct(values, p):
    values = sorted(values)
    return values[min(len(values) - 1, int(round(p / 100 * (len(values) - 1))))]


def test_notify_latency_and_throughput(kafka_bootstrap, mongo_db, topics, smtp_server):
    from services.notify.worker import build_worker

    received_at: dict[str, float] = {}
    orig_add = smtp_server._add

    def add(mail):   # stamp arrival time by dossier code in the subject
        subject = mail.subject
        code = subject.split("hồ sơ ")[1].split(" ")[0] if "hồ sơ " in subject else subject
        received_at[code] = time.perf_counter()
        orig_add(mail)
    smtp_server._add = add

    # --- baseline: SmtpChannel alone, same messages, sequential
    ch = SmtpChannel(smtp_server.host, smtp_server.port, "motcua@perf.local")
    n_base = 300
    t0 = time.perf_counter()
    for i in range(n_base):
        ch.send(Outgoing("email", "gd@stp.longan.example.org", f"Hồ sơ quá hạn: hồ sơ BASE-{i} x",
                         "nội dung " * 80, "<p>nội dung</p>" * 40))
    base_rate = n_base / (time.perf_counter() - t0)

    t = topics("findings", partitions=3)["findings"]
    settings = Settings.from_env(kafka_bootstrap_servers=kafka_bootstrap, topic_findings=t)
    env = {"SMTP_HOST": smtp_server.host, "SMTP_PORT": str(smtp_server.port), "NOTIFY_SECRET": "perf"}
    worker = build_worker(settings, SystemClock(), db=mongo_db, group_id=f"notify-{t}", environ=env,
                          policy=POLICY, directory=default_directory(), schedule_interval=3600,
                          poll_timeout=0.2,
                          consumer_config={"session_timeout_ms": 10000, "heartbeat_interval_ms": 1000})
    th = threading.Thread(target=worker.run, daemon=True)
    th.start()
    pub = KafkaPublisher(kafka_bootstrap, linger_ms=2)
    try:
        # warm-up (group join, first connections)
        pub.publish(t, "warm", finding(0, "WARM"))
        smtp_server.wait_for(n_base + 1, timeout=60)

        # --- 1. steady rate
        sent_at: dict[str, float] = {}
        total = RATE * SECONDS
        start = time.perf_counter()
        for i in range(total):
            target = start + i / RATE
            delay = target - time.perf_counter()
            if delay > 0:
                time.sleep(delay)
            f = finding(i, "LAT")
            sent_at[f["dossier_code"]] = time.perf_counter()
            pub.send(t, f["dossier_code"], f)
        pub.flush()
        smtp_server.wait_for(n_base + 1 + total, timeout=300)
        lat = [received_at[c] - s for c, s in sent_at.items()]
        p50, p99 = pct(lat, 50), pct(lat, 99)

        # --- 2. burst
        before = len(smtp_server.messages)
        t1 = time.perf_counter()
        for i in range(BURST):
            f = finding(i, "BURST")
            pub.send(t, f["dossier_code"], f)
        pub.flush()
        smtp_server.wait_for(before + BURST, timeout=600)
        ceiling = BURST / (time.perf_counter() - t1)
    finally:
        worker.stop()
        th.join(timeout=30)
        pub.close()

    print()
    print(f"notify perf ({total} findings at {RATE}/s, burst of {BURST}; 1 e-mail per finding)")
    print(f"{'':38}{'notify worker':>16}{'baseline SMTP only':>22}")
    print(f"{'latency p50 publish→SMTP accepted (ms)':38}{p50 * 1000:>16.1f}{1000 / base_rate:>22.1f}")
    print(f"{'latency p99 publish→SMTP accepted (ms)':38}{p99 * 1000:>16.1f}{'':>22}")
    print(f"{'latency mean (ms)':38}{statistics.mean(lat) * 1000:>16.1f}{'':>22}")
    print(f"{'throughput ceiling (e-mails/s)':38}{ceiling:>16.1f}{base_rate:>22.1f}")
    assert mongo_db.deliveries.count_documents({"outcome": "sent"}) == total + BURST + 1
