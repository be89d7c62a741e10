"""One partition count (TOPIC_PARTITIONS) for every path that creates the topics: the settings
the workers use, the local stack's topics and its broker's default for auto-created topics."""
from __future__ import annotations

from pathlib import Path

import pytest

from shared.dev import infra
from shared.dev.stackconfig import StackConfig, StackError
from shared.platform.config import ENV_VARS, Settings


@pytest.fixture(autouse=True)
def _no_host_setting(monkeypatch):
    for name in ("TOPIC_PARTITIONS", "TOPIC_EVENTS", "TOPIC_FINDINGS"):
        monkeypatch.delenv(name, raising=False)


def test_settings_name_every_topic_with_one_partition_count():
    assert ENV_VARS["TOPIC_PARTITIONS"][0] == "6"
    assert Settings.from_env({}).topics() == {"dossier.events": 6, "sla.findings": 6,
                                              "sla.findings.notify": 6,
                                              "dossier.events.dlq": 1, "sla.findings.dlq": 1}
    s = Settings.from_env({"TOPIC_PARTITIONS": "4", "TOPIC_EVENTS": "e", "TOPIC_FINDINGS": "f"})
    assert s.topics() == {"e": 4, "f": 4, "f.notify": 4, "e.dlq": 1, "f.dlq": 1}


@pytest.mark.parametrize("raw, message", [("0", "TOPIC_PARTITIONS must be at least 1"),
                                          ("-2", "TOPIC_PARTITIONS must not be negative"),
                                          ("six", "TOPIC_PARTITIONS='six' is not a whole number")])
def test_a_bad_partition_count_is_refused_by_name(raw, message):
    with pytest.raises(ValueError, match=message):
        Settings.from_env({"TOPIC_PARTITIONS": raw})
    with pytest.raises(StackError, match=message):
        infra.stack_settings(StackConfig(extra_env={"TOPIC_PARTITIONS": raw}))


@pytest.mark.parametrize("extra", [{}, {"TOPIC_PARTITIONS": "4"}])
def test_local_stack_creates_what_the_workers_create(extra):
    cfg = StackConfig(extra_env=extra)
    workers = Settings.from_env(extra)          # what services.sla/notify.worker pass to ensure_topics
    assert infra.stack_settings(cfg).topics() == workers.topics()
    props = infra.kafka_properties(cfg, Path("/tmp/data"))
    assert f"\nnum.partitions={workers.topic_partitions}\n" in props     # topics auto-created by a publish
