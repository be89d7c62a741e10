"""The shared fixtures against the real infrastructure: Kafka, a MongoDB-wire server, SMTP."""
from __future__ import annotations

import smtplib
import time
import uuid
from email.message import EmailMessage

import pytest
from pymongo.errors import DuplicateKeyError

from shared.platform.messaging import KafkaPublisher, kafka_consumer


def test_topics_are_unique_and_carry_keyed_messages_in_order(kafka_bootstrap, topics):
    names = topics("events", "findings", partitions=3)
    assert names["events"] != names["findings"]
    again = topics("events")
    assert again["events"] != names["events"]

    publisher = KafkaPublisher(kafka_bootstrap)
    code = "000.00.17.H56-241105-0001"
    try:
        sent = [publisher.publish(names["events"], code, {"n": i, "text": "Hồ sơ đã tiếp nhận"})
                for i in range(5)]
    finally:
        publisher.close()
    assert len({p.partition for p in sent}) == 1            # one key, one partition
    assert [p.offset for p in sent] == sorted(p.offset for p in sent)

    consumer = kafka_consumer(kafka_bootstrap, [names["events"]], f"g-{uuid.uuid4().hex[:8]}",
                              session_timeout_ms=6000, heartbeat_interval_ms=1000)
    got = []
    deadline = time.monotonic() + 30
    try:
        while len(got) < 5 and time.monotonic() < deadline:
            for records in consumer.poll(timeout_ms=1000).values():
                got.extend(records)
        consumer.commit()
    finally:
        consumer.close()
    assert [r.key for r in got] == [code] * 5
    assert [r.value for r in got][0].decode("utf-8") == '{"n":0,"text":"Hồ sơ đã tiếp nhận"}'


def test_mongo_db_is_fresh_and_supports_what_the_code_uses(mongo_db, mongo_client):
    assert mongo_db.name not in {"admin", "motcua"}
    assert mongo_db.list_collection_names() == []
    coll = mongo_db["findings"]
    coll.create_index([("finding_id", 1)], unique=True)
    coll.insert_many([{"finding_id": f"f{i}", "agency": "H56" if i % 2 else "H57", "late": i}
                      for i in range(6)])
    with pytest.raises(DuplicateKeyError):
        coll.insert_one({"finding_id": "f1"})
    rows = list(coll.aggregate([
        {"$match": {"late": {"$gte": 1}}},
        {"$group": {"_id": "$agency", "late": {"$sum": "$late"}}},   # one $sum: see below
        {"$sort": {"_id": 1}},
    ]))
    assert rows == [{"_id": "H56", "late": 9}, {"_id": "H57", "late": 6}]


def _is_ferretdb(client) -> bool:
    return "ferretdbVersion" in client.admin.command("buildInfo")


def test_group_with_two_sums_quirk_of_ferretdb_is_still_there(mongo_db, mongo_client):
    """FerretDB v1.24 computes only the FIRST `$sum` accumulator of a `$group`; the others come
    back 0 (and `$max`/`$min` are not implemented). Code must use one `$sum` per `$group`
    (several pipelines, or count client-side). This test fails when a FerretDB upgrade fixes
    it, so the workaround can go; on MongoDB it checks the correct result."""
    coll = mongo_db["q"]
    coll.insert_many([{"a": "H56" if i % 2 else "H57", "late": i} for i in range(6)])
    rows = list(coll.aggregate([{"$group": {"_id": "$a", "n": {"$sum": 1}, "late": {"$sum": "$late"}}},
                                {"$sort": {"_id": 1}}]))
    if _is_ferretdb(mongo_client):
        assert rows == [{"_id": "H56", "n": 3, "late": 0}, {"_id": "H57", "n": 3, "late": 0}]
    else:
        assert rows == [{"_id": "H56", "n": 3, "late": 9}, {"_id": "H57", "n": 3, "late": 6}]


def test_mongo_db_names_differ_between_tests(mongo_db, request):
    assert request.node.name.replace("_", "")[:10] in mongo_db.name.replace("_", "")


def test_smtp_server_collects_messages_with_vietnamese_text(smtp_server):
    msg = EmailMessage()
    msg["From"] = "motcua@localhost"
    msg["To"] = "chutich@longan.gov.vn"
    msg["Subject"] = "Hồ sơ 000.00.17.H56-241105-0001 quá hạn"
    msg.set_content("Hồ sơ đã quá hạn giải quyết 3 giờ làm việc.")
    with smtplib.SMTP(smtp_server.host, smtp_server.port, timeout=10) as smtp:
        smtp.send_message(msg)
    [mail] = smtp_server.wait_for(1, timeout=10)
    assert mail.rcpt_tos == ["chutich@longan.gov.vn"]
    assert mail.subject == "Hồ sơ 000.00.17.H56-241105-0001 quá hạn"
    assert "quá hạn giải quyết 3 giờ" in mail.text()
    with pytest.raises(AssertionError, match="expected 2 e-mail"):
        smtp_server.wait_for(2, timeout=0.5)


def test_virtual_clock_is_aware_utc_and_moves_only_by_hand(virtual_clock):
    from datetime import timedelta, timezone

    t0 = virtual_clock.now()
    assert t0.tzinfo is not None and t0.utcoffset() == timedelta(0)
    assert virtual_clock.now() == t0
    assert virtual_clock.advance(timedelta(hours=2)) == t0 + timedelta(hours=2)
    assert t0.astimezone(timezone(timedelta(hours=7))).hour == 9


def test_ferretdb_is_the_build_whose_id_lookups_use_the_id_index(mongo_db, mongo_client):
    """The local FerretDB is built with FERRETDB_PATCHES (docs/ferretdb.md): without the patch a
    find, update or delete by `_id` scans the collection. On MongoDB there is nothing to check
    but that the lookups answer."""
    from shared.dev.stackconfig import FERRETDB_BUILD

    coll = mongo_db["ids"]
    coll.insert_many([{"_id": f"K-{i:04d}", "n": i} for i in range(50)])
    assert coll.find_one({"_id": "K-0049"})["n"] == 49
    assert coll.update_one({"_id": "K-0049"}, {"$set": {"n": -1}}).modified_count == 1
    assert coll.delete_one({"_id": "K-0048"}).deleted_count == 1
    assert coll.find_one({"_id": "K-0048"}) is None and coll.find_one({"_id": "K-0049"})["n"] == -1
    info = mongo_client.admin.command("buildInfo")
    if "ferretdbVersion" in info:
        assert info["ferretdbVersion"] == FERRETDB_BUILD, (
            f"FerretDB {info['ferretdbVersion']} is not the patched build {FERRETDB_BUILD}: "
            f"rebuild it (motcua local provision) and restart the stack")


def test_a_filter_on_id_and_other_fields_reads_by_the_id_index(mongo_db, mongo_client):
    """An optimistic-concurrency write filters on `_id` and a revision: it must match exactly as
    on MongoDB, and on our FerretDB build reach the `_id` index instead of scanning (patch 2 of
    FERRETDB_PATCHES, docs/ferretdb.md)."""
    coll = mongo_db["revs"]
    coll.insert_many([{"_id": f"D-{i:04d}", "rev": i % 3} for i in range(60)])
    assert coll.replace_one({"_id": "D-0059", "rev": 1}, {"rev": 9}).matched_count == 0   # stale
    assert coll.replace_one({"_id": "D-0059", "rev": 2}, {"rev": 3}).matched_count == 1
    assert coll.update_one({"_id": "D-0058", "rev": 0}, {"$set": {"x": 1}}).matched_count == 0
    assert coll.delete_one({"_id": "D-0057", "rev": 1}).deleted_count == 0
    assert coll.delete_one({"_id": "D-0057", "rev": 0}).deleted_count == 1
    assert [d["_id"] for d in coll.find({"_id": "D-0001", "$or": [{"rev": 0}, {"rev": 1}]})] == ["D-0001"]
    assert list(coll.find({"_id": "D-0001", "rev": {"$gt": 1}})) == []
    assert coll.find_one({"_id": "D-0059"})["rev"] == 3 and coll.count_documents({}) == 59
    if "ferretdbVersion" in mongo_client.admin.command("buildInfo"):
        plan = mongo_db.command("explain", {"find": "revs", "filter": {"_id": "D-0059", "rev": 3}})
        assert "USING INDEX" in " ".join(plan["queryPlanner"]["Plan"]), plan
