"""The dashboard on a real MongoDB-wire server (FerretDB in CI), through Flask's test client:
tenancy with two sibling agencies, sign-in and CSRF, filters, the dossier page and its
acknowledgement, CSV and Excel downloads."""
from __future__ import annotations

import csv
import io
import re
from datetime import timedelta

import pytest
from helpers.dashboard_seed import PROVINCE, SIBLING_A, SIBLING_B, event, notify, received, replay, store, utc

from shared.platform.auth import KeyStore
from shared.platform.clock import VirtualClock
from shared.platform.config import Settings

NOW = utc(2026, 11, 10, 10, 0)          # Tuesday 10/11/2026 10:00 in Vietnam
OFFICER = {"id": "cb-07", "name": "Lê Văn Xử Lý"}


@pytest.fixture(scope="module")
def ctx():
    import dataclasses

    from shared.domain.directory import default_directory
    from shared.domain.engine import default_context
    return dataclasses.replace(default_context(), directory=default_directory())


@pytest.fixture
def env(mongo_db, ctx):
    from services.dashboard.app import create_app

    clock = VirtualClock(NOW)
    a1 = [received("A1-" + SIBLING_A, utc(2026, 11, 2), SIBLING_A),
          event("A1-" + SIBLING_A, "dossier.assigned", utc(2026, 11, 3), SIBLING_A, {"officer": OFFICER},
                {"id": "cb-tp", "name": "Trưởng phòng Phân Công"})]
    a3 = [received("A3-" + SIBLING_A, utc(2026, 11, 6), SIBLING_A)]                  # due Wed 11/11 09:00
    a4 = [received("A4-" + SIBLING_A, utc(2026, 11, 2), SIBLING_A),
          event("A4-" + SIBLING_A, "dossier.resolved", utc(2026, 11, 4), SIBLING_A, {"outcome": "approved"})]
    a2 = [received("A2-" + SIBLING_A, utc(2026, 11, 10, 8), SIBLING_A)]               # due Fri 13/11
    b1 = [received("B1-" + SIBLING_B, utc(2026, 11, 2), SIBLING_B)]
    docs, finds = [], []
    for evs in (a1, a2, a3, a4, b1):
        d, f = replay(evs, NOW, ctx)
        docs.append(d)
        finds += f
    store(mongo_db, docs, finds)
    notify(mongo_db, finds, ctx.directory, clock)
    keys = KeyStore(mongo_db, clock)
    secrets = {who: keys.create(code, role)[1] for who, code, role in
               [("a", SIBLING_A, "agency"), ("b", SIBLING_B, "agency"), ("prov", PROVINCE, "supervisor"),
                ("counter", SIBLING_A, "counter")]}
    app = create_app(Settings.from_env({}), clock, db=mongo_db,
                     config={"ENGINE_CTX": ctx, "DIRECTORY": ctx.directory, "CATALOG": ctx.catalog,
                             "SECRET_KEY": "test-secret", "REFRESH_SECONDS": 0, "FEED": False,
                             "COOKIE_SECURE": False})
    return app, secrets, mongo_db, clock, keys


def csrf_of(html: str) -> str:
    m = re.search(r'name="csrf_token" value="([^"]+)"', html)
    assert m, "no CSRF token in the page"
    return m.group(1)


def sign_in(app, secret: str, next_: str = ""):
    c = app.test_client()
    page = c.get("/dang-nhap")
    r = c.post("/dang-nhap", data={"csrf_token": csrf_of(page.text), "key": secret, "next": next_})
    assert r.status_code == 302, r.text
    return c, r


def test_sibling_agencies_see_only_their_own_dossiers(env):
    app, keys, *_ = env
    a, _ = sign_in(app, keys["a"])
    b, _ = sign_in(app, keys["b"])
    prov, _ = sign_in(app, keys["prov"])
    over_a = a.get("/").text
    assert "A1-" + SIBLING_A in over_a and "B1-" + SIBLING_B not in over_a
    assert _count(over_a, "Hồ sơ quá hạn") == 1
    over_b = b.get("/").text
    assert "B1-" + SIBLING_B in over_b and SIBLING_A not in over_b and "A1-" not in over_b
    assert _count(over_b, "Hồ sơ quá hạn") == 1
    assert _count(prov.get("/").text, "Hồ sơ quá hạn") == 2
    # a sibling's dossier is absent, not forbidden (no existence oracle), on every page
    assert b.get("/ho-so/A1-" + SIBLING_A).status_code == 404
    assert a.get("/ho-so/B1-" + SIBLING_B).status_code == 404
    assert prov.get("/ho-so/B1-" + SIBLING_B).status_code == 200
    assert a.get("/ho-so?agency=" + SIBLING_B).status_code == 403
    for path in ("/ho-so", "/vi-pham?state=all", "/bao-cao/tre-han?from=2026-11-01", "/ho-so?format=csv",
                 "/vi-pham?state=all&format=csv"):
        body = b.get(path).get_data(as_text=True)
        assert "A1-" not in body and "A4-" not in body, path
        assert "B1-" + SIBLING_B in body, path
    rep = b.get("/bao-cao?from=2026-11-01&to=2026-11-10&format=csv").get_data(as_text=True)
    assert SIBLING_A not in rep and SIBLING_B in rep


def _count(html: str, label: str) -> int:
    m = re.search(r'<span class="n">([\d.]+)</span> <span class="t">[^<]*' + label, html)
    assert m, f"no count for {label}"
    return int(m.group(1).replace(".", ""))


def test_sign_in_needs_csrf_and_a_reading_key_and_sets_a_safe_cookie(env):
    app, keys, db, _clock, store = env
    c = app.test_client()
    assert c.get("/").status_code == 302                           # to the sign-in page
    assert c.get("/ho-so/A1-" + SIBLING_A).headers["Location"].startswith("/dang-nhap?next=/ho-so/A1-")
    assert c.post("/dang-nhap", data={"key": keys["a"]}).status_code == 400     # no CSRF token
    page = c.get("/dang-nhap")
    r = c.post("/dang-nhap", data={"csrf_token": "forged", "key": keys["a"]})
    assert r.status_code == 400 and "CSRF" in r.text
    tok = csrf_of(page.text)
    r = c.post("/dang-nhap", data={"csrf_token": tok, "key": "mck_nope_nope"})
    assert r.status_code == 401 and "không đúng" in r.text
    r = c.post("/dang-nhap", data={"csrf_token": tok, "key": keys["counter"]})
    assert r.status_code == 403
    r = c.post("/dang-nhap", data={"csrf_token": tok, "key": keys["a"], "next": "/ho-so/A1-" + SIBLING_A})
    assert r.status_code == 302 and r.headers["Location"] == "/ho-so/A1-" + SIBLING_A
    cookie = r.headers["Set-Cookie"]
    assert "HttpOnly" in cookie and "SameSite=Lax" in cookie and "Secure" not in cookie
    assert keys["a"] not in cookie
    # an open redirect through `next` is refused
    c2 = app.test_client()
    tok2 = csrf_of(c2.get("/dang-nhap").text)
    r = c2.post("/dang-nhap", data={"csrf_token": tok2, "key": keys["a"], "next": "//evil.example/x"})
    assert r.headers["Location"] == "/"
    # sign-out needs the token too, then the session is gone
    assert c.post("/dang-xuat").status_code == 400
    assert c.get("/").status_code == 200
    home = c.get("/").text
    assert c.post("/dang-xuat", data={"csrf_token": csrf_of(home)}).status_code == 302
    assert c.get("/").status_code == 302


def test_secure_cookie_when_configured(env, ctx):
    from services.dashboard.app import create_app
    app, keys, db, clock, _ = env
    app2 = create_app(Settings.from_env({}), clock, db=db,
                      config={"ENGINE_CTX": ctx, "DIRECTORY": ctx.directory, "CATALOG": ctx.catalog,
                              "SECRET_KEY": "x", "REFRESH_SECONDS": 0, "FEED": False, "COOKIE_SECURE": True})
    _c, r = sign_in(app2, keys["a"])
    assert "Secure" in r.headers["Set-Cookie"]


def test_a_revoked_key_ends_the_session(env):
    app, keys, db, clock, store = env
    c, _ = sign_in(app, keys["a"])
    assert c.get("/").status_code == 200
    key_id = keys["a"].split("_")[1]
    assert store.revoke(key_id)
    app.extensions["motcua.dashboard"]["store"]()._key_cache.clear()
    assert c.get("/").status_code == 302


def test_filters(env):
    app, keys, *_ = env
    c, _ = sign_in(app, keys["a"])

    def codes(path):
        r = c.get(path)
        assert r.status_code == 200, r.text
        return sorted(set(re.findall(r'>(A\d)-' + re.escape(SIBLING_A) + "<", r.text)))
    assert codes("/ho-so") == ["A1", "A2", "A3", "A4"]
    assert codes("/ho-so?state=overdue") == ["A1"]
    assert codes("/ho-so?state=due_soon") == ["A3"]
    assert codes("/ho-so?state=finished") == ["A4"]
    assert codes("/ho-so?state=open") == ["A2"]
    assert codes("/ho-so?rule=OVERDUE") == ["A1"]
    assert codes("/ho-so?severity=critical") == ["A1", "A3"]
    assert codes("/ho-so?rule=APOLOGY_MISSING") == ["A1", "A3"]   # no apology: A1 overdue, A3 due soon
    assert codes("/ho-so?rule=APOLOGY_MISSING&state=due_soon") == ["A3"]
    assert codes("/ho-so?field=Tư pháp – Hộ tịch") == ["A1", "A2", "A3", "A4"]
    assert codes("/ho-so?field=Đất đai") == []
    assert codes("/ho-so?procedure=1.001193") == []
    assert codes("/ho-so?from=06/11/2026&to=10/11/2026") == ["A2", "A3"]
    assert codes("/ho-so?from=2026-11-02&to=2026-11-02") == ["A1", "A4"]
    assert codes("/ho-so?agency=" + SIBLING_A + "&state=overdue") == ["A1"]
    r = c.get("/ho-so?from=31/02/2026")
    assert r.status_code == 400 and "Từ ngày không hợp lệ" in r.text
    r = c.get("/ho-so?from=10/11/2026&to=01/11/2026")
    assert r.status_code == 400
    r = c.get("/ho-so?state=late")
    assert r.status_code == 400 and "Tình trạng không hợp lệ" in r.text
    r = c.get("/ho-so?sort=x")
    assert r.status_code == 400 and "sort" in r.text
    assert c.get("/ho-so?page=0").status_code == 400
    # the overdue list says by how much, in working days, and who holds it
    page = c.get("/ho-so?state=overdue").text
    assert "quá hạn 3 ngày 1 giờ làm việc" in page        # Thu 05/11 09:00 -> Tue 10/11 10:00
    assert "Lê Văn Xử Lý" in page
    # violations list and its filters
    v = c.get("/vi-pham?rule=OVERDUE").text
    assert "A1-" + SIBLING_A in v and "A3-" not in v
    assert "A1-" + SIBLING_A in c.get("/vi-pham?severity=critical&unacked=1").text
    assert c.get("/vi-pham?state=nope").status_code == 400


def test_csv_and_xlsx_downloads(env):
    from openpyxl import load_workbook
    app, keys, *_ = env
    c, _ = sign_in(app, keys["a"])
    r = c.get("/ho-so?state=overdue&format=csv")
    assert r.status_code == 200 and r.mimetype == "text/csv"
    assert "attachment" in r.headers["Content-Disposition"]
    text = r.get_data().decode("utf-8")
    assert text.startswith("\ufeff")
    rows = list(csv.reader(io.StringIO(text.lstrip("\ufeff"))))
    assert rows[0][:3] == ["Mã hồ sơ", "Thủ tục hành chính", "Lĩnh vực"]
    assert [r_[0] for r_ in rows[1:]] == ["A1-" + SIBLING_A]
    assert rows[1][6] == "05/11/2026 09:00" and rows[1][4] == "quá hạn"
    r = c.get("/ho-so?state=overdue&format=xlsx")
    assert r.mimetype.endswith("spreadsheetml.sheet")
    ws = load_workbook(io.BytesIO(r.get_data())).active
    values = list(ws.values)
    assert values[0][0] == "Mã hồ sơ" and values[1][0] == "A1-" + SIBLING_A
    assert values[1][6].strftime("%d/%m/%Y %H:%M") == "05/11/2026 09:00"     # Vietnam wall clock
    # Biểu 06 (CSV with the report's own Vietnamese headers; Excel with the period in the notes)
    rep = c.get("/bao-cao?from=2026-11-01&to=2026-11-10&format=csv").get_data().decode("utf-8").lstrip("\ufeff")
    rows = list(csv.reader(io.StringIO(rep)))
    assert rows[0][0] == "Nhóm" and "Đã giải quyết trước hạn" in rows[0]
    assert rows[1][0] == SIBLING_A and rows[-1][0] == "Tổng cộng"
    col = rows[0].index("Đã giải quyết trước hạn")
    assert rows[1][col] == "1"
    ws = load_workbook(io.BytesIO(c.get("/bao-cao?from=2026-11-01&to=2026-11-10&format=xlsx").get_data())).active
    first = [r_[0] for r_ in ws.values][:4]
    assert "Kỳ báo cáo: từ ngày 01/11/2026 đến ngày 10/11/2026" in first
    # the late report names the officer holding the dossier at each late step
    late = c.get("/bao-cao/tre-han?from=2026-11-01&to=2026-11-10&format=csv").get_data().decode("utf-8")
    rows = list(csv.reader(io.StringIO(late.lstrip("\ufeff"))))
    assert rows[0][-1] == "Cán bộ giữ hồ sơ"
    assert [r_[0] for r_ in rows[1:]] == ["A1-" + SIBLING_A]
    assert rows[1][-1] == "Lê Văn Xử Lý" and rows[1][6] == "Phân công cán bộ xử lý"


def test_dossier_page_explains_and_acknowledge_stops_escalation(env):
    app, keys, db, clock, _ = env
    c, _ = sign_in(app, keys["a"])
    code = "A1-" + SIBLING_A
    unacked = _count(c.get("/").text, "Cảnh báo nghiêm trọng chưa xác nhận")
    page = c.get("/ho-so/" + code).text
    assert "Hạn giải quyết: 09:00 Thứ Năm, 05/11/2026." in page
    assert "Thời hạn giải quyết: 3 ngày làm việc" in page
    assert "Hồ sơ quá hạn" in page and "Căn cứ pháp lý" in page and "Việc cần làm theo quy định" in page
    assert "Lê Văn Xử Lý" in page and "Trưởng phòng Phân Công" in page
    assert "080123456789" not in page and "0912345678" not in page      # no citizen data
    fid = re.search(r'name="finding_id" value="(OVERDUE-[^"]+)"', page).group(1)
    before = db.notify_findings.find_one({"_id": fid})
    assert before["acked_at"] is None and before["next_repeat_at"] is not None
    assert "chưa xác nhận" in page
    # without the token: refused, nothing changes
    assert c.post("/xac-nhan-canh-bao", data={"finding_id": fid, "dossier_code": code}).status_code == 400
    assert db.notify_findings.find_one({"_id": fid})["acked_at"] is None
    # a sibling cannot acknowledge it
    b, _ = sign_in(app, keys["b"])
    tok_b = csrf_of(b.get("/").text)
    assert b.post("/xac-nhan-canh-bao", data={"csrf_token": tok_b, "finding_id": fid,
                                              "dossier_code": code}).status_code == 404
    assert db.notify_findings.find_one({"_id": fid})["acked_at"] is None
    r = c.post("/xac-nhan-canh-bao", data={"csrf_token": csrf_of(page), "finding_id": fid,
                                           "dossier_code": code, "note": "Đã giao xử lý gấp"})
    assert r.status_code == 302
    after = db.notify_findings.find_one({"_id": fid})
    assert after["acked_at"] is not None and after["next_escalation_at"] is None and after["next_repeat_at"] is None
    ack = db.acks.find_one({"finding_id": fid})
    assert ack["via"] == "dashboard" and ack["note"] == "Đã giao xử lý gấp"
    page = c.get("/ho-so/" + code).text
    assert "đã xác nhận" in page and "Việc nhắc lại và chuyển cấp do chưa xác nhận đã dừng" in page
    assert f'name="finding_id" value="{fid}"' not in page
    # escalation time passes: the notify scheduler escalates nothing for it
    from services.notify.policy import load_policy
    from services.notify.service import NotifyService
    from services.notify.store import NotifyStore
    svc = NotifyService(NotifyStore(db), load_policy(None), app.config["DIRECTORY"], {}, clock, secret="s")
    clock.advance(timedelta(days=7))
    svc.run_scheduled()
    assert db.notify_findings.find_one({"_id": fid})["level"] == before["level"]
    assert db.notifications.count_documents({"finding_id": fid, "kind": "repeat"}) == 0
    # and the overview no longer counts it among unacknowledged critical alerts
    assert _count(c.get("/").text, "Cảnh báo nghiêm trọng chưa xác nhận") == unacked - 1


def test_dossier_page_shows_sent_times_failed_deliveries_and_acknowledgement_notes(env):
    """On any store (FerretDB included): each alert with its delivery status and instant, a
    failed delivery with its error, and every acknowledgement with its note."""
    app, keys, db, clock, _ = env
    from services.notify.channels import FakeChannel
    from services.notify.policy import load_policy
    from services.notify.service import NotifyService
    from services.notify.store import NotifyStore

    email = FakeChannel("email")
    email.fail_next(1, permanent=True)
    svc = NotifyService(NotifyStore(db), load_policy(None), app.config["DIRECTORY"], {"email": email}, clock,
                        secret="s")
    assert svc.dispatch_due() >= 2
    code = "A1-" + SIBLING_A
    c, _ = sign_in(app, keys["a"])
    page = c.get("/ho-so/" + code).text
    alerts = page[page.index('id="canh-bao"'):page.index('id="qua-trinh"')]
    sent_at = fmt_dt(clock.now())
    assert re.search(r"✓ đã gửi</td>\s*<td>" + re.escape(sent_at) + "</td>", alerts), alerts
    assert re.search(r"✗ gửi lỗi</span> <small>email fake failure</small></td>\s*<td>" + re.escape(sent_at),
                     alerts), alerts
    # acknowledged through the e-mail link (notify's API): its note shows on the page
    fid = re.search(r'name="finding_id" value="(OVERDUE-[^"]+)"', page).group(1)
    clock.advance(timedelta(minutes=5))
    svc.acknowledge(fid, "person-x", by="Nguyễn Văn Trưởng", via="link", note="Đã giao phòng chuyên môn")
    page = c.get("/ho-so/" + code).text
    assert ("Xác nhận lúc " + fmt_dt(clock.now()) + " — Nguyễn Văn Trưởng (qua đường dẫn trong thư). "
            "Ghi chú: «Đã giao phòng chuyên môn»") in page


def fmt_dt(t) -> str:
    from services.dashboard.fmt import dt
    return dt(t)


def test_metrics_count_pages_and_report_the_view(env):
    """/metrics: Prometheus text without signing in, the APIs' request metrics by route, the view's size."""
    app, keys, *_ = env
    c, _ = sign_in(app, keys["a"])
    assert c.get("/ho-so/A1-" + SIBLING_A).status_code == 200
    assert c.get("/ho-so/A9-" + SIBLING_A).status_code == 404
    m = app.test_client().get("/metrics")
    assert m.status_code == 200 and m.headers["Content-Type"].startswith("text/plain")
    text = m.text
    assert ('http_requests_total{method="GET",route="/ho-so/<path:code>",service="dashboard",status="200"} 1.0'
            in text)
    assert 'http_requests_total{method="GET",route="/ho-so/<path:code>",service="dashboard",status="404"} 1.0' in text
    assert 'http_request_duration_seconds_count{route="/ho-so/<path:code>",service="dashboard"} 2.0' in text
    assert 'dashboard_view_rows{kind="dossiers"} 5.0' in text
    assert re.search(r'dashboard_view_rows\{kind="notifications"\} [1-9]', text)
    assert "dashboard_feed_lag" not in text           # FEED off: no feed to report
