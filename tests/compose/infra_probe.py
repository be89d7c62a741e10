"""Run by test_testcontainers.py in a pytest of its own: whatever the session's infrastructure
plan chose (testcontainers or the process stack), Kafka and the MongoDB-wire server work."""
from __future__ import annotations

import uuid


def test_kafka_and_mongo_answer(kafka_bootstrap, mongo_db, topics):
    from kafka import KafkaConsumer, KafkaProducer

    topic = topics("probe", partitions=1)["probe"]
    producer = KafkaProducer(bootstrap_servers=kafka_bootstrap.split(","))
    value = uuid.uuid4().hex.encode()
    producer.send(topic, value).get(timeout=30)
    producer.close()
    consumer = KafkaConsumer(topic, bootstrap_servers=kafka_bootstrap.split(","),
                             auto_offset_reset="earliest", consumer_timeout_ms=30000)
    try:
        assert value in [m.value for m in consumer]
    finally:
        consumer.close()
    mongo_db.probe.insert_one({"_id": 1, "v": "đã ghi"})
    assert mongo_db.probe.find_one({"_id": 1})["v"] == "đã ghi"
