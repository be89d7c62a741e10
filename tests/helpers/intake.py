"""Fixture data and builders of the intake tests: a small agency tree, example events, and the
intake app on fakes (InMemoryBus, mongomock, VirtualClock)."""
import uuid
from datetime import datetime, timezone

import mongomock

from services.intake.app import create_app
from services.intake.openapi import example_event
from shared.platform.auth import KeyStore
from shared.domain.catalog import default_catalog
from shared.platform.clock import VirtualClock
from shared.domain.directory import directory_from_records
from shared.platform.messaging import InMemoryBus

TOPIC = "dossier.events.test"
PROVINCE, DEPT, COMMUNE, OTHER = "000.00.00.H56", "000.00.17.H56", "000.17.31.H56", "000.00.18.H56"
NOW = datetime(2024, 11, 5, 1, 20, tzinfo=timezone.utc)


def directory_records() -> list[dict]:
    return [
        {"code": PROVINCE, "name": "UBND tỉnh Long An", "parent": None},
        {"code": DEPT, "name": "Sở Tư pháp", "parent": PROVINCE},
        {"code": COMMUNE, "name": "UBND xã Tân Lập", "parent": DEPT},
        {"code": OTHER, "name": "Sở Xây dựng", "parent": PROVINCE},
    ]


def directory():
    return directory_from_records(directory_records())


def ev(etype="dossier.received", **over):
    e = example_event(etype)
    e["event_id"] = str(uuid.uuid4())
    e.update(over)
    return e


class Env:
    def __init__(self, **cfg):
        self.bus = InMemoryBus()
        self.db = mongomock.MongoClient()["intake_unit"]
        self.clock = VirtualClock(NOW)
        config = {"TESTING": True, "TOPIC_EVENTS": TOPIC, "CATALOG": default_catalog(),
                  "DIRECTORY": directory(), "INTAKE_KEY_CACHE_S": "0", **cfg}
        self.app = create_app(config, publisher=self.bus, clock=self.clock, db=self.db)
        self.client = self.app.test_client()
        self.keys = KeyStore(self.db, self.clock)

    def key(self, agency=DEPT, role="counter"):
        return {"Authorization": "Bearer " + self.keys.create(agency, role)[1]}

    def post(self, body, headers, path="/v1/events"):
        return self.client.post(path, json=body, headers=headers)

    def published(self):
        return self.bus.messages(TOPIC)
