"""The local stack of deploy/local (shared/dev/) through `motcua local`: a private stack
on free ports, started, checked with real clients, started again (idempotent), stopped, wiped."""
from __future__ import annotations

import os
import smtplib
import subprocess
import sys
import time
from pathlib import Path

import pytest

from shared.dev import localstack, supervisor
from shared.dev.health import kafka_healthy, mongo_healthy
from shared.dev.infra import start_smtp
from shared.dev.provision import build_ferretdb, fetch_kafka
from shared.dev.stackconfig import StackConfig, StackError

REPO = Path(__file__).resolve().parents[2]


def _motcua(env, *args, timeout=300):
    return subprocess.run([sys.executable, "-m", "shared.cli", "local", *args], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=timeout)


def test_config_from_env_reads_ports_and_rejects_bad_values(tmp_path):
    cfg = StackConfig.from_env({"MOTCUA_KAFKA_PORT": "29092", "MOTCUA_FERRETDB_PORT": "27037",
                                "MOTCUA_LOCAL_NAME": "ci", "MOTCUA_LOCAL_DIR": str(tmp_path)})
    assert (cfg.kafka_port, cfg.kafka_controller_port) == (29092, 29093)
    assert (cfg.mongo_port, cfg.mongo_debug_port) == (27037, 27038)
    assert cfg.state_dir == tmp_path / "ci"
    env = cfg.env()
    assert env["KAFKA_BOOTSTRAP_SERVERS"] == "127.0.0.1:29092"
    assert env["MONGO_URI"] == "mongodb://127.0.0.1:27037/"
    assert env["MAIL_DIR"] == str(tmp_path / "ci" / "mail")
    assert set(env) >= {"INTAKE_URL", "SLA_URL", "NOTIFY_URL"}
    with pytest.raises(StackError, match="MOTCUA_SMTP_PORT='abc' is not a port number"):
        StackConfig.from_env({"MOTCUA_SMTP_PORT": "abc"})
    with pytest.raises(StackError, match="outside 1..65535"):
        StackConfig.from_env({"MOTCUA_KAFKA_PORT": "70000"})
    with pytest.raises(StackError, match="invalid stack name"):
        StackConfig.from_env({"MOTCUA_LOCAL_NAME": "../etc"})


def test_service_commands_use_the_stack_ports_and_their_own_control_sockets(tmp_path):
    cfg = StackConfig.from_env({"MOTCUA_SLA_METRICS_PORT": "29101", "MOTCUA_NOTIFY_METRICS_PORT": "29102",
                                "MOTCUA_INTAKE_PORT": "29001", "MOTCUA_LOCAL_NAME": "ci",
                                "MOTCUA_LOCAL_DIR": str(tmp_path)})
    specs = {s.name: s for s in localstack.service_specs(cfg)}
    assert specs["sla-worker"].worker and specs["sla-worker"].argv[-2:] == ("--metrics-port", "29101")
    assert specs["notify-worker"].argv[-2:] == ("--metrics-port", "29102")
    intake = specs["intake"].argv
    assert intake[intake.index("--bind") + 1] == "127.0.0.1:29001" and not specs["intake"].worker
    sockets = {s.argv[s.argv.index("--control-socket") + 1] for s in specs.values() if not s.worker}
    assert sockets == {str(tmp_path / "ci" / "run" / f"{n}.ctl") for n in ("intake", "sla", "notify", "dashboard")}
    deep = StackConfig(name="ci", local_dir=tmp_path / ("x" * 100))      # too long for a unix socket
    assert all("--no-control-socket" in s.argv for s in localstack.service_specs(deep) if not s.worker)


def test_missing_tool_is_named(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))          # no java, mvn or go here
    cfg = StackConfig(name="x", local_dir=tmp_path, cache_dir=tmp_path / "cache")
    with pytest.raises(StackError, match=r"`mvn` not found on PATH: it is needed to download the Kafka"):
        fetch_kafka(cfg)
    with pytest.raises(StackError, match=r"`go` not found on PATH: it is needed to build FerretDB"):
        build_ferretdb(cfg)


def test_provision_command_reports_a_missing_tool(tmp_path):
    """`python -m shared.dev.localstack provision` (deploy/test.sh, CI) provisions, or says what is
    missing and exits 1."""
    env = {"PATH": str(tmp_path), "MOTCUA_CACHE_DIR": str(tmp_path / "cache"), "HOME": str(tmp_path)}
    done = subprocess.run([sys.executable, "-m", "shared.dev.localstack", "provision"], cwd=REPO,
                          env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 1
    assert "error: `mvn` not found on PATH: it is needed to download the Kafka" in done.stderr


def test_up_status_env_idempotent_down_and_wipe(tmp_path):
    env = dict(os.environ)
    for var in ("KAFKA_BOOTSTRAP_SERVERS", "MONGO_URI"):
        env.pop(var, None)
    env.update({
        "MOTCUA_LOCAL_NAME": "lifecycle", "MOTCUA_LOCAL_DIR": str(tmp_path),
        "MOTCUA_KAFKA_PORT": str(supervisor.free_port_pair()),
        "MOTCUA_FERRETDB_PORT": str(supervisor.free_port_pair()),
        "MOTCUA_SMTP_PORT": str(supervisor.free_port_pair()),
    })
    cfg = StackConfig.from_env(env)
    try:
        up = _motcua(env, "up", "--infra-only")
        assert up.returncode == 0, up.stderr
        assert "kafka     started" in up.stdout and "ferretdb  started" in up.stdout
        env_file = tmp_path / "lifecycle.env"
        assert env_file.read_text() == localstack.env_text(cfg)
        assert f"export KAFKA_BOOTSTRAP_SERVERS=127.0.0.1:{cfg.kafka_port}" in env_file.read_text()

        # real clients
        assert kafka_healthy(cfg.kafka_bootstrap)
        assert mongo_healthy(cfg.mongo_uri)
        with smtplib.SMTP(cfg.host, cfg.smtp_port, timeout=10) as smtp:
            smtp.sendmail("motcua@localhost", ["chutich@example.vn"],
                          "Subject: =?utf-8?b?SOG7kyBzxqEgcXXDoSBo4bqhbg==?=\r\n\r\nquá hạn".encode())
        [eml] = list(cfg.mail_dir.glob("*.eml"))
        assert b"X-Envelope-To: chutich@example.vn" in eml.read_bytes()
        assert "quá hạn".encode() in eml.read_bytes()

        pids = {name: supervisor.read_pid(cfg, name) for name in localstack.INFRA}
        assert all(pids.values())

        t0 = time.monotonic()
        again = _motcua(env, "up", "--infra-only")
        assert again.returncode == 0, again.stderr
        assert time.monotonic() - t0 < 15
        assert again.stdout.count("already running") == 3
        assert {name: supervisor.read_pid(cfg, name) for name in localstack.INFRA} == pids

        status = _motcua(env, "status")
        assert status.returncode == 0
        for name in localstack.INFRA:
            assert any(line.split()[:2] == [name, "running"] and line.rstrip().endswith("healthy")
                       for line in status.stdout.splitlines()), status.stdout

        printed = _motcua(env, "env")
        assert printed.stdout == localstack.env_text(cfg)

        down = _motcua(env, "down")
        assert down.returncode == 0, down.stderr
        for name, pid in pids.items():
            assert not Path(f"/proc/{pid}").exists() or \
                Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z", name
        assert not env_file.exists()
        assert _motcua(env, "status").returncode == 3
        assert (cfg.data_dir / "kafka" / "meta.properties").exists()   # data kept without --wipe

        wipe = _motcua(env, "down", "--wipe")
        assert wipe.returncode == 0
        assert not cfg.state_dir.exists()
    finally:
        localstack.down(cfg, wipe=True)


def test_port_taken_by_a_stranger_is_a_clear_error(tmp_path):
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        cfg = StackConfig(name="busy", local_dir=tmp_path, smtp_port=port)
        with pytest.raises(StackError, match=rf"port 127.0.0.1:{port} \(smtp\) is already in use"):
            start_smtp(cfg)
