"""The sla read API and the on-time report on mongomock (tenancy, paging, validation, figures)."""
from __future__ import annotations

import csv
import io
from datetime import datetime, timedelta, timezone

import mongomock
import pytest

from shared.platform.auth import KeyStore
from shared.platform.clock import VirtualClock
from shared.platform.config import Settings
from shared.domain.directory import directory_from_records
from shared.domain.instants import TZ
from services.sla.api import create_app
from services.sla.reports import Params, tally

NOW = datetime(2024, 11, 30, 3, 0, tzinfo=timezone.utc)
PROV, DEPT, COMMUNE, OTHER = "000.00.00.H56", "000.00.17.H56", "000.01.17.H56", "000.00.99.H99"


def local(y, m, d, h=9, mi=0):
    return datetime(y, m, d, h, mi, tzinfo=TZ).astimezone(timezone.utc)


@pytest.fixture
def env():
    db = mongomock.MongoClient(tz_aware=True)["t"]
    directory = directory_from_records([
        {"code": PROV, "name": "UBND tỉnh Long An", "parent": None},
        {"code": DEPT, "name": "Sở Tư pháp", "parent": PROV},
        {"code": COMMUNE, "name": "UBND xã A", "parent": DEPT},
        {"code": OTHER, "name": "Tỉnh khác", "parent": None},
    ])
    clock = VirtualClock(NOW)
    store = KeyStore(db, clock)
    keys = {who: store.create(code, role)[1] for who, code, role in
            [("prov", PROV, "supervisor"), ("dept", DEPT, "agency"), ("commune", COMMUNE, "agency"),
             ("other", OTHER, "admin"), ("counter", DEPT, "counter")]}
    db.dossiers.insert_many([
        {"_id": "D/1", "dossier_code": "D/1", "agencies": [DEPT], "rev": 1, "partition": 0,
         "applicant": {"name": "Nguyễn Văn A", "phone": "0901234567"}, "timeline": [{"type": "dossier.received"}], "finding_ids": ["D/1:OVERDUE", "D/1:DUE_SOON"],
         "summary": {}},
        {"_id": "D-2", "dossier_code": "D-2", "agencies": [COMMUNE], "rev": 1, "partition": 1, "summary": {}},
    ])
    findings = []
    for i, (code, agency, rule, sev, state) in enumerate([
            ("D/1", DEPT, "OVERDUE", "critical", "open"), ("D/1", DEPT, "DUE_SOON", "warning", "resolved"),
            ("D-2", COMMUNE, "RECEIVED_INCOMPLETE", "warning", "open"),
            ("D-2", COMMUNE, "OVERDUE", "critical", "escalated")]):
        findings.append({"_id": f"{code}:{rule}", "dossier_code": code, "agency_code": agency, "rule": rule,
                         "severity": sev, "state": state, "procedure_code": "1.001193",
                         "detected_at": NOW + timedelta(minutes=i), "revision": 1,
                         "published_revision": 1, "pending": False, "partition": 0})
    db.findings.insert_many(findings)
    app = create_app({"SETTINGS": Settings.from_env({}), "DIRECTORY": directory, "KEY_STORE": store,
                      "CATALOG": []}, db=db, clock=clock)
    client = app.test_client()

    def get(path, who, **kw):
        return client.get(path, headers={"Authorization": f"Bearer {keys[who]}", **kw.pop("headers", {})}, **kw)
    return get, db


def test_dossier_visible_in_subtree_only_and_redacted(env):
    get, db = env
    r = get("/v1/dossiers/D/1", "prov")
    assert r.status_code == 200, r.json
    assert r.json["state"]["applicant"]["phone"] == "***" and "0901234567" not in r.text
    assert r.json["timeline"] == [{"type": "dossier.received"}]
    assert get("/v1/dossiers/D/1", "dept").status_code == 200
    assert get("/v1/dossiers/D/1", "commune").status_code == 404     # parent's dossier: invisible
    assert get("/v1/dossiers/D/1", "other").status_code == 404
    assert get("/v1/dossiers/D/1", "counter").status_code == 403     # counters post, they do not read
    assert get("/v1/dossiers/NOPE", "prov").status_code == 404


def test_no_key_is_401(env):
    get, db = env
    from services.sla import api  # noqa: F401
    r = get("/v1/dossiers/D/1", "prov", headers={"Authorization": "Bearer nope"})
    assert r.status_code == 401 and r.json["errors"][0]["code"] == "invalid_key"


def test_dossier_findings(env):
    get, db = env
    r = get("/v1/dossiers/D/1/findings", "dept")
    assert r.status_code == 200
    assert [(f["finding_id"], f["state"]) for f in r.json["findings"]] == [
        ("D/1:OVERDUE", "open"), ("D/1:DUE_SOON", "resolved")]
    assert get("/v1/dossiers/D-2/findings", "other").status_code == 404


def test_open_findings_filtered_paged_and_scoped(env):
    get, db = env
    r = get("/v1/findings", "prov")
    assert r.json["total"] == 3      # open + escalated, the resolved one excluded
    r = get("/v1/findings?severity=critical&limit=1&offset=1", "prov")
    assert r.json["total"] == 2 and [f["finding_id"] for f in r.json["findings"]] == ["D-2:OVERDUE"]
    r = get("/v1/findings", "commune")
    assert {f["dossier_code"] for f in r.json["findings"]} == {"D-2"}
    assert get("/v1/findings?agency=" + DEPT, "commune").status_code == 403
    assert get("/v1/findings", "other").json["total"] == 0
    r = get("/v1/findings?rule=OVERDUE&agency=" + COMMUNE, "dept")
    assert [f["finding_id"] for f in r.json["findings"]] == ["D-2:OVERDUE"]


@pytest.mark.parametrize("query,field", [("severity=high", "severity"), ("limit=0", "limit"),
                                         ("limit=x", "limit"), ("colour=red", "colour"),
                                         ("state=closed", "state")])
def test_bad_findings_query_is_a_specific_400(env, query, field):
    get, db = env
    r = get("/v1/findings?" + query, "prov")
    assert r.status_code == 400 and r.json["errors"][0]["field"] == field


# --- the report ------------------------------------------------------------------------------
def S(received, channel="direct", due=None, resolved=None, refused=None, agency=DEPT,
      comps=2, dig=1, supp=False, outcome=None):
    s = {"received_at": received, "channel": channel, "handling_agency": agency,
         "procedure_code": "1.001193", "components_n": comps, "digitized_n": dig}
    if due:
        s["due_at"] = due
    if resolved:
        s["resolved_at"] = resolved
    if refused:
        s["refused_at"] = refused
    if outcome:
        s["outcome"] = outcome
    if supp:
        s["supplement_requested"] = True
    return s


# November 2024, hand-computed below
FIXTURE = [
    S(local(2024, 10, 28), due=local(2024, 11, 4, 17), resolved=local(2024, 11, 1)),   # carried over, early
    S(local(2024, 10, 20), due=local(2024, 10, 25, 17), resolved=local(2024, 10, 24)), # finished before: out
    S(local(2024, 11, 4), "online", due=local(2024, 11, 8, 17), resolved=local(2024, 11, 8, 16)),  # on time
    S(local(2024, 11, 5), "online", due=local(2024, 11, 8, 17), resolved=local(2024, 11, 11, 9), supp=True),  # late
    S(local(2024, 11, 6), "postal", due=local(2024, 11, 13, 17)),                       # in progress overdue
    S(local(2024, 11, 25), due=local(2024, 12, 5, 17), comps=4, dig=4),                 # in progress on time
    S(local(2024, 11, 26), refused=local(2024, 11, 26, 10), comps=0, dig=0),            # refused
    S(local(2024, 12, 2), "online", due=local(2024, 12, 9, 17)),                        # after: out
]


def test_report_figures_against_a_hand_computed_fixture():
    p = Params(None, local(2024, 11, 1, 0), local(2024, 12, 1, 0), None, None, "agency")
    [(key, g)] = tally(FIXTURE, p).items()
    assert key == (DEPT, "")
    expected = dict(carried_over=1, received_online=2, received_direct_postal=3, received_total=6,
                    resolved_early=1, resolved_on_time=1, resolved_late=1, resolved_no_due=0,
                    resolved_total=3, in_progress_on_time=1, in_progress_overdue=1, in_progress_total=2,
                    refused=1, withdrawn=0, supplement_requested=1,
                    components=2 * 3 + 4 + 0, components_digitized=1 * 3 + 4 + 0)   # the 5 new ones
    assert {k: g[k] for k in expected} == expected
    assert g["on_time_rate"] == round(200 / 3, 2)      # (early + on time) / judged
    assert g["online_share"] == 40.0                    # 2 of 5 new
    assert g["refusal_rate"] == 20.0 and g["supplement_rate"] == 20.0
    assert g["digitized_share"] == 70.0
    assert g["returned_unresolved"] == 0 and g["returned_unresolved_rate"] == 0.0


def test_report_counts_a_denied_resolution_as_returned_unresolved():
    p = Params(None, local(2024, 11, 1, 0), local(2024, 12, 1, 0), None, None, "agency")
    denied = S(local(2024, 11, 7), due=local(2024, 11, 14, 17), resolved=local(2024, 11, 12, 10),
               outcome="denied")                                              # early, but denied
    approved = dict(FIXTURE[2], outcome="approved")
    [g] = tally([*FIXTURE[:2], approved, *FIXTURE[3:], denied], p).values()
    assert (g["resolved_early"], g["resolved_total"], g["returned_unresolved"]) == (2, 4, 1)
    assert g["returned_unresolved_rate"] == 25.0                              # 1 of 4 resolved
    assert g["refusal_rate"] == round(100 / 6, 2)                             # refusals stay apart
    # a denial in a later period counts there, not here
    late = dict(denied, resolved_at=local(2024, 12, 2, 10))
    [g] = tally([*FIXTURE, late], p).values()
    assert g["returned_unresolved"] == 0 and g["in_progress_overdue"] == 1 + 1
    p_dec = Params(None, local(2024, 12, 1, 0), local(2025, 1, 1, 0), None, None, "agency")
    assert tally([late], p_dec)[(DEPT, "")]["returned_unresolved"] == 1


def test_report_endpoint_json_and_csv(env):
    get, db = env
    for i, s in enumerate(FIXTURE):
        db.dossiers.insert_one({"_id": f"R-{i}", "agencies": [s["handling_agency"]], "summary": s})
    r = get("/v1/reports/on-time?from=2024-11-01&to=2024-11-30&group_by=agency", "prov")
    assert r.status_code == 200, r.json
    assert [row["group"] for row in r.json["rows"]] == [DEPT]
    assert r.json["rows"][0]["name"] == "Sở Tư pháp" and r.json["total"]["resolved_late"] == 1
    assert {g["group"] for g in r.json["decision_766_groups"] if g["covered"]} == {
        "Tiến độ, kết quả giải quyết", "Số hóa hồ sơ", "Cung cấp dịch vụ trực tuyến"}
    r = get("/v1/reports/on-time?from=2024-11-01&to=2024-11-30", "prov", headers={"Accept": "text/csv"})
    assert r.status_code == 200 and r.mimetype == "text/csv"
    rows = list(csv.reader(io.StringIO(r.data.decode("utf-8-sig"))))
    assert rows[0][2] == "Số hồ sơ kỳ trước chuyển qua" and rows[1][0] == DEPT and rows[-1][0] == "Tổng cộng"
    assert get("/v1/reports/on-time?from=2024-11-01&to=2024-11-30", "commune").json["rows"] == []
    assert get("/v1/reports/on-time?agency=" + DEPT, "other").status_code == 403
    bad = get("/v1/reports/on-time?from=2024-13-01", "prov")
    assert bad.status_code == 400 and bad.json["errors"][0]["field"] == "from"
    assert get("/v1/reports/on-time?group_by=officer", "prov").status_code == 400


def test_metrics_show_open_findings_by_rule(env, monkeypatch):
    from services.sla import api

    # the scrape starts a background read of the consumer-group lag: no Kafka here
    monkeypatch.setattr(api, "consumer_lag", lambda settings, group: {})
    get, db = env
    r = get("/metrics", "prov")
    assert r.status_code == 200
    text = r.data.decode()
    assert 'sla_open_findings{rule="OVERDUE",severity="critical"} 2.0' in text
    assert 'sla_open_findings{rule="RECEIVED_INCOMPLETE",severity="warning"} 1.0' in text
    assert 'rule="DUE_SOON"' not in text      # resolved: not open


# --- issue 12: a report read today judges today's dossiers at now ----------------------------
def test_report_judges_a_period_that_includes_now_at_now(env):
    get, db = env                                      # the clock: Saturday 30/11/2024 10:00
    today = NOW.astimezone(TZ).date().isoformat()
    db.dossiers.insert_many([
        {"_id": "T-1", "agencies": [DEPT],            # due at 17:00 today: not overdue at 10:00
         "summary": S(local(2024, 11, 30, 8), due=local(2024, 11, 30, 17))},
        {"_id": "T-2", "agencies": [DEPT],            # due at 09:00 today: overdue at 10:00
         "summary": S(local(2024, 11, 29, 8), due=local(2024, 11, 30, 9))},
    ])
    r = get(f"/v1/reports/on-time?from={today}&to={today}", "prov")
    assert r.status_code == 200, r.json
    t = r.json["total"]
    assert (t["in_progress_on_time"], t["in_progress_overdue"]) == (1, 1)
    assert r.json["judged_at"] == NOW.isoformat()


def test_report_judges_a_past_period_at_its_end():
    p = Params(None, local(2024, 11, 1, 0), local(2024, 12, 1, 0), None, None, "agency",
               judged_at=local(2024, 12, 20, 10))      # read weeks later
    due_after_the_period = S(local(2024, 11, 25), due=local(2024, 12, 5, 17))
    [g] = tally([due_after_the_period], p).values()
    assert (g["in_progress_on_time"], g["in_progress_overdue"]) == (1, 0)


@pytest.mark.parametrize("query,field", [
    ("to=9999-12-31", "to"), ("from=0001-01-01", "from"), ("from=1900-01-01&to=1900-01-02", "from"),
    ("to=3000-01-01", "to")])
def test_report_dates_out_of_range_are_a_400_naming_the_field(env, query, field):
    get, db = env
    r = get("/v1/reports/on-time?" + query, "prov")
    assert r.status_code == 400, (r.status_code, r.json)
    assert r.json["errors"][0]["field"] == field


# --- issue 12: unknown values are named, not answered with a 403 or an empty list -------------
@pytest.mark.parametrize("path", ["/v1/findings?agency=ZZZ", "/v1/reports/on-time?agency=ZZZ"])
def test_unknown_agency_is_a_422_even_for_the_root_key(env, path):
    get, db = env
    for who in ("prov", "other", "dept"):
        r = get(path, who)
        assert r.status_code == 422, (who, r.status_code, r.json)
        e = r.json["errors"][0]
        assert (e["code"], e["field"]) == ("unknown_agency", "agency") and "'ZZZ'" in e["message"]


@pytest.mark.parametrize("query,field,code", [
    ("rule=NO_SUCH_RULE", "rule", "unknown_rule"), ("procedure=9.999999", "procedure", "unknown_procedure"),
    ("field=Không có", "field", "unknown_procedure_field")])
def test_unknown_rule_procedure_or_field_is_a_422_naming_the_value(env, query, field, code):
    get, db = env
    r = get("/v1/findings?" + query, "prov")
    assert r.status_code == 422, (r.status_code, r.json)
    e = r.json["errors"][0]
    assert (e["code"], e["field"]) == (code, field)
    assert repr(query.split("=", 1)[1]) in e["message"]
