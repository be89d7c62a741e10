"""The services as subprocesses (gunicorn APIs and workers) for end-to-end tests, and the
`dossier.received` event they start from."""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import uuid
from datetime import datetime
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
AGENCY = "000.00.17.H56"                       # UBND phường Tân An (sample directory)
PROCEDURE = "1.004873"                         # Cấp Giấy xác nhận tình trạng hôn nhân, 3wd


def free_port() -> int:
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


def received_event(code: str, received: datetime) -> dict:
    return {
        "event_id": str(uuid.uuid4()), "type": "dossier.received", "dossier_code": code,
        "occurred_at": received.isoformat(), "agency_code": AGENCY,
        "data": {"procedure_code": PROCEDURE, "channel": "direct",
                 "components": ["to-khai-xac-nhan-tthn"], "digitized": [],
                 "applicant": {"kind": "citizen", "name": "Trần Thị Mai", "id_number": "080123456789",
                               "phone": "0912345678"}},
    }


