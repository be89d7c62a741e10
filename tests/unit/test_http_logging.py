"""Every API logs like intake: JSON lines on stderr, and a 500 writes a line (with the traceback)
carrying the request id that its body tells the caller to quote to ops."""
from __future__ import annotations

import json
import logging
from datetime import datetime, timezone

import mongomock
import pytest

from shared.platform.clock import VirtualClock
from shared.platform.config import Settings
from shared.domain.directory import directory_from_records
from shared.platform.httpapi import JsonFormatter

NOW = datetime(2024, 11, 5, 2, 0, tzinfo=timezone.utc)


@pytest.fixture
def fresh_logging():
    """The root logger as a new process has it (no JSON handler yet); restored afterwards."""
    root, kafka = logging.getLogger(), logging.getLogger("kafka")
    saved = (list(root.handlers), root.level, kafka.level)
    root.handlers[:] = [h for h in root.handlers if not isinstance(h.formatter, JsonFormatter)]
    yield
    root.handlers[:] = saved[0]
    root.setLevel(saved[1])
    kafka.setLevel(saved[2])


class BrokenKeys:
    """A key store with a bug: every lookup raises (not a store outage: a 500)."""

    def verify(self, secret):
        raise RuntimeError("key store bug")


def _sla():
    from services.sla.api import create_app
    app = create_app({"SETTINGS": Settings.from_env({}), "DIRECTORY": directory_from_records([]),
                      "CATALOG": [], "KEY_STORE": BrokenKeys()},
                     db=mongomock.MongoClient(tz_aware=True)["t"], clock=VirtualClock(NOW))
    return app, "/v1/findings"


def _notify():
    from services.notify.api import create_app
    app = create_app({"SETTINGS": Settings.from_env({}), "DIRECTORY": directory_from_records([]),
                      "KEY_STORE": BrokenKeys(), "ENV": {"NOTIFY_SECRET": "s" * 32}},
                     db=mongomock.MongoClient(tz_aware=True)["t"], clock=VirtualClock(NOW))
    return app, "/v1/deliveries"


def _intake():
    from services.intake.app import create_app
    from shared.domain.catalog import default_catalog
    from shared.platform.messaging import InMemoryBus

    app = create_app({"CATALOG": default_catalog(), "DIRECTORY": directory_from_records([])},
                     publisher=InMemoryBus(), clock=VirtualClock(NOW), db=mongomock.MongoClient()["t"])

    def boom():
        raise RuntimeError("a bug in a handler")
    app.add_url_rule("/v1/boom", "boom", boom)
    return app, "/v1/boom"


def _json_lines(text: str) -> list[dict]:
    out = []
    for line in text.splitlines():
        try:
            out.append(json.loads(line))
        except ValueError:
            continue
    return out


@pytest.mark.parametrize("make", [_sla, _notify, _intake], ids=["sla", "notify", "intake"])
def test_a_500_is_logged_with_the_request_id_its_body_quotes(make, fresh_logging, capfd):
    app, path = make()
    r = app.test_client().get(path, headers={"Authorization": "Bearer mck_abc_def"})
    assert r.status_code == 500
    rid = r.headers["X-Request-Id"]
    [err] = r.get_json()["errors"]
    assert err["code"] == "internal_error" and rid in err["message"]
    lines = _json_lines(capfd.readouterr().err)
    [error] = [x for x in lines if x.get("level") == "error"]
    assert error["request_id"] == rid and error["msg"] == "unhandled error"
    assert "RuntimeError" in error["exc"] and error["route"] == path
    [access] = [x for x in lines if x.get("msg") == "request"]
    assert access["request_id"] == rid and access["status"] == 500


def test_a_client_request_id_is_the_one_logged_and_quoted(fresh_logging, capfd):
    app, path = _sla()
    r = app.test_client().get(path, headers={"Authorization": "Bearer x", "X-Request-Id": "ops-ticket-42"})
    assert r.status_code == 500 and "ops-ticket-42" in r.get_json()["errors"][0]["message"]
    assert any(x.get("request_id") == "ops-ticket-42" and x.get("level") == "error"
               for x in _json_lines(capfd.readouterr().err))


def test_testing_apps_leave_the_process_logging_alone(fresh_logging):
    from services.sla.api import create_app
    create_app({"TESTING": True, "SETTINGS": Settings.from_env({}), "DIRECTORY": directory_from_records([]),
                "CATALOG": []}, db=mongomock.MongoClient(tz_aware=True)["t"], clock=VirtualClock(NOW))
    assert not any(isinstance(h.formatter, JsonFormatter) for h in logging.getLogger().handlers)
