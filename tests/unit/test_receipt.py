"""The due date on the receipt slip (Mẫu 01): intake's 202 for a dossier.received carries the
engine's due date, rule set and catalog version, equal to what the sla service stores; the
receipt endpoint answers the Mẫu 01 data as JSON and as a printable Vietnamese page.
Intake on fakes (mongomock, InMemoryBus) feeding the real sla handler (InMemoryRepository) with
the real engine: tests/integration/test_receipt_stack.py does the same through Kafka and FerretDB."""
from __future__ import annotations

import random
import re
import uuid
from datetime import datetime, timedelta, timezone


from services.intake.openapi import example_event
from services.sla.handlers import SlaHandler
from services.sla.projection import Incoming
from services.sla.repository import InMemoryRepository
from shared.domain.catalog import default_catalog
from shared.platform.clock import VirtualClock
from shared.domain.engine import EngineContext, default_rulesets
from shared.platform.messaging import InMemoryBus, encode
from shared.domain.instants import TZ
from shared.domain.workcal import calendar_for

from helpers.intake import COMMUNE, DEPT, OTHER, PROVINCE, Env, directory

AGENCIES = (PROVINCE, DEPT, COMMUNE, OTHER)
CATALOG = default_catalog()          # loaded once: building it parses the YAML


def _received(rng: random.Random, n: int) -> dict:
    codes = CATALOG.codes()
    start = datetime(2018, 6, 21, tzinfo=TZ)
    span = int((datetime(2026, 12, 31, 23, 59, tzinfo=TZ) - start).total_seconds())
    at = start + timedelta(seconds=rng.randrange(span))
    e = example_event("dossier.received")
    e["event_id"] = str(uuid.UUID(int=rng.getrandbits(128), version=4))
    e["dossier_code"] = f"RND-{n:05d}"
    e["agency_code"] = rng.choice(AGENCIES)
    e["occurred_at"] = at.isoformat()
    e["data"]["procedure_code"] = rng.choice(codes)
    e["data"]["channel"] = rng.choice(["direct", "postal", "online", "vneid"])
    for k in ("appointment_at", "submitted_at"):
        e["data"].pop(k, None)
    return e


def _sla_due_dates(bus_messages) -> dict[str, datetime | None]:
    """Feed intake's Kafka messages to the real sla handler; the due dates it stores."""
    repo = InMemoryRepository()
    ctx = EngineContext(catalog=CATALOG, calendars=calendar_for, rulesets=default_rulesets(),
                        directory=directory())
    handler = SlaHandler(repo, InMemoryBus(), "sla.findings", VirtualClock(datetime(2027, 1, 4, tzinfo=timezone.utc)),
                         ctx)
    items = [Incoming(m.key, encode(m.value), 0) for m in bus_messages]
    for i in range(0, len(items), 100):
        handler.handle(items[i:i + 100])
    out = {}
    for m in bus_messages:
        doc = repo.get_dossier(m.value["dossier_code"])
        out[m.value["dossier_code"]] = doc.get("due_at")
    return out


def _iso(t):
    return None if t is None else t.astimezone(timezone.utc).isoformat()


def test_202_due_date_equals_what_sla_stores_for_1000_random_receipts_2018_2026():
    env = Env(INTAKE_MAX_BATCH="500")
    key = env.key(PROVINCE)
    rng = random.Random(20250701)
    events = [_received(rng, n) for n in range(1000)]
    receipts = {}
    for i in range(0, len(events), 250):
        r = env.post({"events": events[i:i + 250]}, key, "/v1/events:batch")
        assert r.status_code == 200 and r.get_json()["rejected"] == 0, r.get_json()
        for e, item in zip(events[i:i + 250], r.get_json()["results"]):
            assert item["status"] == 202
            receipts[e["dossier_code"]] = item["receipt"]
    stored = _sla_due_dates(env.published())
    assert len(stored) == 1000
    mismatches = [(c, receipts[c]["due_at"], _iso(stored[c])) for c in stored
                  if receipts[c]["due_at"] != _iso(stored[c])]
    assert not mismatches, mismatches[:5]
    # the sample covers both rule sets, nights and weekends, and procedures not yet in force
    rulesets = {r["ruleset"] for r in receipts.values()}
    assert rulesets == {"nd61-107", "nd118-2025"}
    assert sum(1 for r in receipts.values() if r["due_at"] is None) > 0
    assert all(r["catalog_version"] == CATALOG.version for r in receipts.values())
    for e in events:
        rec = receipts[e["dossier_code"]]
        local = datetime.fromisoformat(e["occurred_at"]).astimezone(TZ)
        assert rec["ruleset"] == ("nd118-2025" if local.date() >= datetime(2025, 7, 1).date() else "nd61-107")


def test_receipt_on_202_and_on_the_replayed_200_and_only_for_receipts():
    env = Env()
    key = env.key()
    e = example_event("dossier.received")
    e.update(event_id=str(uuid.uuid4()), occurred_at="2025-07-01T00:00:00+07:00")
    first = env.post(e, key).get_json()
    rec = first["receipt"]
    assert rec["ruleset"] == "nd118-2025" and rec["clock_model"] == "restart"
    assert rec["limit"] == "same-day" and rec["due_at_local"] == "17:00 ngày 01/07/2025"
    assert rec["receipt_url"] == f"/v1/receipts/{e['event_id']}"
    assert "01/07/2025" in rec["ruleset_reason"]
    assert env.post(e, key).get_json() == dict(first, duplicate=True)
    other = example_event("dossier.transferred")
    other["event_id"] = str(uuid.uuid4())
    assert "receipt" not in env.post(other, key).get_json()


def _post_118_receipt(env, key):
    e = example_event("dossier.received")
    e.update(event_id=str(uuid.uuid4()), dossier_code="M17.001.56-250708-AB0042",
             occurred_at="2025-07-08T15:30:00+07:00")
    e["data"].update(channel="vneid", components=["to-khai-khai-sinh", "giay-chung-sinh"],
                     digitized=["to-khai-khai-sinh"], handling_agency_code=COMMUNE)
    e["data"].pop("appointment_at")
    assert env.post(e, key).status_code == 202
    return e


def test_receipt_endpoint_json_has_the_mau_01_fields():
    env = Env()
    key = env.key()
    e = _post_118_receipt(env, key)
    r = env.client.get(f"/v1/receipts/{e['event_id']}", headers=key)
    assert r.status_code == 200, r.get_json()
    j = r.get_json()
    assert j["form"] == {"number": "01", "title": "Giấy tiếp nhận hồ sơ và hẹn trả kết quả",
                         "circular": "Thông tư 03/2025/TT-VPCP"}
    assert j["dossier_code"] == "M17.001.56-250708-AB0042" and j["dossier_code_format"] == "tt04-2025"
    assert j["procedure"] == {"code": "1.001193", "name": "Đăng ký khai sinh", "field": "Tư pháp – Hộ tịch"}
    assert [c["id"] for c in j["components"]] == ["to-khai-khai-sinh", "giay-chung-sinh"]
    assert j["components"][0]["digitized"] and j["components"][1]["name"] == "Giấy chứng sinh"
    assert j["received_at"] == "2025-07-08T08:30:00+00:00"
    # same-day after 15:00 -> the end of the next working day (Wed 09/7/2025 17:00)
    assert j["due_at"] == "2025-07-09T10:00:00+00:00" and j["due_at_local"] == "17:00 ngày 09/07/2025"
    assert j["receiving_unit"] == {"code": DEPT, "name": "Sở Tư pháp",
                                   "parent": {"code": PROVINCE, "name": "UBND tỉnh Long An"}}
    assert j["handling_agency"]["code"] == COMMUNE and j["ruleset"] == "nd118-2025"
    assert j["applicant"] == {"kind": "citizen", "name": "Nguyễn Văn An"}     # no id number, phone, e-mail
    assert j["due_at"] == env.post(e, key).get_json()["receipt"]["due_at"]


def test_receipt_page_is_printable_vietnamese_with_its_fields():
    env = Env()
    key = env.key()
    e = _post_118_receipt(env, key)
    r = env.client.get(f"/v1/receipts/{e['event_id']}/print", headers=key)
    assert r.status_code == 200 and r.mimetype == "text/html"
    page = r.get_data(as_text=True)
    for text in ("GIẤY TIẾP NHẬN HỒ SƠ VÀ HẸN TRẢ KẾT QUẢ", "Mẫu số 01 — Thông tư 03/2025/TT-VPCP",
                 "CỘNG HÒA XÃ HỘI CHỦ NGHĨA VIỆT NAM", "Mã hồ sơ: M17.001.56-250708-AB0042",
                 "SỞ TƯ PHÁP", "UBND TỈNH LONG AN", "Nguyễn Văn An", "Đăng ký khai sinh",
                 "Giấy chứng sinh", "Hình thức nộp: Trực tuyến qua ứng dụng VNeID",
                 "Thời gian nhận hồ sơ: 15 giờ 30 phút, ngày 08 tháng 07 năm 2025",
                 "Thời gian trả kết quả giải quyết hồ sơ: 17 giờ 00 phút, ngày 09 tháng 07 năm 2025",
                 "NGƯỜI TIẾP NHẬN HỒ SƠ", "nd118-2025"):
        assert text in page, text
    assert "<script" not in page and not re.search(r"0909|@example", page)


def test_receipt_endpoint_errors():
    env = Env()
    key = env.key()
    e = _post_118_receipt(env, key)
    assert env.client.get("/v1/receipts/not-a-uuid", headers=key).status_code == 422
    assert env.client.get(f"/v1/receipts/{uuid.uuid4()}", headers=key).status_code == 404
    assert env.client.get(f"/v1/receipts/{e['event_id']}", headers=env.key(OTHER)).status_code == 404
    assert env.client.get(f"/v1/receipts/{e['event_id']}").status_code == 401
    t = example_event("dossier.transferred")
    t["event_id"] = str(uuid.uuid4())
    env.post(t, key)
    r = env.client.get(f"/v1/receipts/{t['event_id']}", headers=key)
    assert r.status_code == 409 and r.get_json()["errors"][0]["code"] == "not_a_receipt"

