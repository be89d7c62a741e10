"""Dashboard pages at 100,000 dossiers (MOTCUA_DASHBOARD_PERF_N) on the configured store.

Seeds a fresh database: 60 template dossiers replayed by the sla code path (rebuild's replay:
engine, summary, findings; open, overdue, resolved early/on time/late, transferred, assigned,
with actors), cloned with new codes, agencies and dates spread over the last 12 months; plus
notifications for the findings, like notify writes them. Then times, in one process:
- baseline: what a page would cost querying the store directly (one filtered count on the
  dossiers, the sla API's on-time report, which reads every summary);
- the view's initial load (one scan per collection, once per process);
- each page through Flask's test client, median of 5 (the view loaded, REFRESH large).

    MOTCUA_PERF=1 .venv/bin/python -m pytest tests/perf/test_dashboard_perf.py -s

Seeding 10^5 dossiers on FerretDB takes long: with MOTCUA_DASHBOARD_PERF_DB=<name> the seeded
database is kept under that name and reused by the next run when it holds N dossiers (drop it by
hand when done).
"""
from __future__ import annotations

import copy
import os
import random
import resource
import statistics
import time
from datetime import datetime, timedelta

import pytest

from helpers.dashboard_seed import PROVINCE, SIBLING_A, event, received, replay, utc

pytestmark = pytest.mark.perf

N = int(os.environ.get("MOTCUA_DASHBOARD_PERF_N", "100000"))
NOW = utc(2026, 11, 10, 10, 0)
BASE = utc(2026, 11, 2, 9, 0)
AGENCIES = ["000.00.10.H56", "000.00.11.H56", "000.00.12.H56", "000.12.01.H56", "000.12.02.H56",
            "000.00.13.H56", "000.00.14.H56", "000.00.17.H56", "000.00.18.H56", "000.00.01.H56"]
PROCS = ["1.004873", "1.001022", "1.004837", "1.004884"]


def _templates(ctx) -> list[tuple[dict, list[dict]]]:
    out = []
    rng = random.Random(7)
    officer = {"id": "cb-1", "name": "Phạm Văn Cán Bộ"}
    for i in range(60):
        code = f"T{i:03d}-{SIBLING_A}"
        proc = PROCS[i % len(PROCS)]
        evs = [received(code, BASE, SIBLING_A, proc)]
        kind = i % 6
        if kind in (1, 2, 3, 4):
            evs.append(event(code, "dossier.assigned", BASE + timedelta(hours=2), SIBLING_A,
                             {"officer": officer}, {"id": "tp", "name": "Trưởng Phòng"}))
        if kind == 2:      # resolved early
            evs.append(event(code, "dossier.resolved", BASE + timedelta(days=1), SIBLING_A, {"outcome": "approved"},
                             officer))
        if kind == 3:      # resolved late
            evs.append(event(code, "dossier.resolved", BASE + timedelta(days=rng.randint(6, 9)), SIBLING_A,
                             {"outcome": "approved"}, officer))
        if kind == 4:      # transferred then resolved on time
            evs.append(event(code, "dossier.transferred", BASE + timedelta(hours=3), SIBLING_A,
                             {"to_agency_code": "000.00.10.H56"}))
            evs.append(event(code, "dossier.resolved", BASE + timedelta(days=2, hours=2), "000.00.10.H56",
                             {"outcome": "denied"}))
        out.append(replay(evs, BASE + timedelta(days=10), ctx))
    return out


def _shift(obj, delta: timedelta):
    if isinstance(obj, datetime):
        return obj + delta
    if isinstance(obj, dict):
        return {k: _shift(v, delta) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_shift(v, delta) for v in obj]
    return obj


def _seed(db, ctx, n: int) -> list[str]:
    rng = random.Random(11)
    templates = _templates(ctx)
    from services.notify.policy import load_policy
    from services.notify.routing import recipients_for
    from services.notify.store import SCHEDULE_DEFAULTS
    policy = load_policy(None)
    docs, finds, notes, codes, nf, alerted = [], [], [], [], [], []
    t0 = time.perf_counter()

    def flush(force=False):
        for coll, buf in ((db.dossiers, docs), (db.findings, finds), (db.notifications, notes),
                          (db.notify_findings, nf), (db.notify_alerted, alerted)):
            if buf and (force or len(buf) >= 500):
                coll.insert_many(buf, ordered=False)
                buf.clear()
    for i in range(n):
        doc0, finds0 = templates[i % len(templates)]
        back = timedelta(days=rng.randint(0, 360), hours=rng.randint(0, 6))
        delta = (NOW - BASE) - back - timedelta(days=8) if rng.random() < 0.9 else -timedelta(days=rng.randint(0, 7))
        agency = AGENCIES[i % len(AGENCIES)]
        code = f"{agency}-{i:07d}"
        doc = _shift(copy.deepcopy(doc0), delta)
        doc["_id"] = doc["dossier_code"] = code
        doc["agencies"] = sorted({agency} | set(doc["agencies"]) - {SIBLING_A})
        s = doc["summary"]
        if s.get("handling_agency") == SIBLING_A:
            s["handling_agency"] = agency
            doc["handling_agency_code"] = agency
        s["received_agency"] = agency
        doc["finding_ids"] = [f"{fid}-{i}" for fid in doc["finding_ids"]]
        docs.append(doc)
        codes.append(code)
        for f0 in finds0:
            f = _shift(copy.deepcopy(f0), delta)
            f["_id"] = f"{f0['_id']}-{i}"
            f["dossier_code"] = code
            if f["agency_code"] == SIBLING_A:
                f["agency_code"] = agency
            finds.append(f)
            # what notify stores for every finding: its state; for each critical alert sent: the
            # notification (texts shortened) and who was alerted
            nf.append({**SCHEDULE_DEFAULTS, **{k: f.get(k) for k in (
                "rule", "state", "severity", "dossier_code", "agency_code", "responsible_role",
                "detected_at", "due_at", "title")}, "_id": f["_id"], "revision": 1, "repeats": 0})
            route = policy.route(f["rule"], f["severity"])
            if route.mode != "digest" and f["severity"] == "critical":
                for r in recipients_for(f, route, policy, ctx.directory, 0):
                    if r.address is None:
                        continue
                    notes.append({"finding_id": f["_id"], "episode": 0, "recipient": r.id,
                                  "person": r.person, "level": 0, "kind": "alert", "seq": 0, "channel": r.channel,
                                  "agency_code": r.agency_code, "status": "sent", "created_at": f["detected_at"],
                                  "dossier_code": code, "subject": "Hồ sơ quá hạn " + code,
                                  "text": "x" * 300, "html": "<p>" + "y" * 300 + "</p>"})
                    alerted.append({"_id": f"{f['_id']}|0|{r.id}|0|alert", "finding_id": f["_id"],
                                    "recipient": r.id, "person": r.person, "channel": r.channel,
                                    "address": r.address, "agency_code": r.agency_code, "role": r.role,
                                    "recipient_name": r.name, "recipient_title": r.title, "target": None,
                                    "level": 0, "kind": "alert", "episode": 0})
        flush()
    flush(force=True)
    print(f"\nseeded {n:,} dossiers, {db.findings.estimated_document_count():,} findings, "
          f"{db.notifications.estimated_document_count():,} notifications in {time.perf_counter() - t0:.0f} s")
    return codes


def _median(fn, runs: int = 5) -> tuple[float, object]:
    times, out = [], None
    for _ in range(runs):
        t = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times), out


@pytest.fixture
def perf_db(mongo_client, mongo_db):
    """(database, seeded already): the test's fresh one, or the kept MOTCUA_DASHBOARD_PERF_DB."""
    name = os.environ.get("MOTCUA_DASHBOARD_PERF_DB")
    if not name:
        return mongo_db, False
    db = mongo_client[name]
    n = db.dossiers.estimated_document_count()
    if n and n != N:
        pytest.fail(f"{name} holds {n:,} dossiers, not {N:,}: drop it or choose another name")
    return db, n == N


def test_dashboard_pages_at_scale(perf_db, mongo_uri):
    import dataclasses

    from services.dashboard.app import create_app
    from services.sla.api import create_app as sla_app
    from shared.platform.auth import KeyStore
    from shared.platform.clock import VirtualClock
    from shared.platform.config import Settings
    from shared.domain.directory import default_directory
    from shared.domain.engine import default_context

    mongo_db, seeded = perf_db
    ctx = dataclasses.replace(default_context(), directory=default_directory())
    if not seeded:
        _seed(mongo_db, ctx, N)
    overdue_fid = mongo_db.notify_findings.find_one({"rule": "OVERDUE"})["_id"]
    clock = VirtualClock(NOW)
    key = KeyStore(mongo_db, clock).create(PROVINCE, "supervisor")[1]
    settings = Settings.from_env({"MONGO_URI": mongo_uri, "MONGO_DB": mongo_db.name})
    rows = []

    # baseline: querying the store for a page's numbers
    t, n = _median(lambda: len(list(mongo_db.notifications.find({"finding_id": overdue_fid}, {"_id": 1}))), runs=1)
    rows.append(("baseline: notifications of one finding by query", t, f"{n} found"))
    t, n = _median(lambda: mongo_db.dossiers.count_documents({"summary.handling_agency": SIBLING_A}), runs=1)
    rows.append(("baseline: one filtered count on dossiers", t, f"{n:,} dossiers"))
    sla = sla_app({"SETTINGS": settings, "DIRECTORY": ctx.directory, "CATALOG": ctx.catalog},
                  db=mongo_db, clock=clock).test_client()
    t, r = _median(lambda: sla.get("/v1/reports/on-time?from=2026-10-01&to=2026-10-31",
                                   headers={"Authorization": f"Bearer {key}"}), runs=1)
    assert r.status_code == 200
    rows.append(("baseline: sla API on-time report (reads every summary)", t, ""))

    rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    app = create_app(settings, clock, db=mongo_db,
                     config={"ENGINE_CTX": ctx, "DIRECTORY": ctx.directory, "CATALOG": ctx.catalog,
                             "SECRET_KEY": "perf", "REFRESH_SECONDS": 10**9, "FEED": False})
    c = app.test_client()
    page = c.get("/dang-nhap")
    import re
    tok = re.search(r'name="csrf_token" value="([^"]+)"', page.text).group(1)
    assert c.post("/dang-nhap", data={"csrf_token": tok, "key": key}).status_code == 302
    t = time.perf_counter()
    assert c.get("/").status_code == 200          # the first page loads the view
    rows.append(("dashboard: initial view load + overview (once per process)", time.perf_counter() - t,
                 f"RSS +{(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss0) / 1024:.0f} MB"))
    overdue_code = re.search(r'href="/ho-so/([^"]+)"', c.get("/ho-so?state=overdue").text).group(1)
    pages = [("overview /", "/"),
             ("overdue list", "/ho-so?state=overdue"),
             ("list: field + period + page 3", "/ho-so?field=T%C6%B0+ph%C3%A1p+%E2%80%93+H%E1%BB%99+t%E1%BB%8Bch"
                                                "&from=01/06/2026&to=30/09/2026&page=3"),
             ("list: agency subtree, rule OVERDUE", "/ho-so?agency=000.00.12.H56&rule=OVERDUE"),
             ("violations, critical unacknowledged", "/vi-pham?severity=critical&unacked=1"),
             ("dossier page", "/ho-so/" + overdue_code),
             ("Biểu 06 by agency, one month", "/bao-cao?from=2026-10-01&to=2026-10-31"),
             ("Biểu 06 by procedure, 12 months", "/bao-cao?from=2025-11-01&to=2026-11-10&group_by=procedure"),
             ("late report, one month, page 1", "/bao-cao/tre-han?from=2026-10-01&to=2026-10-31"),
             ("late report, same again (cached docs)", "/bao-cao/tre-han?from=2026-10-01&to=2026-10-31"),
             ("CSV export: overdue list", "/ho-so?state=overdue&format=csv"),
             ("xlsx export: Biểu 06", "/bao-cao?from=2026-10-01&to=2026-10-31&format=xlsx")]
    for name, path in pages:
        t, r = _median(lambda p=path: c.get(p), runs=1 if "same again" in name else 5)
        assert r.status_code == 200, (path, r.text[:500])
        rows.append((name, t, f"{len(r.get_data()):,} bytes"))
    print(f"\n{'what':58} {'seconds':>9}  note")
    for name, t, note in rows:
        print(f"{name:58} {t:9.3f}  {note}")
    for name, t, _ in rows:
        if name.startswith(("overview", "overdue list", "list:", "violations", "dossier page", "Biểu 06")):
            assert t < 1.0, f"{name}: {t:.3f} s"
