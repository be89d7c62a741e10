"""The test session's infrastructure plan (tests/conftest.py), both branches, for real: with the
stand-in images testcontainers starts them (generic containers with the official images'
variables); with images that cannot be had (no registry here), or no engine, the session says so
in its header and runs on the deploy/local process stack."""
from __future__ import annotations

import os
import subprocess
import sys

import pytest
from helpers.compose import REPO, figure, run_script

PROBE = "tests/compose/infra_probe.py"


def run_probe(extra_env: dict, *args: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items()
           if k not in ("KAFKA_BOOTSTRAP_SERVERS", "MONGO_URI", "MOTCUA_TEST_INFRA",
                        "MOTCUA_TEST_KAFKA_IMAGE", "MOTCUA_TEST_MONGO_IMAGE", "PYTEST_ADDOPTS")}
    env.update(extra_env)
    return subprocess.run([sys.executable, "-m", "pytest", "-p", "no:cacheprovider", PROBE, *args],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=900)


def header(res: subprocess.CompletedProcess) -> list[str]:
    return [line for line in res.stdout.splitlines() if line.startswith("infrastructure ")]


@pytest.fixture(scope="module")
def stand_ins():
    run_script("engine.sh")
    run_script("images.sh")
    return {"MOTCUA_TEST_KAFKA_IMAGE": "motcua-local/kafka:4.3.1",
            "MOTCUA_TEST_MONGO_IMAGE": "motcua-local/ferretdb:1.24.2-idfilter"}


def labelled_containers() -> list[str]:
    out = subprocess.run(["docker", "ps", "-aq", "--filter", "label=motcua.tests.pid"],
                         capture_output=True, text=True, check=True).stdout
    return out.split()


def test_the_plan_picks_an_image_the_engine_has(stand_ins):
    import importlib.util

    spec = importlib.util.spec_from_file_location("motcua_root_conftest", REPO / "tests" / "conftest.py")
    root = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = root       # its dataclasses look their module up
    spec.loader.exec_module(root)
    plan = root.plan_infra({})
    assert plan.kafka == "testcontainers" and plan.kafka_image in root.KAFKA_IMAGES, plan
    assert plan.mongo == "testcontainers" and plan.mongo_image in root.MONGO_IMAGES, plan
    absent = root.plan_infra({"MOTCUA_TEST_KAFKA_IMAGE": "motcua-local/absent:0"})
    assert absent.kafka == "local stack" and "not pullable" in absent.kafka_why, absent
    assert absent.mongo == "testcontainers"
    assert root.plan_infra({"MOTCUA_TEST_INFRA": "local"}).kafka == "local stack"
    assert root.plan_infra({"KAFKA_BOOTSTRAP_SERVERS": "h:1", "MONGO_URI": "mongodb://h:2/"}).kafka == "environment"


def test_testcontainers_run_the_stand_in_images(stand_ins):
    before = set(labelled_containers())
    res = run_probe(stand_ins, "-v")
    assert res.returncode == 0, res.stdout[-4000:] + res.stderr[-2000:]
    assert header(res) == [
        "infrastructure kafka: testcontainers motcua-local/kafka:4.3.1 (present on the engine)",
        "infrastructure mongo: testcontainers motcua-local/ferretdb:1.24.2-idfilter (present on the engine)"]
    assert "1 passed" in res.stdout
    assert set(labelled_containers()) <= before, "the session left its containers behind"
    figure(f"testcontainers branch: {header(res)}")


def test_images_that_cannot_be_had_fall_back_to_the_process_stack(stand_ins):
    res = run_probe({"MOTCUA_TEST_KAFKA_IMAGE": "motcua-local/absent-kafka:0",
                     "MOTCUA_TEST_MONGO_IMAGE": "motcua-local/absent-mongo:0"}, "-v")
    assert res.returncode == 0, res.stdout[-4000:] + res.stderr[-2000:]
    lines = header(res)
    assert len(lines) == 2 and all(": local stack (a Docker engine answers but not on the engine and "
                                   "not pullable" in line for line in lines), lines
    assert "deploy/local processes instead" in lines[0]
    figure(f"fallback branch: {lines[0][:160]}")


def test_no_engine_falls_back_to_the_process_stack():
    res = run_probe({"DOCKER_HOST": "unix:///nonexistent/docker.sock"}, "--collect-only")
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-2000:]
    assert header(res) == [
        "infrastructure kafka: local stack (no Docker engine answers: deploy/local processes)",
        "infrastructure mongo: local stack (no Docker engine answers: deploy/local processes)"]
