"""Helpers of the compose tests (tests/compose): the run's lines of figures, the deploy/compose
scripts, and the probe that reads the stack's store from inside a container."""
from __future__ import annotations

import subprocess
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
FIGURES: list[str] = []


def figure(line: str) -> None:
    """Record a line of figures: printed now (with -s) and in the run's summary."""
    FIGURES.append(line)
    print(line, flush=True)


STORE_PROBE = r'''
import json, os, sys
from pymongo import MongoClient
from services.sla.repository import MongoRepository
from services.notify.store import NotifyStore

tag = sys.argv[1]
client = MongoClient(os.environ["MONGO_URI"], tz_aware=True, serverSelectionTimeoutMS=20000)
db = client[os.environ.get("MONGO_DB", "motcua")]
repo = MongoRepository.live(db)
match = {"_id": {"$regex": tag}}
events = {}
for d in repo.dossiers.find(match, {"events": 1}):
    events[d["_id"]] = [e["event_id"] for e in d.get("events", [])]
findings = {}
for f in repo.findings.find({"dossier_code": {"$regex": tag}}, {"rule": 1, "state": 1, "dossier_code": 1}):
    findings.setdefault(f["_id"], []).append(f.get("state"))
store = NotifyStore(db)
notifications = {}
for n in store.notifications.find({"finding_id": {"$in": list(findings)}}, {"channel": 1, "kind": 1}):
    notifications[str(n["_id"])] = n.get("channel")
sent = {}
for d in store.deliveries.find({"finding_id": {"$in": list(findings)}}):
    key = str(d.get("notification_id", d.get("notification", d.get("_id"))))
    sent.setdefault(key, []).append([d.get("outcome"), d.get("reclaimed", 0)])
print(json.dumps({"events": events, "findings": findings, "notifications": notifications,
                  "deliveries": sent}, default=str))
'''


def run_script(script: str, *args: str) -> None:
    """A deploy/compose script (idempotent, cached), failing the test with its output."""
    res = subprocess.run(["bash", str(REPO / "deploy" / "compose" / script), *args], cwd=REPO,
                         capture_output=True, text=True, timeout=3600)
    assert res.returncode == 0, f"deploy/compose/{script} failed:\n{res.stderr[-3000:]}"


# a script run inside notify-api: notifications waiting to be sent within the next 150 s (due now,
# retried soon, or leased by a sender that may have died: sent again when the lease ends)
QUEUE_PROBE = r'''
import json, os
from datetime import datetime, timedelta, timezone
from pymongo import MongoClient
from services.notify.store import NotifyStore

client = MongoClient(os.environ["MONGO_URI"], tz_aware=True, serverSelectionTimeoutMS=20000)
store = NotifyStore(client[os.environ.get("MONGO_DB", "motcua")])
soon = datetime.now(timezone.utc) + timedelta(seconds=150)
print(json.dumps(store.queue.count_documents({"due_at": {"$lte": soon}})))
'''
