"""Walking skeleton, end to end: intake (gunicorn), the sla worker and the notify worker run as
subprocesses against real Kafka and a real MongoDB-wire server; a dossier received long ago and
never resolved must reach its agency head as an e-mail on a real SMTP server."""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
import requests

REPO = Path(__file__).resolve().parents[2]
AGENCY = "000.00.17.H56"                       # UBND phường Tân An (sample directory)
HEAD_EMAIL = "chutich@phuongtanan.longan.local"
PROCEDURE = "1.004873"                         # Cấp Giấy xác nhận tình trạng hôn nhân, 3wd


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Services:
    def __init__(self, env: dict, log_dir: Path):
        self.env, self.log_dir, self.procs = env, log_dir, {}

    def start(self, name: str, *argv: str) -> None:
        log = open(self.log_dir / f"{name}.log", "wb")
        self.procs[name] = (subprocess.Popen([sys.executable, *argv], cwd=REPO, env=self.env, stdout=log,
                                             stderr=subprocess.STDOUT, start_new_session=True), log)

    def check_alive(self) -> None:
        for name, (proc, _log) in self.procs.items():
            if proc.poll() is not None:
                raise AssertionError(f"{name} exited with {proc.returncode}:\n{self.tail(name)}")

    def tail(self, name: str, n: int = 30) -> str:
        path = self.log_dir / f"{name}.log"
        return "\n".join(path.read_text(errors="replace").splitlines()[-n:]) if path.exists() else ""

    def stop(self) -> None:
        for proc, _log in self.procs.values():
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
        for proc, log in self.procs.values():
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
            log.close()


@pytest.fixture
def stack(kafka_bootstrap, mongo_uri, mongo_db, topics, smtp_server, tmp_path):
    missing = [p for p in ("services/intake/app.py", "services/sla/__main__.py", "services/notify/__main__.py")
               if not (REPO / p).exists()]
    if missing:
        pytest.fail(f"service entry points missing: {missing}")
    names = topics("events", "findings", partitions=3)
    from shared.messaging import ensure_topics
    ensure_topics(kafka_bootstrap, {names["events"] + ".dlq": 1, names["findings"] + ".dlq": 1})
    port = _free_port()
    env = dict(os.environ, KAFKA_BOOTSTRAP_SERVERS=kafka_bootstrap, MONGO_URI=mongo_uri,
               MONGO_DB=mongo_db.name, TOPIC_EVENTS=names["events"], TOPIC_FINDINGS=names["findings"],
               SMTP_HOST=smtp_server.host, SMTP_PORT=str(smtp_server.port),
               NOTIFY_SECRET=uuid.uuid4().hex, NOTIFY_URL="http://127.0.0.1:9",
               PYTHONUNBUFFERED="1", INTAKE_WORKERS="1", INTAKE_THREADS="4")
    env.pop("MOTCUA_CLOCK_FILE", None)
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
        from shared.auth import KeyStore
        _kid, key = KeyStore(mongo_db).create(AGENCY, "counter", "e2e")
        yield url, key, services
    finally:
        services.stop()


def test_overdue_dossier_reaches_the_agency_head_by_email(stack, smtp_server):
    url, key, services = stack
    received = datetime.now(timezone.utc).replace(microsecond=0) - timedelta(days=21)
    code = f"{AGENCY}-{received:%y%m%d}-{uuid.uuid4().int % 10000:04d}"
    event = {
        "event_id": str(uuid.uuid4()), "type": "dossier.received", "dossier_code": code,
        "occurred_at": received.isoformat(), "agency_code": AGENCY,
        "data": {"procedure_code": PROCEDURE, "channel": "direct",
                 "components": ["to-khai-xac-nhan-tthn"], "digitized": [],
                 "applicant": {"kind": "citizen", "name": "Trần Thị Mai", "id_number": "080123456789",
                               "phone": "0912345678"}},
    }
    resp = requests.post(url + "/v1/events", json=event, headers={"Authorization": f"Bearer {key}"},
                         timeout=15)
    assert resp.status_code in (200, 202), resp.text

    deadline = time.monotonic() + 90
    found = None
    while found is None and time.monotonic() < deadline:
        services.check_alive()
        for mail in list(smtp_server.messages):
            if HEAD_EMAIL in mail.rcpt_tos and code in mail.subject + mail.text():
                found = mail
        if found is None:
            try:
                smtp_server.wait_for(len(smtp_server.messages) + 1, timeout=2)
            except AssertionError:
                pass
    assert found is not None, (
        f"no e-mail to {HEAD_EMAIL} about {code} within 90s; got {len(smtp_server.messages)} e-mail(s) "
        f"to {[m.rcpt_tos for m in smtp_server.messages]}\n--- sla-worker:\n{services.tail('sla-worker')}"
        f"\n--- notify-worker:\n{services.tail('notify-worker')}")
    assert code in found.subject
    assert code in found.text()
    body = found.raw.decode("utf-8", "replace") + found.text()
    for secret in ("080123456789", "0912345678"):       # no citizen id/phone in alerts
        assert secret not in body
