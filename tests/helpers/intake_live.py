"""Intake on the real broker and store, driven through Flask's test client."""
from __future__ import annotations

import time
import uuid

from services.intake.app import create_app
from shared.platform.auth import KeyStore
from shared.domain.catalog import default_catalog
from shared.platform.clock import VirtualClock
from shared.domain.directory import directory_from_records
from shared.platform.messaging import kafka_consumer

from helpers.intake import DEPT, NOW, directory_records


class Live:
    def __init__(self, kafka, mongo_uri, db, topic, **cfg):
        self.topic, self.db, self.kafka = topic, db, kafka
        self.clock = VirtualClock(NOW)
        config = {"TESTING": True, "KAFKA_BOOTSTRAP_SERVERS": kafka, "MONGO_URI": mongo_uri,
                  "MONGO_DB": db.name, "TOPIC_EVENTS": topic, "CATALOG": default_catalog(),
                  "DIRECTORY": directory_from_records(directory_records()),
                  "INTAKE_KEY_CACHE_S": "0", "INTAKE_PUBLISH_TIMEOUT_S": "3", **cfg}
        self.app = create_app(config, clock=self.clock)
        self.client = self.app.test_client()
        self.keys = KeyStore(db, self.clock)

    def key(self, agency=DEPT, role="counter"):
        return {"Authorization": "Bearer " + self.keys.create(agency, role)[1]}

    def post(self, body, headers, path="/v1/events"):
        return self.client.post(path, json=body, headers=headers)

    def consume(self, n, timeout=30):
        consumer = kafka_consumer(self.kafka, [self.topic], f"g-{uuid.uuid4().hex[:8]}",
                                  session_timeout_ms=6000, heartbeat_interval_ms=1000)
        out, deadline = [], time.monotonic() + timeout
        try:
            while len(out) < n and time.monotonic() < deadline:
                for records in consumer.poll(timeout_ms=500).values():
                    out.extend(records)
        finally:
            consumer.close()
        return out

    def close(self):
        self.app.extensions["intake"]["resources"].close()
