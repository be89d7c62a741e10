"""Walking skeleton, end to end: intake (gunicorn), the sla worker and the notify worker run as
subprocesses against real Kafka and a real MongoDB-wire server; a dossier received long ago and
never resolved must reach its agency head as an e-mail on a real SMTP server."""
from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid
from datetime import datetime, timedelta, timezone

import pytest
import requests

from helpers.processes import REPO, Services, free_port, received_event

AGENCY = "000.00.17.H56"                       # UBND phường Tân An (sample directory)
HEAD_EMAIL = "chutich@phuongtanan.longan.local"
PROCEDURE = "1.004873"                         # Cấp Giấy xác nhận tình trạng hôn nhân, 3wd
# Monday 02/11/2026 09:00 in Vietnam: a working day, far from holidays
VIRTUAL_START = datetime(2026, 11, 2, 2, 0, tzinfo=timezone.utc)


@pytest.fixture
def clock_file(request, tmp_path):
    """None: the services use the system clock. A path: they share this virtual clock (FileClock)."""
    return getattr(request, "param", None) and tmp_path / "clock.txt"


@pytest.fixture
def stack(kafka_bootstrap, mongo_uri, mongo_db, topics, smtp_server, tmp_path, clock_file):
    missing = [p for p in ("services/intake/app.py", "services/sla/__main__.py", "services/notify/__main__.py")
               if not (REPO / p).exists()]
    if missing:
        pytest.fail(f"service entry points missing: {missing}")
    names = topics("events", "findings", partitions=3)
    from shared.platform.messaging import ensure_topics
    ensure_topics(kafka_bootstrap, {names["events"] + ".dlq": 1, names["findings"] + ".dlq": 1})
    port = free_port()
    env = dict(os.environ, KAFKA_BOOTSTRAP_SERVERS=kafka_bootstrap, MONGO_URI=mongo_uri,
               MONGO_DB=mongo_db.name, TOPIC_EVENTS=names["events"], TOPIC_FINDINGS=names["findings"],
               SMTP_HOST=smtp_server.host, SMTP_PORT=str(smtp_server.port),
               NOTIFY_SECRET=uuid.uuid4().hex, NOTIFY_URL="http://127.0.0.1:9",
               PYTHONUNBUFFERED="1", INTAKE_WORKERS="1", INTAKE_THREADS="4")
    env.pop("MOTCUA_CLOCK_FILE", None)
    if clock_file:
        from shared.platform.clock import FileClock
        FileClock(clock_file).set(VIRTUAL_START)
        env["MOTCUA_CLOCK_FILE"] = str(clock_file)
    services = Services(env, tmp_path)
    group = f"e2e-{uuid.uuid4().hex[:8]}"
    services.start("intake", "-m", "gunicorn", "-c", "services/intake/gunicorn.conf.py",
                   "--bind", f"127.0.0.1:{port}", "--workers", "1", "services.intake.app:create_app()")
    # a private consumer group keeps this test out of other sla workers' rebalances on a shared
    # broker; older sla entry points have no --group (then the topic names alone isolate it)
    help_text = subprocess.run([sys.executable, "-m", "services.sla", "worker", "--help"], cwd=REPO,
                               env=env, capture_output=True, text=True, timeout=30).stdout
    services.start("sla-worker", "-m", "services.sla", "worker",
                   *(("--group", group) if "--group" in help_text else ()))
    services.start("notify-worker", "-m", "services.notify", "worker")
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            services.check_alive()
            try:
                if requests.get(url + "/healthz", timeout=2).status_code == 200:
                    break
            except requests.RequestException:
                pass
            if time.monotonic() > deadline:
                raise AssertionError(f"intake did not answer /healthz:\n{services.tail('intake')}")
            time.sleep(0.3)
        from shared.platform.auth import KeyStore
        _kid, key = KeyStore(mongo_db).create(AGENCY, "counter", "e2e")
        yield url, key, services
    finally:
        services.stop()


def test_overdue_dossier_reaches_the_agency_head_by_email(stack, smtp_server):
    url, key, services = stack
    received = datetime.now(timezone.utc).replace(microsecond=0) - timedelta(days=21)
    code = f"{AGENCY}-{received:%y%m%d}-{uuid.uuid4().int % 10000:04d}"
    event = received_event(code, received)
    resp = requests.post(url + "/v1/events", json=event, headers={"Authorization": f"Bearer {key}"},
                         timeout=15)
    assert resp.status_code in (200, 202), resp.text

    found = _wait_for_mail(smtp_server, services, code)
    assert code in found.subject
    assert code in found.text()
    body = found.raw.decode("utf-8", "replace") + found.text()
    for secret in ("080123456789", "0912345678"):       # no citizen id/phone in alerts
        assert secret not in body


OVERDUE_SUBJECT = "Hồ sơ quá hạn"                  # the rule's Vietnamese title opens the subject


def _overdue_mails(smtp_server, code: str) -> list:
    return [m for m in list(smtp_server.messages)
            if HEAD_EMAIL in m.rcpt_tos and code in m.subject and m.subject.startswith(OVERDUE_SUBJECT)]


def _wait_for_mail(smtp_server, services, code: str, timeout: float = 90, subject_prefix: str = ""):
    deadline = time.monotonic() + timeout
    found = None
    while found is None and time.monotonic() < deadline:
        services.check_alive()
        for mail in list(smtp_server.messages):
            if (HEAD_EMAIL in mail.rcpt_tos and code in mail.subject + mail.text()
                    and mail.subject.startswith(subject_prefix)):
                found = mail
        if found is None:
            try:
                smtp_server.wait_for(len(smtp_server.messages) + 1, timeout=2)
            except AssertionError:
                pass
    assert found is not None, (
        f"no e-mail to {HEAD_EMAIL} about {code} within {timeout:.0f}s; got {len(smtp_server.messages)} "
        f"e-mail(s) to {[m.rcpt_tos for m in smtp_server.messages]}\n--- sla-worker:\n"
        f"{services.tail('sla-worker')}\n--- notify-worker:\n{services.tail('notify-worker')}")
    return found


@pytest.mark.parametrize("clock_file", [True], indirect=True)
def test_virtual_clock_moves_a_dossier_past_its_deadline(stack, smtp_server, clock_file):
    """Time is injected: the services share a file clock; the dossier is on time until the test
    moves the clock past its due date (3 working days: Thursday 05/11/2026 09:00), then the
    agency head gets the OVERDUE e-mail."""
    from shared.platform.clock import FileClock

    url, key, services = stack
    code = f"{AGENCY}-261102-{uuid.uuid4().int % 10000:04d}"
    resp = requests.post(url + "/v1/events", json=received_event(code, VIRTUAL_START),
                         headers={"Authorization": f"Bearer {key}"}, timeout=15)
    assert resp.status_code == 202, resp.text

    # one working day later the dossier is not overdue: no OVERDUE mail may come
    FileClock(clock_file).set(VIRTUAL_START + timedelta(days=1))
    time.sleep(6)
    services.check_alive()
    assert _overdue_mails(smtp_server, code) == []

    FileClock(clock_file).set(datetime(2026, 11, 5, 2, 30, tzinfo=timezone.utc))   # 09:30 Thursday
    found = _wait_for_mail(smtp_server, services, code, timeout=60, subject_prefix=OVERDUE_SUBJECT)
    assert "05/11/2026 09:00" in found.text()           # the legal due date, Vietnam time
