"""Dossiers for dashboard tests, stored exactly as the sla service stores them: events replayed
by the rebuild's code path (`services.sla.rebuild.replay_dossier`: engine, summary, findings),
findings handed to the notify service as `sla.findings` messages (its store, its plans)."""
from __future__ import annotations

import json
import uuid
from datetime import datetime, timedelta, timezone

from shared.contracts.events import to_wire

SIBLING_A = "000.00.17.H56"      # UBND phường Tân An
SIBLING_B = "000.00.18.H56"      # UBND xã Đức Hòa
PROVINCE = "000.00.00.H56"
PROC_3WD = "1.004873"            # Cấp Giấy xác nhận tình trạng hôn nhân, 3wd, Tư pháp – Hộ tịch


def event(code: str, type_: str, at: datetime, agency: str, data: dict, actor: dict | None = None) -> dict:
    e = {"event_id": str(uuid.uuid4()), "type": type_, "dossier_code": code, "occurred_at": at.isoformat(),
         "agency_code": agency, "data": data}
    if actor:
        e["actor"] = actor
    return e


def received(code: str, at: datetime, agency: str, procedure: str = PROC_3WD, actor: dict | None = None) -> dict:
    return event(code, "dossier.received", at, agency,
                 {"procedure_code": procedure, "channel": "direct", "components": ["to-khai-xac-nhan-tthn"],
                  "digitized": [], "applicant": {"kind": "citizen", "name": "Trần Thị Mai",
                                                 "id_number": "080123456789", "phone": "0912345678"}},
                 actor or {"id": "cb-tn", "name": "Nguyễn Thị Tiếp Nhận", "role": "một cửa"})


def replay(events: list[dict], now: datetime, ctx) -> tuple[dict, list[dict]]:
    """(dossier document, finding documents) of one dossier's events, as the sla worker stores them."""
    import shared.domain.engine as engine
    from services.sla.projection import Incoming
    from services.sla.rebuild import replay_dossier

    items = []
    for e in events:
        wire = dict(to_wire(e), recorded_at=e["occurred_at"])
        items.append(Incoming(e["dossier_code"], json.dumps(wire).encode(), 0))
    rejected, doc, findings = replay_dossier(events[0]["dossier_code"], items, now, ctx, engine)
    assert rejected == 0 and doc is not None
    return doc, findings


def store(db, docs: list[dict], findings: list[dict]) -> None:
    if docs:
        db.dossiers.insert_many(docs)
    if findings:
        db.findings.insert_many(findings)


def notify(db, findings: list[dict], directory, clock) -> None:
    """Hand the findings to the notify service (as `sla.findings` messages): its store and plans."""
    from services.notify.policy import load_policy
    from services.notify.service import NotifyService
    from services.notify.store import NotifyStore
    from services.sla.api import jsonable
    from services.sla.repository import finding_message

    svc = NotifyService(NotifyStore(db), load_policy(None), directory, {}, clock, secret="s")
    for f in findings:
        svc.handle(jsonable(finding_message(f)))


def utc(y, m, d, h=9, mi=0) -> datetime:
    """A Vietnam wall-clock time as UTC."""
    return datetime(y, m, d, h, mi, tzinfo=timezone(timedelta(hours=7))).astimezone(timezone.utc)
