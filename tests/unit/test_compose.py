"""docker-compose.yml and deploy/Dockerfile: structure checks (no Docker needed)."""
from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from shared.platform.config import ENV_VARS
from shared.dev.localstack import KAFKA_VERSION

REPO = Path(__file__).resolve().parents[2]
APP_SERVICES = {"intake", "sla-worker", "sla-api", "notify-worker", "notify-api"}
INFRA_SERVICES = {"kafka", "mongo", "mailpit"}
# variables the official images read (not our code)
IMAGE_VARS = re.compile(r"^(KAFKA_[A-Z_]+|MP_[A-Z_]+|MONGO_INITDB_[A-Z_]+)$")


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
        repo, sep, tag = image.rpartition(":")
        assert sep and repo and tag, f"{name}: image {image!r} has no tag"
        assert tag != "latest" and not tag.startswith("$"), f"{name}: image {image!r} is not pinned"
    assert compose["services"]["kafka"]["image"] == f"apache/kafka:{KAFKA_VERSION}"   # same as local
    assert compose["services"]["mongo"]["image"].startswith("mongo:7.0")


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
    declared = set(compose["volumes"])
    used = set()
    for name, svc in compose["services"].items():
        for vol in svc.get("volumes", []):
            source = vol.split(":", 1)[0]
            assert not source.startswith((".", "/")), f"{name}: bind mount {vol!r}, use a named volume"
            used.add(source)
    assert used == declared
    assert {"kafka-data", "mongo-data"} <= used


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
    base = re.search(r"^FROM\s+(\S+)", text, re.M).group(1)
    assert ":" in base and not base.endswith(":latest")
    for src in re.findall(r"^COPY\s+(.+?)\s+\S+$", text, re.M):
        for part in src.split():
            assert (REPO / part).exists(), f"Dockerfile copies {part}, which does not exist"
    assert re.search(r"^USER\s+(?!root)\S+", text, re.M), "the image must not run as root"


def test_the_checker_would_catch_a_typo(compose):
    known = variables_read_by_code()
    assert "KAFKA_BOOTSTRAP_SERVERS" in known and "INTAKE_BIND" in known
    assert "KAFKA_BOOTSTRAP_SERVER" not in known and "MONGO_URL" not in known
