"""The local stack without Docker (DESIGN.md §11): Kafka (Maven Central jars, KRaft, Java 17),
FerretDB v1.24 over SQLite (built from the Go module), an SMTP catcher writing `.eml` files,
and the three services when their entry points exist.

One stack = one state directory `<MOTCUA_LOCAL_DIR>/<name>/` holding `pids/`, `logs/`, `data/`,
`mail/` and `config/`. Several stacks can run side by side on different ports (the test
session starts its own). `up` is idempotent; `down` stops exactly the processes whose pid files
it wrote (each was started in its own session, so its process group is ours too).

Also runnable as `python -m shared.dev.localstack mailcatcher --port P --dir D`.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
KAFKA_VERSION = "4.3.1"
FERRETDB_VERSION = "v1.24.2"
FERRETDB_MODULE = "github.com/FerretDB/FerretDB"

# env var -> (attribute, default); documented in shared.platform.config.ENV_VARS and docs/operations.md
PORT_VARS = {
    "MOTCUA_KAFKA_PORT": ("kafka_port", 19092),
    "MOTCUA_KAFKA_CONTROLLER_PORT": ("kafka_controller_port", 0),   # 0: kafka port + 1
    "MOTCUA_FERRETDB_PORT": ("mongo_port", 27027),
    "MOTCUA_FERRETDB_DEBUG_PORT": ("mongo_debug_port", 0),          # 0: ferretdb port + 1
    "MOTCUA_SMTP_PORT": ("smtp_port", 1025),
    "MOTCUA_INTAKE_PORT": ("intake_port", 8001),
    "MOTCUA_SLA_PORT": ("sla_port", 8002),
    "MOTCUA_NOTIFY_PORT": ("notify_port", 8003),
    "MOTCUA_DASHBOARD_PORT": ("dashboard_port", 8004),
    "MOTCUA_SLA_METRICS_PORT": ("sla_metrics_port", 9101),
    "MOTCUA_NOTIFY_METRICS_PORT": ("notify_metrics_port", 9102),
}


class StackError(Exception):
    """A stack operation failed; the message says what and where to look."""


def _log(msg: str) -> None:
    print(f"[local] {msg}", file=sys.stderr, flush=True)


@dataclass
class StackConfig:
    """Where a stack lives and which ports it uses."""
    name: str = "dev"
    local_dir: Path = REPO_ROOT / ".local"
    cache_dir: Path = REPO_ROOT / "deploy" / "local" / ".cache"
    kafka_port: int = 19092
    kafka_controller_port: int = 0
    mongo_port: int = 27027
    mongo_debug_port: int = 0
    smtp_port: int = 1025
    intake_port: int = 8001
    sla_port: int = 8002
    notify_port: int = 8003
    dashboard_port: int = 8004
    sla_metrics_port: int = 9101       # the workers' Prometheus endpoints (`--metrics-port`)
    notify_metrics_port: int = 9102
    host: str = "127.0.0.1"
    extra_env: dict = field(default_factory=dict)

    def __post_init__(self):
        self.local_dir = Path(self.local_dir)
        self.cache_dir = Path(self.cache_dir)
        if not self.kafka_controller_port:
            self.kafka_controller_port = self.kafka_port + 1
        if not self.mongo_debug_port:
            self.mongo_debug_port = self.mongo_port + 1
        if not self.name or not all(c.isalnum() or c in "-_." for c in self.name):
            raise StackError(f"invalid stack name {self.name!r}: use letters, digits, '-', '_' or '.'")

    @classmethod
    def from_env(cls, environ=None, **overrides) -> "StackConfig":
        """Ports and directories from MOTCUA_* variables (see PORT_VARS), then overrides."""
        env = os.environ if environ is None else environ
        values: dict = {}
        for var, (attr, _default) in PORT_VARS.items():
            raw = env.get(var)
            if raw:
                try:
                    port = int(raw)
                except ValueError:
                    raise StackError(f"{var}={raw!r} is not a port number") from None
                if not 0 < port < 65536:
                    raise StackError(f"{var}={raw!r} is outside 1..65535")
                values[attr] = port
        if env.get("MOTCUA_LOCAL_NAME"):
            values["name"] = env["MOTCUA_LOCAL_NAME"]
        if env.get("MOTCUA_LOCAL_DIR"):
            values["local_dir"] = Path(env["MOTCUA_LOCAL_DIR"])
        if env.get("MOTCUA_CACHE_DIR"):
            values["cache_dir"] = Path(env["MOTCUA_CACHE_DIR"])
        values.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**values)

    # directories
    @property
    def state_dir(self) -> Path:
        return self.local_dir / self.name

    @property
    def pid_dir(self) -> Path:
        return self.state_dir / "pids"

    @property
    def log_dir(self) -> Path:
        return self.state_dir / "logs"

    @property
    def data_dir(self) -> Path:
        return self.state_dir / "data"

    @property
    def mail_dir(self) -> Path:
        return self.state_dir / "mail"

    @property
    def config_dir(self) -> Path:
        return self.state_dir / "config"

    @property
    def env_file(self) -> Path:
        return self.local_dir / f"{self.name}.env"

    @property
    def kafka_libs(self) -> Path:
        return self.cache_dir / f"kafka-{KAFKA_VERSION}" / "libs"

    @property
    def ferretdb_bin(self) -> Path:
        return self.cache_dir / "bin" / f"ferretdb-{FERRETDB_VERSION}"

    # addresses
    @property
    def kafka_bootstrap(self) -> str:
        return f"{self.host}:{self.kafka_port}"

    @property
    def mongo_uri(self) -> str:
        return f"mongodb://{self.host}:{self.mongo_port}/"

    def url(self, port: int) -> str:
        return f"http://{self.host}:{port}"

    def env(self) -> dict[str, str]:
        """The variables a client (or a service) of this stack needs."""
        return {
            "KAFKA_BOOTSTRAP_SERVERS": self.kafka_bootstrap,
            "MONGO_URI": self.mongo_uri,
            "SMTP_HOST": self.host,
            "SMTP_PORT": str(self.smtp_port),
            "INTAKE_URL": self.url(self.intake_port),
            "SLA_URL": self.url(self.sla_port),
            "NOTIFY_URL": self.url(self.notify_port),
            "DASHBOARD_URL": self.url(self.dashboard_port),
            "MAIL_DIR": str(self.mail_dir),
        }


# --------------------------------------------------------------------------- tools and caches

def require_tool(name: str, why: str) -> str:
    path = shutil.which(name)
    if not path:
        raise StackError(f"`{name}` not found on PATH: it is needed to {why}. "
                         f"Install it (java 17, maven 3.8+, go 1.22+) and retry.")
    return path


def _run(cmd: list[str], log: Path, what: str, cwd: Path | None = None, env=None, timeout=1800) -> str:
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "ab") as fh:
        fh.write(f"\n$ {' '.join(cmd)}\n".encode())
        fh.flush()
        proc = subprocess.run(cmd, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=fh, timeout=timeout)
        fh.write(proc.stdout)
    if proc.returncode != 0:
        raise StackError(f"{what} failed (exit {proc.returncode}); see {log}:\n{_tail(log)}")
    return proc.stdout.decode("utf-8", "replace")


def _tail(path: Path, lines: int = 15) -> str:
    try:
        text = path.read_text(encoding="utf-8", errors="replace").splitlines()
    except OSError:
        return "(no log)"
    return "\n".join(text[-lines:])


def fetch_kafka(cfg: StackConfig) -> Path:
    """Resolve the broker jars from Maven Central into the cache (once)."""
    libs = cfg.kafka_libs
    marker = libs / ".complete"
    if marker.exists():
        return libs
    mvn = require_tool("mvn", f"download the Kafka {KAFKA_VERSION} jars from Maven Central")
    require_tool("java", "run the Kafka broker")
    pom = REPO_ROOT / "deploy" / "local" / "kafka" / "pom.xml"
    _log(f"downloading Kafka {KAFKA_VERSION} jars from Maven Central into {libs}")
    _run([mvn, "-q", "-B", "-f", str(pom),
          "org.apache.maven.plugins:maven-dependency-plugin:3.8.1:copy-dependencies",
          "-DincludeScope=runtime", f"-DoutputDirectory={libs}"],
         cfg.cache_dir / "fetch-kafka.log", "maven (Kafka jars)")
    if not (libs / f"kafka_2.13-{KAFKA_VERSION}.jar").exists():
        raise StackError(f"maven finished but {libs} has no kafka_2.13-{KAFKA_VERSION}.jar")
    marker.write_text(KAFKA_VERSION)
    return libs


def build_ferretdb(cfg: StackConfig) -> Path:
    """Build FerretDB from the Go module proxy into the cache (once).

    `go install …@version` fails behind proxies that refuse the deprecation lookup, so download
    the module and build inside the module cache.
    """
    binary = cfg.ferretdb_bin
    if binary.exists():
        return binary
    go = require_tool("go", f"build FerretDB {FERRETDB_VERSION}")
    log = cfg.cache_dir / "build-ferretdb.log"
    tmp = cfg.cache_dir / "gomod-tmp"
    tmp.mkdir(parents=True, exist_ok=True)
    if not (tmp / "go.mod").exists():
        (tmp / "go.mod").write_text("module motcua/ferretdb-build\n\ngo 1.22\n")
    env = dict(os.environ, GOFLAGS="-mod=mod")
    _log(f"downloading FerretDB {FERRETDB_VERSION} from the Go module proxy")
    out = _run([go, "mod", "download", "-json", f"{FERRETDB_MODULE}@{FERRETDB_VERSION}"],
               log, "go mod download (FerretDB)", cwd=tmp, env=env)
    # the module cache is read-only and FerretDB embeds build/version/version.txt (which a
    # release tarball fills in, and without which the binary panics): build a writable copy
    src = cfg.cache_dir / f"ferretdb-src-{FERRETDB_VERSION}"
    if src.exists():
        shutil.rmtree(src)
    shutil.copytree(Path(json.loads(out)["Dir"]), src)
    for d, _dirs, files in os.walk(src):
        os.chmod(d, 0o755)
        for f in files:
            os.chmod(os.path.join(d, f), 0o644)
    (src / "build" / "version" / "version.txt").write_text(FERRETDB_VERSION + "\n")
    _log(f"building FerretDB (takes about a minute the first time) into {binary}")
    binary.parent.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ, GOFLAGS="-buildvcs=false", CGO_ENABLED="0")
    _run([go, "build", "-o", str(binary) + ".tmp", "./cmd/ferretdb"], log, "go build (FerretDB)",
         cwd=src, env=env)
    shutil.rmtree(src, ignore_errors=True)
    os.replace(str(binary) + ".tmp", binary)
    return binary


def provision(cfg: StackConfig) -> None:
    """Download/build everything the infra needs, without starting it."""
    fetch_kafka(cfg)
    build_ferretdb(cfg)


# --------------------------------------------------------------------------- processes

@dataclass
class Component:
    name: str
    port: int | None          # the port its health check uses (None: a worker)
    kind: str                 # infra | service


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


def _pid_file(cfg: StackConfig, name: str) -> Path:
    return cfg.pid_dir / f"{name}.pid"


def _read_pid(cfg: StackConfig, name: str) -> int | None:
    """The pid of a component this stack started, if that process is still the one we started."""
    path = _pid_file(cfg, name)
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


def _start(cfg: StackConfig, name: str, cmd: list[str], env: dict | None = None,
           cwd: Path | None = None, marker: str | None = None) -> int:
    cfg.log_dir.mkdir(parents=True, exist_ok=True)
    cfg.pid_dir.mkdir(parents=True, exist_ok=True)
    log = cfg.log_dir / f"{name}.log"
    with open(log, "ab") as fh:
        fh.write(f"\n--- start {time.strftime('%Y-%m-%dT%H:%M:%S%z')}: {' '.join(cmd)}\n".encode())
        fh.flush()
        proc = subprocess.Popen(cmd, stdout=fh, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                env=env, cwd=cwd or REPO_ROOT, start_new_session=True)
    _pid_file(cfg, name).write_text(json.dumps({"pid": proc.pid, "marker": marker or cmd[0],
                                                "cmd": cmd}))
    return proc.pid


def _stop(cfg: StackConfig, name: str, timeout: float = 20.0) -> bool:
    """Stop a component (SIGTERM to its process group, SIGKILL after `timeout`)."""
    pid = _read_pid(cfg, name)
    path = _pid_file(cfg, name)
    if pid is None:
        path.unlink(missing_ok=True)
        return False
    try:
        os.killpg(pid, signal.SIGTERM)   # started with start_new_session: pgid == pid
    except ProcessLookupError:
        pass
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and _read_pid(cfg, name) is not None:
        _reap(pid)
        time.sleep(0.1)
    if _read_pid(cfg, name) is not None:
        _log(f"{name} (pid {pid}) did not stop in {timeout:.0f}s: SIGKILL")
        try:
            os.killpg(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        _reap(pid)
    path.unlink(missing_ok=True)
    return True


def _reap(pid: int) -> None:
    try:
        os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        pass


def _wait_healthy(cfg: StackConfig, name: str, check, timeout: float) -> None:
    """Poll `check()` (True when ready) until `timeout`; fail early if the process died."""
    deadline = time.monotonic() + timeout
    last_error = None
    while time.monotonic() < deadline:
        if _read_pid(cfg, name) is None:
            raise StackError(f"{name} exited during start-up; see {cfg.log_dir / (name + '.log')}:\n"
                             f"{_tail(cfg.log_dir / (name + '.log'))}")
        try:
            if check():
                return
        except Exception as exc:   # noqa: BLE001 - any client error means "not ready yet"
            last_error = exc
        time.sleep(0.3)
    raise StackError(f"{name} not healthy after {timeout:.0f}s (last error: {last_error}); "
                     f"see {cfg.log_dir / (name + '.log')}")


# --------------------------------------------------------------------------- health checks

def kafka_healthy(bootstrap: str, timeout: float = 3.0) -> bool:
    """A real client sees a broker and can list topics."""
    from kafka import KafkaAdminClient

    admin = KafkaAdminClient(bootstrap_servers=bootstrap.split(","), client_id="motcua-health",
                             request_timeout_ms=int(timeout * 1000),
                             bootstrap_timeout_ms=int(timeout * 1000))
    try:
        admin.list_topics()
        return bool(admin.describe_cluster().get("brokers"))
    finally:
        admin.close()


def mongo_healthy(uri: str, timeout: float = 2.0) -> bool:
    from shared.platform.config import Settings
    from shared.platform.mongo import mongo_client

    client = mongo_client(Settings.from_env({}, mongo_uri=uri), timeout_ms=int(timeout * 1000))
    try:
        return client.admin.command("ping").get("ok") == 1
    finally:
        client.close()


def smtp_healthy(host: str, port: int, timeout: float = 2.0) -> bool:
    import smtplib

    with smtplib.SMTP(host, port, timeout=timeout) as smtp:
        return smtp.noop()[0] == 250


def http_healthy(url: str, timeout: float = 2.0, path: str = "/healthz") -> bool:
    """Any HTTP answer below 500 from `path` (even 404) proves the server is serving."""
    import urllib.error
    import urllib.request

    try:
        with urllib.request.urlopen(url + path, timeout=timeout) as resp:
            return resp.status < 500
    except urllib.error.HTTPError as exc:
        return exc.code < 500


# --------------------------------------------------------------------------- infra components

KAFKA_PROPERTIES = """\
# generated by shared/dev/localstack.py for stack {name}
process.roles=broker,controller
node.id=1
listeners=PLAINTEXT://{host}:{port},CONTROLLER://{host}:{cport}
advertised.listeners=PLAINTEXT://{host}:{port}
listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT
controller.listener.names=CONTROLLER
inter.broker.listener.name=PLAINTEXT
controller.quorum.bootstrap.servers={host}:{cport}
log.dirs={data}
# topics auto-created on a first publish get the workers' count too (TOPIC_PARTITIONS)
num.partitions={partitions}
default.replication.factor=1
min.insync.replicas=1
offsets.topic.replication.factor=1
offsets.topic.num.partitions=1
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
transaction.state.log.num.partitions=1
share.coordinator.state.topic.replication.factor=1
share.coordinator.state.topic.min.isr=1
group.initial.rebalance.delay.ms=0
log.cleaner.threads=1
# Kafka requires strictly more than 1 MiB per cleaner thread (1048576 is rejected)
log.cleaner.dedupe.buffer.size=2097152
log.retention.hours=168
log.segment.bytes=16777216
num.network.threads=2
num.io.threads=2
background.threads=2
auto.create.topics.enable=true
delete.topic.enable=true
"""

LOG4J2_PROPERTIES = """\
# generated by shared/dev/localstack.py: Kafka's own log goes to a file, not to the console
status = warn
appender.file.type = File
appender.file.name = FILE
appender.file.fileName = {log}
appender.file.layout.type = PatternLayout
appender.file.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = INFO
rootLogger.appenderRef.file.ref = FILE
logger.kafka.name = kafka
logger.kafka.level = INFO
logger.kafkaclients.name = org.apache.kafka
logger.kafkaclients.level = INFO
logger.statechange.name = state.change.logger
logger.statechange.level = WARN
"""


def _java_cmd(cfg: StackConfig, main: str, *args: str) -> list[str]:
    java = require_tool("java", "run the Kafka broker")
    return [java, "-Xmx512m", "-Xms128m", "-XX:+UseSerialGC", "-XX:TieredStopAtLevel=1",
            "-Djava.awt.headless=true",
            f"-Dlog4j2.configurationFile={cfg.config_dir / 'kafka-log4j2.properties'}",
            "-cp", f"{cfg.kafka_libs}/*", main, *args]


def stack_settings(cfg: StackConfig):
    """The settings the stack's services run with (service_env without its side effects): the
    topic names and TOPIC_PARTITIONS the stack creates its topics with."""
    from shared.platform.config import Settings
    try:
        return Settings.from_env({**os.environ, **cfg.env(), **{k: str(v) for k, v in cfg.extra_env.items()}})
    except ValueError as exc:   # e.g. TOPIC_PARTITIONS=0
        raise StackError(str(exc)) from None


def kafka_properties(cfg: StackConfig, data: Path) -> str:
    return KAFKA_PROPERTIES.format(name=cfg.name, host=cfg.host, port=cfg.kafka_port,
                                   cport=cfg.kafka_controller_port, data=data,
                                   partitions=stack_settings(cfg).topic_partitions)


def create_topics(cfg: StackConfig) -> dict[str, int]:
    """Create the system's topics on the stack's broker as the workers do (Settings.topics())."""
    from shared.platform.messaging import ensure_topics
    return ensure_topics(cfg.kafka_bootstrap, stack_settings(cfg).topics())


def start_kafka(cfg: StackConfig) -> bool:
    """Start the broker if it is not running; True when started now."""
    if _read_pid(cfg, "kafka"):
        return False
    _check_port_free(cfg, "kafka", cfg.kafka_port)
    _check_port_free(cfg, "kafka controller", cfg.kafka_controller_port)
    fetch_kafka(cfg)
    cfg.config_dir.mkdir(parents=True, exist_ok=True)
    data = cfg.data_dir / "kafka"
    data.mkdir(parents=True, exist_ok=True)
    props = cfg.config_dir / "kafka-server.properties"
    props.write_text(kafka_properties(cfg, data))
    (cfg.config_dir / "kafka-log4j2.properties").write_text(
        LOG4J2_PROPERTIES.format(log=cfg.log_dir / "kafka-server.log"))
    if not (data / "meta.properties").exists():
        tool_log = cfg.log_dir / "kafka-storage.log"
        cluster_id = _run(_java_cmd(cfg, "kafka.tools.StorageTool", "random-uuid"), tool_log,
                          "kafka StorageTool random-uuid").strip().splitlines()[-1].strip()
        _run(_java_cmd(cfg, "kafka.tools.StorageTool", "format", "--standalone", "-t", cluster_id,
                       "-c", str(props)), tool_log, "kafka StorageTool format")
    _start(cfg, "kafka", _java_cmd(cfg, "kafka.Kafka", str(props)), marker=str(props))
    return True


def start_ferretdb(cfg: StackConfig) -> bool:
    if _read_pid(cfg, "ferretdb"):
        return False
    _check_port_free(cfg, "ferretdb", cfg.mongo_port)
    _check_port_free(cfg, "ferretdb debug", cfg.mongo_debug_port)
    binary = build_ferretdb(cfg)
    data = cfg.data_dir / "ferretdb"
    data.mkdir(parents=True, exist_ok=True)
    _start(cfg, "ferretdb", [str(binary), "--handler=sqlite", f"--sqlite-url=file:{data}/",
                             f"--listen-addr={cfg.host}:{cfg.mongo_port}",
                             f"--debug-addr={cfg.host}:{cfg.mongo_debug_port}",
                             "--telemetry=disable", "--log-level=WARN",
                             f"--state-dir={data}"], marker=str(binary))
    return True


def start_smtp(cfg: StackConfig) -> bool:
    if _read_pid(cfg, "smtp"):
        return False
    _check_port_free(cfg, "smtp", cfg.smtp_port)
    cfg.mail_dir.mkdir(parents=True, exist_ok=True)
    _start(cfg, "smtp", [sys.executable, "-m", "shared.dev.localstack", "mailcatcher", "--host", cfg.host,
                         "--port", str(cfg.smtp_port), "--dir", str(cfg.mail_dir)],
           marker="mailcatcher")
    return True


def _check_port_free(cfg: StackConfig, what: str, port: int) -> None:
    if port_open(cfg.host, port):
        raise StackError(f"port {cfg.host}:{port} ({what}) is already in use by a process this "
                         f"stack ({cfg.name}) did not start; stop it or choose another port "
                         f"(see `motcua local --help` for the MOTCUA_*_PORT variables)")


# --------------------------------------------------------------------------- services

@dataclass(frozen=True)
class ServiceSpec:
    name: str
    needs: tuple[str, ...]        # files (relative to the repo) that must exist
    argv: tuple[str, ...]         # after the python executable
    port_attr: str                # the port it serves: an API, or a worker's /metrics
    worker: bool = False          # a consumer: its port serves only Prometheus metrics


def _control_socket(cfg: StackConfig, service: str) -> tuple[str, ...]:
    """gunicorn >= 25.1 opens a control socket, by default one path ($HOME/.gunicorn/gunicorn.ctl)
    for every instance on the machine; each stack's API gets its own under `<state>/run/`
    (`gunicornc -s .local/dev/run/intake.ctl`), or none if that path is too long for a socket."""
    import gunicorn
    if tuple(getattr(gunicorn, "version_info", (0,))[:2]) < (25, 1):
        return ()
    path = cfg.state_dir / "run" / f"{service}.ctl"
    if len(str(path)) > 100:
        return ("--no-control-socket",)
    return ("--control-socket", str(path))


def service_specs(cfg: StackConfig) -> list[ServiceSpec]:
    def gunicorn(port_attr, target):
        port = getattr(cfg, port_attr)
        conf = REPO_ROOT / "services" / target.split(".")[1] / "gunicorn.conf.py"
        # a service's own gunicorn.conf.py (hooks, threads) when it has one; the command line
        # still decides the address and, on a small machine, a single worker
        extra = ("-c", str(conf)) if conf.exists() else ("--timeout", "60", "--graceful-timeout", "10")
        return ("-m", "gunicorn", *extra, *_control_socket(cfg, port_attr.split("_")[0]),
                "--bind", f"{cfg.host}:{port}", "--workers", "1", target)
    return [
        ServiceSpec("intake", ("services/intake/app.py",),
                    gunicorn("intake_port", "services.intake.app:create_app()"), "intake_port"),
        ServiceSpec("sla-worker", ("services/sla/__main__.py",),
                    ("-m", "services.sla", "worker", "--metrics-port", str(cfg.sla_metrics_port)),
                    "sla_metrics_port", worker=True),
        ServiceSpec("sla-api", ("services/sla/api.py",),
                    gunicorn("sla_port", "services.sla.api:create_app()"), "sla_port"),
        ServiceSpec("notify-worker", ("services/notify/__main__.py",),
                    ("-m", "services.notify", "worker", "--metrics-port", str(cfg.notify_metrics_port)),
                    "notify_metrics_port", worker=True),
        ServiceSpec("notify-api", ("services/notify/api.py",),
                    gunicorn("notify_port", "services.notify.api:create_app()"), "notify_port"),
        ServiceSpec("dashboard", ("services/dashboard/app.py",),
                    gunicorn("dashboard_port", "services.dashboard.app:create_app()"), "dashboard_port"),
    ]


def service_env(cfg: StackConfig) -> dict[str, str]:
    env = dict(os.environ)
    env.update(cfg.env())
    env.update({k: str(v) for k, v in cfg.extra_env.items()})
    env["PYTHONUNBUFFERED"] = "1"
    for var in ("NOTIFY_SECRET", "DASHBOARD_SECRET"):
        if env.get(var):
            continue
        # notify signs acknowledgement links, the dashboard its session cookies: a local stack
        # keeps one random secret each in its state
        secret_file = cfg.config_dir / var.lower()
        if not secret_file.exists():
            secret_file.parent.mkdir(parents=True, exist_ok=True)
            secret_file.write_text(uuid.uuid4().hex + uuid.uuid4().hex)
            secret_file.chmod(0o600)
        env[var] = secret_file.read_text().strip()
    env["PYTHONPATH"] = str(REPO_ROOT) + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    return env


def start_services(cfg: StackConfig, timeout: float = 60.0) -> dict[str, str]:
    """Start the services whose entry points exist; returns name -> what happened."""
    report: dict[str, str] = {}
    started: list[ServiceSpec] = []
    env = service_env(cfg)
    for spec in service_specs(cfg):
        missing = [p for p in spec.needs if not (REPO_ROOT / p).exists()]
        if missing:
            report[spec.name] = f"skipped: {', '.join(missing)} does not exist yet"
            continue
        if _read_pid(cfg, spec.name):
            report[spec.name] = "already running"
            continue
        if spec.port_attr:
            _check_port_free(cfg, spec.name, getattr(cfg, spec.port_attr))
        (cfg.state_dir / "run").mkdir(parents=True, exist_ok=True)     # gunicorn control sockets
        marker = " ".join(spec.argv[1:3]) if spec.worker else spec.argv[-1]
        _start(cfg, spec.name, [sys.executable, *spec.argv], env=env, marker=marker)
        started.append(spec)
    try:
        for spec in started:
            url = cfg.url(getattr(cfg, spec.port_attr))
            if spec.worker:
                # a worker serves only its metrics; it must answer there and still be alive
                _wait_healthy(cfg, spec.name, lambda u=url: http_healthy(u, path="/metrics"), timeout)
                if _read_pid(cfg, spec.name) is None:
                    raise StackError(f"{spec.name} exited; see {cfg.log_dir / (spec.name + '.log')}:\n"
                                     f"{_tail(cfg.log_dir / (spec.name + '.log'))}")
                report[spec.name] = f"started (worker), {url}/metrics answers"
            else:
                _wait_healthy(cfg, spec.name, lambda u=url: http_healthy(u), timeout)
                report[spec.name] = f"started, {url}/healthz answers"
    except BaseException:
        for spec in started:      # nothing half-started stays behind
            _stop(cfg, spec.name)
        raise
    return report


# --------------------------------------------------------------------------- the stack

INFRA = ("kafka", "ferretdb", "smtp")


def up(cfg: StackConfig, infra_only: bool = False, timeout: float = 120.0) -> dict[str, str]:
    """Start what is not running, wait until every part answers, write `<name>.env`."""
    for d in (cfg.pid_dir, cfg.log_dir, cfg.data_dir, cfg.mail_dir, cfg.config_dir):
        d.mkdir(parents=True, exist_ok=True)
    report: dict[str, str] = {}
    # download/build first (slow only once), then start all three so they boot in parallel
    provision(cfg)
    started = {"kafka": start_kafka(cfg), "ferretdb": start_ferretdb(cfg), "smtp": start_smtp(cfg)}
    checks = {
        "kafka": lambda: kafka_healthy(cfg.kafka_bootstrap),
        "ferretdb": lambda: mongo_healthy(cfg.mongo_uri),
        "smtp": lambda: smtp_healthy(cfg.host, cfg.smtp_port),
    }
    try:
        for name in INFRA:
            _wait_healthy(cfg, name, checks[name], timeout)
            report[name] = "started" if started[name] else "already running"
        create_topics(cfg)
        if not infra_only:
            report.update(start_services(cfg))
    except Exception:
        # leave nothing half-started that we started in this call
        for name, fresh in started.items():
            if fresh:
                _stop(cfg, name)
        raise
    write_env_file(cfg)
    return report


def write_env_file(cfg: StackConfig) -> Path:
    cfg.env_file.parent.mkdir(parents=True, exist_ok=True)
    tmp = cfg.env_file.with_suffix(".tmp")
    tmp.write_text(env_text(cfg))
    tmp.replace(cfg.env_file)
    return cfg.env_file


def env_text(cfg: StackConfig) -> str:
    import shlex
    return "".join(f"export {k}={shlex.quote(v)}\n" for k, v in cfg.env().items())


def down(cfg: StackConfig, wipe: bool = False) -> dict[str, str]:
    """Stop the services, then the infra; with `wipe`, delete data, logs and mail as well."""
    report = {}
    for name in [s.name for s in reversed(service_specs(cfg))] + list(reversed(INFRA)):
        if _stop(cfg, name):
            report[name] = "stopped"
    if cfg.env_file.exists():
        cfg.env_file.unlink()
    if wipe and cfg.state_dir.exists():
        shutil.rmtree(cfg.state_dir)
        report["state"] = f"deleted {cfg.state_dir}"
    return report


def status(cfg: StackConfig) -> list[dict]:
    """One row per component: running or not, pid, address, health."""
    rows = []
    checks = {
        "kafka": (cfg.kafka_bootstrap, lambda: kafka_healthy(cfg.kafka_bootstrap, 2.0)),
        "ferretdb": (cfg.mongo_uri, lambda: mongo_healthy(cfg.mongo_uri, 1.0)),
        "smtp": (f"{cfg.host}:{cfg.smtp_port}", lambda: smtp_healthy(cfg.host, cfg.smtp_port, 1.0)),
    }
    for spec in service_specs(cfg):
        url = cfg.url(getattr(cfg, spec.port_attr))
        if spec.worker:
            checks[spec.name] = (url + "/metrics", lambda u=url: http_healthy(u, 1.0, path="/metrics"))
        else:
            checks[spec.name] = (url, lambda u=url: http_healthy(u, 1.0))
    for name, (addr, check) in checks.items():
        pid = _read_pid(cfg, name)
        health = "-"
        if pid:
            try:
                health = "alive" if check is None else "healthy" if check() else "unhealthy"
            except Exception as exc:   # noqa: BLE001
                health = f"unhealthy ({type(exc).__name__})"
        rows.append({"name": name, "state": "running" if pid else "stopped", "pid": pid or "",
                     "address": addr, "health": health})
    return rows


# --------------------------------------------------------------------------- SMTP catcher

def run_mailcatcher(host: str, port: int, directory: Path) -> None:
    """Serve SMTP until SIGTERM/SIGINT; every message becomes `<time>-<id>.eml` in `directory`."""
    import threading

    from aiosmtpd.controller import Controller

    directory.mkdir(parents=True, exist_ok=True)

    class Handler:
        async def handle_DATA(self, server, session, envelope):
            name = f"{time.strftime('%Y%m%dT%H%M%S')}-{uuid.uuid4().hex[:8]}.eml"
            tmp = directory / (name + ".tmp")
            data = envelope.original_content or envelope.content
            if isinstance(data, str):
                data = data.encode("utf-8")
            # record the envelope too: Bcc recipients are only there
            header = (f"X-Envelope-From: {envelope.mail_from}\r\n"
                      f"X-Envelope-To: {', '.join(envelope.rcpt_tos)}\r\n").encode("utf-8")
            tmp.write_bytes(header + data)
            tmp.replace(directory / name)
            print(f"stored {name} for {len(envelope.rcpt_tos)} recipient(s)", flush=True)
            return "250 Message accepted for delivery"

    controller = Controller(Handler(), hostname=host, port=port, enable_SMTPUTF8=True)
    controller.start()
    print(f"mailcatcher listening on {host}:{port}, writing to {directory}", flush=True)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    stop.wait()
    controller.stop()


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m shared.dev.localstack")
    sub = parser.add_subparsers(dest="cmd", required=True)
    mc = sub.add_parser("mailcatcher", help="SMTP server storing each message as an .eml file")
    mc.add_argument("--host", default="127.0.0.1")
    mc.add_argument("--port", type=int, required=True)
    mc.add_argument("--dir", type=Path, required=True)
    sub.add_parser("provision", help="download the Kafka jars and build FerretDB, start nothing")
    args = parser.parse_args(argv)
    if args.cmd == "mailcatcher":
        run_mailcatcher(args.host, args.port, args.dir)
    elif args.cmd == "provision":
        try:
            provision(StackConfig.from_env())
        except StackError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
