"""Schemathesis against the sla and notify OpenAPI documents: every query and path parameter of
every endpoint, valid and deliberately malformed or extreme (dates in year 9999, huge integers,
unknown codes…), on the in-process apps (mongomock). No answer may be a 5xx; every error is the
JSON error body naming a field."""
from __future__ import annotations

from datetime import timedelta

import mongomock
import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings

from shared.platform.auth import KeyStore
from shared.domain.catalog import default_catalog
from shared.platform.clock import VirtualClock
from shared.platform.config import Settings
from shared.domain.directory import default_directory
from services.notify.api import create_app as notify_app
from services.notify.policy import load_policy
from services.sla.api import create_app as sla_app

from helpers.notify import MON_10H, Env, finding

ROOT = "000.00.00.H56"


def _sla():
    db = mongomock.MongoClient(tz_aware=True)["fuzz_sla"]
    clock = VirtualClock(MON_10H)
    keys = KeyStore(db, clock)
    db.dossiers.insert_one({"_id": "D-1", "dossier_code": "D-1", "agencies": ["000.00.10.H56"], "rev": 1,
                            "finding_ids": ["D-1:OVERDUE"],
                            "summary": {"received_at": MON_10H - timedelta(days=9), "handling_agency": "000.00.10.H56",
                                        "due_at": MON_10H - timedelta(days=2), "procedure_code": "1.001193"}})
    db.findings.insert_one({"_id": "D-1:OVERDUE", "dossier_code": "D-1", "agency_code": "000.00.10.H56",
                            "rule": "OVERDUE", "severity": "critical", "state": "open", "revision": 1,
                            "detected_at": MON_10H, "procedure_code": "1.001193"})
    app = sla_app({"TESTING": True, "SETTINGS": Settings.from_env({}), "DIRECTORY": default_directory(),
                   "CATALOG": default_catalog(), "KEY_STORE": keys}, db=db, clock=clock)
    return app, keys.create(ROOT, "admin")[1]


def _notify():
    env = Env(policy=load_policy())
    env.svc.handle(finding())
    env.svc.dispatch_due()
    keys = KeyStore(env.db, env.clock)
    app = notify_app({"TESTING": True, "DIRECTORY": env.directory, "POLICY": load_policy(), "KEY_STORE": keys,
                      "ENV": {"NOTIFY_SECRET": "s3cret"}}, db=env.db, clock=env.clock)
    return app, keys.create(ROOT, "admin")[1]


APPS = {"sla": _sla(), "notify": _notify()}
SCHEMAS = {name: schemathesis.openapi.from_wsgi("/openapi.json", app) for name, (app, _) in APPS.items()}
CASES = {"n": 0, "by_status": {}}
OPERATIONS = [
    ("sla", "/v1/findings", "GET", 60), ("sla", "/v1/reports/on-time", "GET", 60),
    ("sla", "/v1/dossiers/{code}", "GET", 15), ("sla", "/v1/dossiers/{code}/findings", "GET", 15),
    ("sla", "/v1/dossiers/{code}/deadline", "GET", 15),
    ("notify", "/v1/deliveries", "GET", 50), ("notify", "/v1/notifications", "GET", 50),
    ("notify", "/v1/findings/{finding_id}", "GET", 15), ("notify", "/v1/findings/{finding_id}/ack", "POST", 15),
    ("notify", "/v1/ack/{token}", "GET", 15), ("notify", "/v1/ack/{token}", "POST", 15),
]


# a token is any string: nothing in the document to violate, so no negative cases for it
CASES_TO_RUN = [(*op, mode) for op in OPERATIONS for mode in ("positive", "negative")
                if not (mode == "negative" and op[1] == "/v1/ack/{token}")]


@pytest.mark.parametrize("api,path,method,examples,mode", CASES_TO_RUN)
def test_no_server_errors(api, path, method, examples, mode):
    strategy = SCHEMAS[api][path][method].as_strategy(generation_mode=schemathesis.GenerationMode(mode))
    key = APPS[api][1]

    @settings(max_examples=examples, deadline=None, database=None, suppress_health_check=list(HealthCheck))
    @given(case=strategy)
    def run(case):
        response = case.call(headers={"Authorization": f"Bearer {key}", "Accept": "application/json"})
        CASES["n"] += 1
        CASES["by_status"][response.status_code] = CASES["by_status"].get(response.status_code, 0) + 1
        assert response.status_code < 500 or response.status_code == 503, (case.path, case.query,
                                                                            response.status_code, response.text[:300])
        if response.status_code >= 400:
            assert "field" in response.json()["errors"][0]
    run()


@pytest.mark.parametrize("query,field", [("to=9999-12-31", "to"), ("from=0001-01-01", "from")])
def test_extreme_report_dates_are_a_400_naming_the_field(query, field):
    app, key = APPS["sla"]
    r = app.test_client().get("/v1/reports/on-time?" + query, headers={"Authorization": f"Bearer {key}"})
    assert r.status_code == 400 and r.json["errors"][0]["field"] == field


def test_enough_cases_ran():
    print("schemathesis cases by status:", CASES["by_status"])
    assert CASES["n"] >= 500
    assert 200 in CASES["by_status"] and 422 in CASES["by_status"]
