"""Run inside the sla-api container (`docker compose exec -T sla-api python -u -c <this file>`) for
the whole test session: answers one JSON request per stdin line with one JSON line, so that the
tests' waits poll Kafka and the store through one long-lived process (a client per poll would
start a JVM or a Python each time and slow down the workers being waited for).

Requests: {"op": "group", "group": ..., "topic": ...} -> {"assigned", "lag", "committed", "members",
                                                          "state", "partitions"}
          {"op": "due", "within_s": ...}               -> {"due": notifications due that soon}
          {"op": "store", "tag": ...}                   -> events, findings, notifications,
                                                           deliveries of dossiers whose code has tag
An error answers {"error": "..."}; the client decides whether to ask again.
"""
import json
import os
import sys
from datetime import datetime, timedelta, timezone

BOOTSTRAP = os.environ["KAFKA_BOOTSTRAP_SERVERS"].split(",")
_kafka = {}
_db = []


def kafka():
    from kafka import KafkaConsumer
    from kafka.admin import KafkaAdminClient

    if not _kafka:
        _kafka["admin"] = KafkaAdminClient(bootstrap_servers=BOOTSTRAP, request_timeout_ms=10000,
                                           client_id="compose-tests-probe")
        _kafka["consumer"] = KafkaConsumer(bootstrap_servers=BOOTSTRAP, request_timeout_ms=10000,
                                           client_id="compose-tests-probe")
    return _kafka["admin"], _kafka["consumer"]


def db():
    from pymongo import MongoClient

    if not _db:
        client = MongoClient(os.environ["MONGO_URI"], tz_aware=True, serverSelectionTimeoutMS=20000)
        _db.append(client[os.environ.get("MONGO_DB", "motcua")])
    return _db[0]


def group(req):
    from kafka import TopicPartition

    admin, consumer = kafka()
    topic = req["topic"]
    parts = consumer.partitions_for_topic(topic) or set()
    tps = [TopicPartition(topic, p) for p in sorted(parts)]
    ends = consumer.end_offsets(tps) if tps else {}
    committed = admin.list_group_offsets(req["group"]).get(req["group"], {})   # kafka-python 3.x
    lag = total = 0
    for tp in tps:
        done = committed.get(tp)
        done = done.offset if done is not None and done.offset >= 0 else 0
        lag += max(0, ends.get(tp, 0) - done)
        total += done
    info = admin.describe_groups([req["group"]]).get(req["group"], {})
    assigned, members = set(), 0
    for m in info.get("members") or []:
        members += 1
        for a in (m.get("member_assignment") or {}).get("assigned_partitions") or []:
            if a.get("topic") == topic:
                assigned.update(a.get("partitions") or [])
    return {"assigned": len(assigned), "lag": lag, "committed": total, "members": members,
            "state": info.get("group_state"), "partitions": len(tps)}


def due(req):
    from services.notify.store import NotifyStore

    soon = datetime.now(timezone.utc) + timedelta(seconds=float(req["within_s"]))
    return {"due": NotifyStore(db()).queue.count_documents({"due_at": {"$lte": soon}})}


def store(req):
    from services.notify.store import NotifyStore
    from services.sla.repository import MongoRepository

    tag = req["tag"]
    repo = MongoRepository.live(db())
    events = {d["_id"]: [e["event_id"] for e in d.get("events", [])]
              for d in repo.dossiers.find({"_id": {"$regex": tag}}, {"events": 1})}
    findings = {}
    for f in repo.findings.find({"dossier_code": {"$regex": tag}}, {"state": 1}):
        findings.setdefault(f["_id"], []).append(f.get("state"))
    ns = NotifyStore(db())
    notifications = {str(n["_id"]): n.get("channel")
                     for n in ns.notifications.find({"finding_id": {"$in": list(findings)}}, {"channel": 1})}
    deliveries = {}
    for d in ns.deliveries.find({"finding_id": {"$in": list(findings)}}):
        key = str(d.get("notification_id", d.get("notification", d.get("_id"))))
        deliveries.setdefault(key, []).append([d.get("outcome"), d.get("reclaimed", 0)])
    return {"events": events, "findings": findings, "notifications": notifications,
            "deliveries": deliveries}


OPS = {"group": group, "due": due, "store": store}

print(json.dumps({"ready": True}), flush=True)
for line in sys.stdin:
    req = None
    try:
        req = json.loads(line)
        out = OPS[req["op"]](req)
    except Exception as exc:   # noqa: BLE001 - reported to the client, which retries or fails
        if isinstance(req, dict) and req.get("op") == "group":
            for client in _kafka.values():   # a restarted broker: connect again on the next request
                try:
                    client.close()
                except Exception:   # noqa: BLE001
                    pass
            _kafka.clear()
        out = {"error": f"{type(exc).__name__}: {exc}"[:500]}
    print(json.dumps(out, default=str), flush=True)
