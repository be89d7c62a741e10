"""docker-compose.yml and deploy/Dockerfile: structure checks (no Docker needed)."""
from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from shared.platform.config import ENV_VARS
from shared.dev.stackconfig import FERRETDB_BUILD, FERRETDB_VERSION, KAFKA_VERSION

REPO = Path(__file__).resolve().parents[2]
APP_SERVICES = {"intake", "sla-worker", "sla-api", "notify-worker", "notify-api", "dashboard"}
INFRA_SERVICES = {"kafka", "mongo", "mailpit"}
MONITORING_SERVICES = {"prometheus", "alertmanager"}
# variables the official images read (not our code)
IMAGE_VARS = re.compile(r"^(KAFKA_[A-Z_]+|MP_[A-Z_]+|MONGO_INITDB_[A-Z_]+)$")
# `${NAME:-default}`: an image chosen by a variable, the official one by default
IMAGE_CHOICE = re.compile(r"^\$\{([A-Z_]+_IMAGE):-([^}]+)\}$")


def default_image(image: str) -> str:
    m = IMAGE_CHOICE.match(image)
    return m.group(2) if m else image


@pytest.fixture(scope="module")
def compose() -> dict:
    return yaml.safe_load((REPO / "docker-compose.yml").read_text(encoding="utf-8"))


def variables_read_by_code() -> set[str]:
    """ENV_VARS plus every name the code reads directly from the environment."""
    names = set(ENV_VARS)
    pattern = re.compile(r"""(?:environ(?:\.get)?\s*[\[(]\s*|getenv\(\s*|\benv\(\s*)["']([A-Z][A-Z0-9_]+)["']""")
    for path in list((REPO / "services").rglob("*.py")) + list((REPO / "shared").rglob("*.py")):
        names.update(pattern.findall(path.read_text(encoding="utf-8")))
    return names


def test_all_services_present(compose):
    assert set(compose["services"]) >= APP_SERVICES | INFRA_SERVICES


def test_images_are_pinned(compose):
    for name, svc in compose["services"].items():
        image = svc.get("image")
        assert image, f"{name}: no image"
        repo, sep, tag = default_image(image).rpartition(":")
        assert sep and repo and tag, f"{name}: image {image!r} has no tag"
        assert tag != "latest" and "$" not in tag, f"{name}: image {image!r} is not pinned"
    services = compose["services"]
    assert default_image(services["kafka"]["image"]) == f"apache/kafka:{KAFKA_VERSION}"   # same as local
    assert default_image(services["mongo"]["image"]).startswith("mongo:7.0")


def test_every_image_variable_has_a_local_stand_in(compose):
    """deploy/compose/images.sh selects a stand-in for every image variable of the compose file
    (machines with no registry), and builds the same Kafka version."""
    variables = {IMAGE_CHOICE.match(svc["image"]).group(1) for svc in compose["services"].values()
                 if IMAGE_CHOICE.match(svc["image"])}
    assert variables >= {"KAFKA_IMAGE", "MONGO_IMAGE", "MAILPIT_IMAGE", "MOTCUA_IMAGE",
                         "PROMETHEUS_IMAGE", "ALERTMANAGER_IMAGE"}
    script = (REPO / "deploy" / "compose" / "images.sh").read_text(encoding="utf-8")
    local_env = script[script.index('cat > "$CACHE/local.env"'):]
    for var in variables | {"PYTHON_IMAGE"}:
        assert re.search(rf"^{var}=motcua-local/", local_env, re.M), f"images.sh selects no stand-in for {var}"
    versions = (REPO / "deploy" / "compose" / "versions.env").read_text(encoding="utf-8")
    assert f"KAFKA_VERSION={KAFKA_VERSION}\n" in versions
    # the FerretDB stand-in is the local stack's patched build (docs/ferretdb.md)
    assert f"FERRETDB_VERSION={FERRETDB_VERSION}\n" in versions
    assert f"FERRETDB_BUILD={FERRETDB_BUILD}\n" in versions


def test_published_ports_are_on_the_chosen_interface_only(compose):
    for name, svc in compose["services"].items():
        for port in svc.get("ports", []):
            assert port.startswith("${MOTCUA_BIND:-127.0.0.1}:"), f"{name}: {port} is published on every interface"


def test_every_service_has_a_healthcheck(compose):
    for name, svc in compose["services"].items():
        hc = svc.get("healthcheck")
        assert hc and hc.get("test"), f"{name}: no healthcheck"
        assert hc["test"][0] in ("CMD", "CMD-SHELL"), name


def test_kafka_runs_kraft_single_node(compose):
    env = compose["services"]["kafka"]["environment"]
    assert env["KAFKA_PROCESS_ROLES"] == "broker,controller"
    assert "ZOOKEEPER" not in " ".join(env)
    assert env["KAFKA_OFFSETS_TOPIC_REPLICATION_FACTOR"] == 1
    assert env["KAFKA_ADVERTISED_LISTENERS"] == "PLAINTEXT://kafka:9092"


def test_volumes_are_named_and_declared(compose):
    """Data lives in named volumes; the only files mounted from the repository are the monitoring
    configuration, read-only."""
    declared = set(compose["volumes"])
    used = set()
    for name, svc in compose["services"].items():
        for vol in svc.get("volumes", []):
            source = vol.split(":", 1)[0]
            if source.startswith((".", "/")):
                assert name in MONITORING_SERVICES and vol.endswith(":ro"), f"{name}: bind mount {vol!r}, use a named volume"
                assert source.startswith("./deploy/compose/monitoring/") and (REPO / source).is_file(), vol
                continue
            used.add(source)
    assert used == declared
    assert {"kafka-data", "mongo-data", "mail-data"} <= used


def test_every_service_restarts_and_rotates_its_logs(compose):
    for name, svc in compose["services"].items():
        assert svc.get("restart") == "unless-stopped", name
        assert svc.get("logging", {}).get("options", {}).get("max-size"), f"{name}: logs grow without bound"


def test_monitoring_is_a_profile_scraping_every_service(compose):
    services = compose["services"]
    for name in MONITORING_SERVICES:
        assert services[name]["profiles"] == ["monitoring"], name
    for name in APP_SERVICES | INFRA_SERVICES:
        assert "profiles" not in services[name], f"{name} must start without a profile"
    prom = yaml.safe_load((REPO / "deploy/compose/monitoring/prometheus.yml").read_text(encoding="utf-8"))
    jobs = {job["job_name"]: job for job in prom["scrape_configs"]}
    assert APP_SERVICES <= set(jobs)
    for name in APP_SERVICES:
        [sd] = jobs[name]["dns_sd_configs"]
        assert sd["names"] == [name]
        port = sd["port"]
        cmd = " ".join(services[name]["command"])
        env = services[name].get("environment", {})
        assert f"{port}" in cmd or f":{port}" in str(env.get("INTAKE_BIND", "")), f"{name}: scraped on {port}"
    for name in ("sla-worker", "notify-worker"):   # their /metrics listen on 127.0.0.1 unless told
        assert services[name]["environment"]["METRICS_BIND"] == "0.0.0.0", name
    rules = yaml.safe_load((REPO / "deploy/compose/monitoring/rules.yml").read_text(encoding="utf-8"))
    alerts = {r["alert"] for g in rules["groups"] for r in g["rules"]}
    assert alerts >= {"ServiceDown", "ConsumerLagGrowing", "DeadLetters", "NotificationsFailed",
                      "DetectionLagHigh"}
    # a service that is scraped is also watched: down (up == 0) and gone (absent)
    down = [r["expr"] for g in rules["groups"] for r in g["rules"] if r["alert"] == "ServiceDown"]
    for name in APP_SERVICES:
        assert any(re.search(rf'up\{{job=~"[^"]*\b{re.escape(name)}\b', e) for e in down), f"{name}: no ServiceDown when up == 0"
        assert any(f'absent(up{{job="{name}"}})' in e for e in down), f"{name}: no ServiceDown when absent"


def test_app_services_build_one_image_and_wait_for_healthy_infra(compose):
    builds = set()
    for name in APP_SERVICES:
        svc = compose["services"][name]
        assert svc["build"]["dockerfile"] == "deploy/Dockerfile"
        builds.add(svc["image"])
        deps = svc["depends_on"]
        assert deps["kafka"]["condition"] == deps["mongo"]["condition"] == "service_healthy"
        env = svc["environment"]
        assert env["KAFKA_BOOTSTRAP_SERVERS"] == "kafka:9092"
        assert env["MONGO_URI"].startswith("mongodb://mongo:27017")
    assert len(builds) == 1
    assert compose["services"]["notify-worker"]["environment"]["SMTP_HOST"].endswith("mailpit}")
    assert ":?" in compose["services"]["notify-api"]["environment"]["NOTIFY_SECRET"]   # required


def test_every_env_var_of_our_services_is_read_by_the_code(compose):
    known = variables_read_by_code()
    for name, svc in compose["services"].items():
        for var in svc.get("environment", {}):
            if name in INFRA_SERVICES:
                assert IMAGE_VARS.match(var), f"{name}: {var} is not a variable of its image"
            else:
                assert var in known, f"{name}: {var} is read by no code (typo, or add it to shared.platform.config.ENV_VARS)"


def test_commands_name_entry_points_that_exist(compose):
    for name in APP_SERVICES:
        cmd = compose["services"][name]["command"]
        if cmd[0] == "gunicorn":
            target = cmd[-1]
            module, _, call = target.partition(":")
            assert call == "create_app()", name
            assert (REPO / (module.replace(".", "/") + ".py")).exists(), f"{name}: {module} missing"
            if "-c" in cmd:
                assert (REPO / cmd[cmd.index("-c") + 1]).exists()
        else:
            assert cmd[:2] == ["python", "-m"] and cmd[3] == "worker", name
            assert (REPO / cmd[2].replace(".", "/") / "__main__.py").exists(), f"{name}: {cmd[2]} missing"


def test_dockerfile_copies_what_exists_and_pins_its_base():
    text = (REPO / "deploy" / "Dockerfile").read_text(encoding="utf-8")
    bases = re.findall(r"^FROM\s+(\S+)", text, re.M)
    assert bases and set(bases) == {"${PYTHON_IMAGE}"}, "every stage on the PYTHON_IMAGE build argument"
    default = re.search(r"^ARG PYTHON_IMAGE=(\S+)$", text, re.M).group(1)
    assert ":" in default and not default.endswith(":latest")
    for src in re.findall(r"^COPY\s+(?!--from)(.+?)\s+\S+$", text, re.M):
        for part in src.split():
            assert (REPO / part).exists(), f"Dockerfile copies {part}, which does not exist"
    assert re.search(r"^USER\s+(?!root|0\b)\S+", text, re.M), "the image must not run as root"
    assert "--require-hashes" in text and "deploy/requirements.lock" in text


def test_the_lock_pins_every_dependency_of_pyproject():
    """deploy/requirements.lock (the image's dependencies) satisfies pyproject.toml's ranges."""
    import tomllib

    from packaging.requirements import Requirement
    from packaging.version import Version

    pinned = {}
    for m in re.finditer(r"^([A-Za-z0-9_.-]+)==(\S+) \\$", (REPO / "deploy/requirements.lock").read_text(), re.M):
        pinned[m.group(1).lower().replace("_", "-")] = Version(m.group(2))
    project = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    for line in project["dependencies"]:
        req = Requirement(line)
        name = req.name.lower().replace("_", "-")
        assert name in pinned, f"{name} is not in deploy/requirements.lock (re-run pip-compile, docs/compose.md)"
        assert req.specifier.contains(pinned[name]), f"{name}=={pinned[name]} is outside {req.specifier}"
    # the project's own build backend is locked too: the image builds it offline
    assert {"setuptools", "wheel"} <= set(pinned)


def test_the_checker_would_catch_a_typo(compose):
    known = variables_read_by_code()
    assert "KAFKA_BOOTSTRAP_SERVERS" in known and "INTAKE_BIND" in known
    assert "KAFKA_BOOTSTRAP_SERVER" not in known and "MONGO_URL" not in known
