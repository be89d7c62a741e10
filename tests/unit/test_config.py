"""One configuration mechanism: `Settings` types and checks every documented variable, intake's
included; an app's `config` overrides the environment by the same names."""
from __future__ import annotations

import pytest

from shared.platform.config import ENV_VARS, Settings


def test_intake_variables_are_typed_settings_with_the_documented_defaults():
    s = Settings.from_env({})
    assert s.intake_max_batch == int(ENV_VARS["INTAKE_MAX_BATCH"][0])
    assert s.intake_publish_timeout_s == float(ENV_VARS["INTAKE_PUBLISH_TIMEOUT_S"][0])
    assert Settings.from_env({"INTAKE_MAX_BATCH": "7", "INTAKE_RATE_SYNC_S": "0.5"}).intake_max_batch == 7
    assert Settings.from_env({"INTAKE_RATE_SYNC_S": "0.5"}).intake_rate_sync_s == 0.5


@pytest.mark.parametrize("name, raw, says", [
    ("INTAKE_MAX_BATCH", "many", "INTAKE_MAX_BATCH='many' is not a whole number"),
    ("INTAKE_PUBLISH_TIMEOUT_S", "soon", "INTAKE_PUBLISH_TIMEOUT_S='soon' is not a number"),
    ("INTAKE_KEY_CACHE_S", "-1", "INTAKE_KEY_CACHE_S must not be negative"),
    ("MONGO_TIMEOUT_MS", "1.5", "MONGO_TIMEOUT_MS='1.5' is not a whole number"),
])
def test_a_bad_value_is_refused_naming_the_variable(name, raw, says):
    with pytest.raises(ValueError, match=says.replace("(", r"\(").replace(".", r"\.")):
        Settings.from_env({name: raw})


def test_config_overrides_the_environment_by_variable_name_any_type():
    s = Settings.from_config({"INTAKE_MAX_BATCH": 3, "MONGO_DB": "x", "TESTING": True, "CATALOG": object()},
                             {"INTAKE_MAX_BATCH": "9", "INTAKE_RATE_LIMIT": "5"})
    assert (s.intake_max_batch, s.intake_rate_limit, s.mongo_db) == (3, 5, "x")


def test_intake_app_reads_its_limits_from_settings():
    from services.intake.app import create_app

    app = create_app({"TESTING": True, "INTAKE_MAX_BODY_BYTES": "1234", "INTAKE_MAX_BATCH": "2"})
    assert app.config["MAX_CONTENT_LENGTH"] == 1234
    assert app.extensions["intake"]["settings"].intake_max_batch == 2
    with pytest.raises(ValueError, match="INTAKE_RATE_LIMIT"):
        create_app({"TESTING": True, "INTAKE_RATE_LIMIT": "lots"})
