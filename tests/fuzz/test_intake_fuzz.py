"""Schemathesis against intake's own /openapi.json: ≥1000 generated requests, no 5xx.

Runs on the in-process app with fakes (InMemoryBus, mongomock) so that it is fast; the same
property on the real stack is in tests/integration/test_intake_api.py (fewer cases).
"""
import mongomock
import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings

from services.intake.app import create_app
from shared.platform.auth import KeyStore
from shared.domain.catalog import default_catalog
from shared.platform.clock import VirtualClock
from shared.platform.messaging import InMemoryBus

from helpers.intake import DEPT, NOW, directory

db = mongomock.MongoClient()["fuzz"]
bus = InMemoryBus()
app = create_app({"TESTING": True, "CATALOG": default_catalog(), "DIRECTORY": directory(),
                  "AUTH_LIMITER": False, "INTAKE_KEY_CACHE_S": "60"},
                 publisher=bus, clock=VirtualClock(NOW), db=db)
AUTH = {"Authorization": "Bearer " + KeyStore(db).create(DEPT, "counter")[1]}
schema = schemathesis.openapi.from_wsgi("/openapi.json", app)

CASES = {"n": 0, "by_status": {}}
# (path, method, cases, mode): positive = valid per the spec, negative = deliberately invalid
OPERATIONS = [("/v1/events", "POST", 500, "positive"), ("/v1/events", "POST", 250, "negative"),
              ("/v1/events:batch", "POST", 200, "positive"),
              ("/v1/events:batch", "POST", 100, "negative"),
              ("/v1/events/{event_id}", "GET", 100, "positive"),
              ("/v1/receipts/{event_id}", "GET", 50, "positive"),
              ("/v1/dossiers/{code}/receipt", "GET", 100, "positive"),
              ("/v1/dossiers/{code}/receipt", "GET", 50, "negative")]


@pytest.mark.parametrize("path,method,examples,mode", OPERATIONS)
def test_no_server_errors(path, method, examples, mode):
    strategy = schema[path][method].as_strategy(generation_mode=schemathesis.GenerationMode(mode))

    @settings(max_examples=examples, deadline=None, database=None,
              suppress_health_check=list(HealthCheck))
    @given(case=strategy)
    def run(case):
        response = case.call(headers=AUTH)
        CASES["n"] += 1
        CASES["by_status"][response.status_code] = CASES["by_status"].get(response.status_code, 0) + 1
        assert response.status_code < 500, (response.status_code, response.text[:500])
        assert response.headers["content-type"][0].startswith("application/json")
        if response.status_code >= 400:
            assert response.json()["errors"]
    run()


def test_enough_cases_ran():
    print("schemathesis cases by status:", CASES["by_status"])
    assert CASES["n"] >= 1000
    assert any(s in CASES["by_status"] for s in (200, 202))     # not only rejections
