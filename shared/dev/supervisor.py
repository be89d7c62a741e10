"""The process supervisor of a local stack: start a process in its own session with its pid
file and log, find it again (guarding against pid reuse), wait until it answers, stop exactly
what the stack started (SIGTERM to its process group, SIGKILL after a timeout)."""
from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import time
from pathlib import Path

from shared.dev.stackconfig import REPO_ROOT, StackConfig, StackError, progress, tail


def port_open(host: str, port: int, timeout: float = 0.5) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def free_port_pair(host: str = "127.0.0.1") -> int:
    """A port P such that P and P+1 are both free right now (for a private stack)."""
    for _ in range(50):
        with socket.socket() as s:
            s.bind((host, 0))
            port = s.getsockname()[1]
        if port >= 65535:
            continue
        with socket.socket() as s2:
            try:
                s2.bind((host, port + 1))
            except OSError:
                continue
        return port
    raise StackError("no pair of free ports found")


def pid_file(cfg: StackConfig, name: str) -> Path:
    return cfg.pid_dir / f"{name}.pid"


def read_pid(cfg: StackConfig, name: str) -> int | None:
    """The pid of a component this stack started, if that process is still the one we started."""
    path = pid_file(cfg, name)
    try:
        info = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    pid = int(info.get("pid", 0))
    if pid <= 0:
        return None
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode("utf-8", "replace")
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    if stat.rsplit(")", 1)[1].split()[0] == "Z":   # zombie
        return None
    # guard against pid reuse: the command line must be the one we recorded
    if info.get("marker") and info["marker"] not in cmdline:
        return None
    return pid


def start(cfg: StackConfig, name: str, cmd: list[str], env: dict | None = None,
          cwd: Path | None = None, marker: str | None = None) -> int:
    """Start `cmd` in a session of its own, output to `<logs>/<name>.log`; the pid file records
    the pid and a `marker` its command line must contain (default: the program)."""
    cfg.log_dir.mkdir(parents=True, exist_ok=True)
    cfg.pid_dir.mkdir(parents=True, exist_ok=True)
    log = cfg.log_dir / f"{name}.log"
    with open(log, "ab") as fh:
        fh.write(f"\n--- start {time.strftime('%Y-%m-%dT%H:%M:%S%z')}: {' '.join(cmd)}\n".encode())
        fh.flush()
        proc = subprocess.Popen(cmd, stdout=fh, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                env=env, cwd=cwd or REPO_ROOT, start_new_session=True)
    pid_file(cfg, name).write_text(json.dumps({"pid": proc.pid, "marker": marker or cmd[0],
                                               "cmd": cmd}))
    return proc.pid


def stop(cfg: StackConfig, name: str, timeout: float = 20.0) -> bool:
    """Stop a component (SIGTERM to its process group, SIGKILL after `timeout`)."""
    pid = read_pid(cfg, name)
    path = pid_file(cfg, name)
    if pid is None:
        path.unlink(missing_ok=True)
        return False
    try:
        os.killpg(pid, signal.SIGTERM)   # started with start_new_session: pgid == pid
    except ProcessLookupError:
        pass
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and read_pid(cfg, name) is not None:
        reap(pid)
        time.sleep(0.1)
    if read_pid(cfg, name) is not None:
        progress(f"{name} (pid {pid}) did not stop in {timeout:.0f}s: SIGKILL")
        try:
            os.killpg(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        reap(pid)
    path.unlink(missing_ok=True)
    return True


def reap(pid: int) -> None:
    try:
        os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        pass


def wait_healthy(cfg: StackConfig, name: str, check, timeout: float) -> None:
    """Poll `check()` (True when ready) until `timeout`; fail early if the process died."""
    deadline = time.monotonic() + timeout
    last_error = None
    while time.monotonic() < deadline:
        if read_pid(cfg, name) is None:
            raise StackError(f"{name} exited during start-up; see {cfg.log_dir / (name + '.log')}:\n"
                             f"{tail(cfg.log_dir / (name + '.log'))}")
        try:
            if check():
                return
        except Exception as exc:   # noqa: BLE001 - any client error means "not ready yet"
            last_error = exc
        time.sleep(0.3)
    raise StackError(f"{name} not healthy after {timeout:.0f}s (last error: {last_error}); "
                     f"see {cfg.log_dir / (name + '.log')}")


def check_port_free(cfg: StackConfig, what: str, port: int) -> None:
    if port_open(cfg.host, port):
        raise StackError(f"port {cfg.host}:{port} ({what}) is already in use by a process this "
                         f"stack ({cfg.name}) did not start; stop it or choose another port "
                         f"(see `motcua local --help` for the MOTCUA_*_PORT variables)")

