"""The dashboard in a real browser (Debian's chromium driven by Playwright) against the running
services: intake (gunicorn), the sla and notify workers, the dashboard (gunicorn, fed from
Kafka), on real Kafka, a MongoDB-wire server and SMTP, sharing a file clock the test moves.

A supervisor follows the link of an alert e-mail, signs in, finds the overdue dossier on the
overview, reads why its deadline is what it is, acknowledges, and escalation stops for it (a
second, unacknowledged dossier escalates as a control). A sibling agency sees none of it.
Screenshots go to tests/artifacts/dashboard/ (1366x768 and phone width).
"""
from __future__ import annotations

import os
import re
import time
import uuid
from datetime import datetime, timezone
from pathlib import Path

import pytest
import requests
from helpers.net import delete_topics
from helpers.processes import REPO, Services, free_port, received_event

pytestmark = pytest.mark.browser

CHROMIUM = "/usr/bin/chromium"
ARTIFACTS = REPO / "tests" / "artifacts" / "dashboard"
AGENCY_A = "000.00.17.H56"           # UBND phường Tân An
AGENCY_B = "000.00.18.H56"           # UBND xã Đức Hòa (sibling)
HEAD_A = "chutich@phuongtanan.longan.local"
PROVINCE_HEAD = "chu-tich@ubnd.longan.example.org"
START = datetime(2026, 11, 2, 2, 0, tzinfo=timezone.utc)      # Monday 02/11/2026 09:00 in Vietnam
OVERDUE_AT = datetime(2026, 11, 5, 2, 30, tzinfo=timezone.utc)  # Thursday 09:30: 30 min past due
ESCALATED_OVERDUE = "[Chuyển cấp] Hồ sơ quá hạn"
LATER = datetime(2026, 11, 10, 3, 0, tzinfo=timezone.utc)      # Tuesday 10/11 10:00: escalations due


@pytest.fixture
def dashboard_stack(kafka_bootstrap, mongo_uri, mongo_db, topics, smtp_server, tmp_path):
    if not Path(CHROMIUM).exists():
        pytest.fail(f"{CHROMIUM} is missing: run deploy/ci/browser-setup.sh (apt-get install chromium)")
    from shared.platform.clock import FileClock
    from shared.platform.messaging import ensure_topics

    names = topics("events", "findings", partitions=3)
    ensure_topics(kafka_bootstrap, {names["events"] + ".dlq": 1, names["findings"] + ".dlq": 1})
    clock_file = tmp_path / "clock.txt"
    FileClock(clock_file).set(START)
    intake_port, dash_port = free_port(), free_port()
    dash_url = f"http://127.0.0.1:{dash_port}"
    env = dict(os.environ, KAFKA_BOOTSTRAP_SERVERS=kafka_bootstrap, MONGO_URI=mongo_uri, MONGO_DB=mongo_db.name,
               TOPIC_EVENTS=names["events"], TOPIC_FINDINGS=names["findings"],
               SMTP_HOST=smtp_server.host, SMTP_PORT=str(smtp_server.port),
               NOTIFY_SECRET=uuid.uuid4().hex, NOTIFY_URL="http://127.0.0.1:9", DASHBOARD_URL=dash_url,
               DASHBOARD_SECRET=uuid.uuid4().hex, DASHBOARD_FEED="1", MOTCUA_CLOCK_FILE=str(clock_file),
               PYTHONUNBUFFERED="1", INTAKE_WORKERS="1", INTAKE_THREADS="4")
    services = Services(env, tmp_path)
    services.start("intake", "-m", "gunicorn", "-c", "services/intake/gunicorn.conf.py",
                   "--bind", f"127.0.0.1:{intake_port}", "--workers", "1", "services.intake.app:create_app()")
    services.start("sla-worker", "-m", "services.sla", "worker", "--group", f"e2e-{uuid.uuid4().hex[:8]}")
    services.start("notify-worker", "-m", "services.notify", "worker")
    services.start("dashboard", "-m", "gunicorn", "-c", "services/dashboard/gunicorn.conf.py",
                   "--bind", f"127.0.0.1:{dash_port}", "services.dashboard.app:create_app()")
    try:
        for url in (f"http://127.0.0.1:{intake_port}", dash_url):
            _wait_http(services, url + "/healthz")
        from shared.platform.auth import KeyStore
        keys = KeyStore(mongo_db)
        secrets = {"counter": keys.create(AGENCY_A, "counter", "e2e")[1],
                   "a": keys.create(AGENCY_A, "agency", "e2e")[1],
                   "b": keys.create(AGENCY_B, "agency", "e2e")[1]}
        yield {"intake": f"http://127.0.0.1:{intake_port}", "dash": dash_url, "keys": secrets,
               "clock": FileClock(clock_file), "services": services}
    finally:
        services.stop()
        delete_topics(kafka_bootstrap, [names["findings"] + ".notify"])     # notify's changes


def _wait_http(services, url: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while True:
        services.check_alive()
        try:
            if requests.get(url, timeout=2).status_code == 200:
                return
        except requests.RequestException:
            pass
        if time.monotonic() > deadline:
            raise AssertionError(f"{url} did not answer")
        time.sleep(0.3)


def _mails(smtp_server, to: str, code: str, prefix: str) -> list:
    return [m for m in list(smtp_server.messages) if to in m.rcpt_tos and code in m.subject
            and m.subject.startswith(prefix)]


def _wait_mail(smtp_server, services, to, code, prefix, timeout=90):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        services.check_alive()
        found = _mails(smtp_server, to, code, prefix)
        if found:
            return found[0]
        time.sleep(0.5)
    raise AssertionError(f"no e-mail {prefix!r} about {code} to {to} within {timeout}s; got "
                         f"{[(m.rcpt_tos, m.subject) for m in smtp_server.messages]}\n--- sla:\n"
                         f"{services.tail('sla-worker')}\n--- notify:\n{services.tail('notify-worker')}")


def _shot(page, name: str) -> None:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)


def _sign_in(page, key: str) -> None:
    page.get_by_label("Khóa truy cập").fill(key)          # the label is tied to the field
    page.get_by_role("button", name="Đăng nhập").click()


def test_supervisor_follows_the_alert_to_the_dossier_and_acknowledges(dashboard_stack, smtp_server):
    from playwright.sync_api import expect, sync_playwright

    s = dashboard_stack
    services, clock = s["services"], s["clock"]
    codes = [f"{AGENCY_A}-261102-{uuid.uuid4().int % 10000:04d}" for _ in range(2)]
    acked, control = codes
    for code in codes:
        r = requests.post(s["intake"] + "/v1/events", json=received_event(code, START),
                          headers={"Authorization": f"Bearer {s['keys']['counter']}"}, timeout=15)
        assert r.status_code == 202, r.text
    clock.set(OVERDUE_AT)
    mail = _wait_mail(smtp_server, services, HEAD_A, acked, "Hồ sơ quá hạn")
    link = re.search(r"(http://127\.0\.0\.1:\d+/ho-so/\S+)", mail.text()).group(1)
    assert link == f"{s['dash']}/ho-so/{acked}"

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=[
            "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
            "--no-first-run"])
        try:
            ctx = browser.new_context(viewport={"width": 1366, "height": 768}, locale="vi-VN")
            page = ctx.new_page()
            # the e-mail's link: sign-in first, then straight to the dossier
            page.goto(link)
            expect(page.get_by_role("heading", name="Đăng nhập")).to_be_visible()
            _shot(page, "01-dang-nhap")
            _sign_in(page, s["keys"]["a"])
            expect(page.get_by_role("heading", name=f"Hồ sơ {acked}")).to_be_visible()
            # the overview: both dossiers overdue (the feed may need a moment to see them)
            page.get_by_role("link", name="Tổng quan").click()
            deadline = time.monotonic() + 60
            while "2</span> <span class=\"t\">⚠ Hồ sơ quá hạn" not in page.content():
                assert time.monotonic() < deadline, page.content()
                time.sleep(1)
                page.reload()
            expect(page.get_by_role("link", name=acked)).to_be_visible()
            _shot(page, "02-tong-quan")
            # keyboard: the first Tab reaches the skip link
            page.keyboard.press("Tab")
            assert page.evaluate("document.activeElement.textContent") == "Bỏ qua, đến nội dung chính"
            # the overdue count leads to the list, the list to the dossier
            page.get_by_role("link", name=re.compile("Hồ sơ quá hạn")).click()
            expect(page.get_by_role("heading", name="Hồ sơ quá hạn")).to_be_visible()
            _shot(page, "03-danh-sach-qua-han")
            page.get_by_role("link", name=acked).click()
            expect(page.get_by_text("Hạn giải quyết: 09:00 Thứ Năm, 05/11/2026.")).to_be_visible()
            expect(page.get_by_text("Thời hạn giải quyết: 3 ngày làm việc (24 giờ làm việc).")).to_be_visible()
            _shot(page, "04-ho-so")
            # acknowledge the OVERDUE alert (its form is the one whose finding id says so)
            form = page.locator("form.ack", has=page.locator("input[name=finding_id][value^='OVERDUE-']"))
            form.get_by_label("Ghi chú (không bắt buộc)").fill("Đã giao cán bộ xử lý ngay")
            form.get_by_role("button", name="Xác nhận đã nhận cảnh báo").click()
            expect(page.get_by_text("Việc nhắc lại và chuyển cấp do chưa xác nhận của cảnh báo này đã dừng.")).to_be_visible()
            # the note, and each alert's delivery with its instant (notify's published changes)
            expect(page.get_by_text("Ghi chú: «Đã giao cán bộ xử lý ngay»")).to_be_visible()
            expect(page.locator("#canh-bao tr", has_text="đã gửi").first).to_contain_text("/11/2026 ")
            _shot(page, "05-da-xac-nhan")

            # time passes beyond the escalation: the control's OVERDUE alert escalates, the
            # acknowledged one does not (the dossier's other, unacknowledged findings still may)
            clock.set(LATER)
            _wait_mail(smtp_server, services, PROVINCE_HEAD, control, ESCALATED_OVERDUE)
            time.sleep(8)     # the scheduler runs every few seconds: give a wrong escalation its chance
            # the acknowledgement stops escalation for lack of acknowledgement; escalation by
            # lateness is the law's (docs/alerts.md) and then says the alert was acknowledged
            for m in _mails(smtp_server, PROVINCE_HEAD, acked, ESCALATED_OVERDUE):
                assert "chưa được cơ quan chịu trách nhiệm xác nhận" not in m.text(), m.text()
                assert "đã xác nhận đã nhận cảnh báo lúc" in m.text(), m.text()
            control_mail = _mails(smtp_server, PROVINCE_HEAD, control, ESCALATED_OVERDUE)[0].text()
            assert "đã xác nhận đã nhận cảnh báo lúc" not in control_mail
            page.goto(f"{s['dash']}/ho-so/{acked}")
            expect(page.get_by_text("Việc nhắc lại và chuyển cấp do chưa xác nhận đã dừng", exact=False).first).to_be_visible()
            page.goto(f"{s['dash']}/ho-so/{control}")
            expect(page.get_by_text("đã chuyển cấp").first).to_be_visible()
            _shot(page, "06-ho-so-doi-chung-chuyen-cap")
            page.goto(f"{s['dash']}/bao-cao/tre-han?from=01/11/2026&to=10/11/2026")
            expect(page.get_by_role("link", name=acked)).to_be_visible()
            _shot(page, "07-bao-cao-tre-han")
            page.goto(f"{s['dash']}/bao-cao?from=01/11/2026&to=10/11/2026")
            _shot(page, "08-bieu-06")

            phone = browser.new_context(viewport={"width": 390, "height": 844}, locale="vi-VN",
                                        storage_state=ctx.storage_state())
            pp = phone.new_page()
            pp.goto(s["dash"] + "/")
            expect(pp.get_by_role("link", name=re.compile("Hồ sơ quá hạn"))).to_be_visible()
            assert pp.evaluate("document.documentElement.scrollWidth") <= 390 + 1   # no sideways scrolling
            _shot(pp, "09-tong-quan-dien-thoai")
            pp.goto(f"{s['dash']}/ho-so/{acked}")
            assert pp.evaluate("document.documentElement.scrollWidth") <= 390 + 1
            _shot(pp, "10-ho-so-dien-thoai")

            # the sibling agency: none of it
            sib = browser.new_context(viewport={"width": 1366, "height": 768}, locale="vi-VN")
            sp = sib.new_page()
            sp.goto(s["dash"] + "/")
            _sign_in(sp, s["keys"]["b"])
            expect(sp.get_by_role("heading", name=re.compile("Tổng quan"))).to_be_visible()
            body = sp.content()
            assert '0</span> <span class="t">⚠ Hồ sơ quá hạn' in body
            assert acked not in body and control not in body
            _shot(sp, "11-don-vi-cung-cap-tong-quan")
            sp.goto(f"{s['dash']}/ho-so/{acked}")
            expect(sp.get_by_text(f"Không tìm thấy hồ sơ {acked}")).to_be_visible()
            _shot(sp, "12-don-vi-cung-cap-ho-so")
            sp.goto(s["dash"] + "/ho-so")
            assert acked not in sp.content() and control not in sp.content()
            # sign out
            sp.get_by_role("button", name="Đăng xuất").click()
            expect(sp.get_by_role("heading", name="Đăng nhập")).to_be_visible()
        finally:
            browser.close()
