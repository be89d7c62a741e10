"""The reference-data alarm (issue 11, item 10) with the real legal engine, in memory: an event
the engine cannot apply because of the reference data is dead-lettered AND counted, logged at
ERROR without personal data, and handed to the ops alerts; other refusals stay plain dead letters."""
from __future__ import annotations

import json
import logging
import uuid
from datetime import datetime, timezone

import pytest

from shared.domain.catalog import default_catalog
from shared.platform.clock import VirtualClock
from shared.domain.directory import directory_from_records
from shared.domain.engine.context import EngineContext
from shared.domain.engine.ruledata import default_rulesets
from shared.platform.messaging import InMemoryBus, encode
from shared.domain.workcal import calendar_for
from services.sla.alarms import reference_data_problem
from services.sla.dlq import Origin
from services.sla.handlers import SlaHandler
from services.sla.projection import Incoming
from services.sla.repository import InMemoryRepository

T0 = datetime(2024, 11, 5, 1, 0, tzinfo=timezone.utc)
GOOD, BAD = "000.00.17.H56", "000.00.18.H56"


def ctx():
    directory = directory_from_records([
        {"code": GOOD, "name": "UBND phường 1", "office": "default"},
        {"code": BAD, "name": "UBND phường 2", "office": "defualt"},     # typo the import missed
    ], "old-import", check_offices=False)
    return EngineContext(catalog=default_catalog(), calendars=calendar_for,
                         rulesets=default_rulesets(), directory=directory)


def received(agency, when=T0):
    code = f"{agency}-241105-{uuid.uuid4().hex[:4]}"
    return {"event_id": str(uuid.uuid4()), "type": "dossier.received", "dossier_code": code,
            "occurred_at": when.isoformat(), "recorded_at": when.isoformat(), "agency_code": agency,
            "data": {"procedure_code": "1.001193", "channel": "direct",
                     "components": ["to-khai-khai-sinh", "giay-chung-sinh"],
                     "applicant": {"kind": "citizen", "name": "Nguyễn Văn A", "phone": "0901234567",
                                   "id_number": "079123456789"}}}


def incoming(ev, offset):
    return Incoming(ev["dossier_code"], encode(ev), 0, Origin("dossier.events", 0, offset))


class Recorded:
    def __init__(self):
        self.calls = []

    def record(self, alarms, now):
        self.calls.append((list(alarms), now))


@pytest.fixture
def handler():
    return SlaHandler(InMemoryRepository(), InMemoryBus(), "sla.findings", VirtualClock(T0), ctx(),
                      ops_alerts=Recorded())


def sample(h, reason):
    return h.metrics.registry.get_sample_value("sla_reference_data_errors_total", {"reason": reason})


def test_an_unknown_office_raises_the_alarm(handler, caplog):
    bad1, bad2, good = received(BAD), received(BAD), received(GOOD)
    with caplog.at_level(logging.WARNING, logger="motcua.sla"):
        rejected = handler.handle([incoming(bad1, 0), incoming(good, 1), incoming(bad2, 2)])
    assert [(r.item.key, r.reason) for r in rejected] == [(bad1["dossier_code"], "not_applicable"),
                                                          (bad2["dossier_code"], "not_applicable")]
    assert "unknown office 'defualt'" in rejected[0].error
    assert handler.repo.dossiers.keys() == {good["dossier_code"]}      # the good one applied
    assert sample(handler, "unknown_office") == 2.0
    # one ERROR line for the batch's problem, with codes only
    errors = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert len(errors) == 1 and errors[0].getMessage() == "reference data error: events dead-lettered"
    fields = errors[0].fields
    assert (fields["reason"], fields["subject"], fields["events"]) == ("unknown_office", "defualt", 2)
    assert fields["agency_codes"] == [BAD]
    assert set(fields["event_ids"]) == {bad1["event_id"], bad2["event_id"]}
    text = json.dumps(fields, ensure_ascii=False) + caplog.text
    for personal in ("0901234567", "079123456789", "Nguyễn Văn A"):
        assert personal not in text
    # handed to the ops alerts, at the handler clock's instant
    [(alarms, now)] = handler.ops_alerts.calls
    assert now == T0 and [a.dossier_code for a in alarms] == [bad1["dossier_code"], bad2["dossier_code"]]


def test_an_instant_the_calendar_does_not_cover_raises_the_alarm(handler):
    old = received(GOOD, when=datetime(2014, 6, 2, 2, 0, tzinfo=timezone.utc))
    rejected = handler.handle([incoming(old, 0)])
    assert [r.reason for r in rejected] == ["not_applicable"]
    assert sample(handler, "calendar_range") == 1.0


def test_other_refusals_are_dead_letters_only(caplog):
    from helpers.sla import FakeEngine, event      # refuses dossier.withdrawn (ValueError)
    h = SlaHandler(InMemoryRepository(), InMemoryBus(), "sla.findings", VirtualClock(T0), ctx=None,
                   engine=FakeEngine, ops_alerts=Recorded())
    with caplog.at_level(logging.WARNING, logger="motcua.sla"):
        rejected = h.handle([incoming(event("D-1", "dossier.withdrawn"), 0)])
    assert [r.reason for r in rejected] == ["not_applicable"]
    assert [r.getMessage() for r in caplog.records] == ["event not applicable"]
    assert caplog.records[0].levelno == logging.WARNING
    assert h.ops_alerts.calls == []
    assert sample(h, "unknown_office") is None


def test_reference_data_problems_are_told_apart():
    from shared.domain.workcal import CalendarConfigError, CalendarError, CalendarRangeError, UnknownOfficeError
    assert reference_data_problem(UnknownOfficeError("x", ["default"])) == ("unknown_office", "x")
    assert reference_data_problem(CalendarConfigError("o.yaml", "office 'a'", "", "bad")) == \
        ("calendar_config", "o.yaml")
    assert reference_data_problem(CalendarRangeError("2045"))[0] == "calendar_range"
    assert reference_data_problem(CalendarError("naive")) is None
    assert reference_data_problem(ValueError("x")) is None
