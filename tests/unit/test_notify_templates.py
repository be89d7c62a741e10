"""Vietnamese alert texts for every rule of LEGAL.md; no citizen data; dates in local time."""
from __future__ import annotations

import re

import pytest

from shared.domain.engine.ruledata import default_rulesets
from services.notify.policy import RULE_CODES
from services.notify.templates import Renderer, late_text, local_text

_SETS = default_rulesets()
# each rule from the newest rule set that has it (the rules new in nd118-2025 are absent from nd61-107)
RULESET = {**_SETS.get("nd118-2025").rules, **_SETS.get("nd61-107").rules}
CITIZEN = {"id_number": "079123456789", "phone": "0909123456", "address": "12 Nguyễn Huệ, Quận 1"}
VI = re.compile(r"[àáạảãâầấậẩẫăằắặẳẵèéẹẻẽêềếệểễìíịỉĩòóọỏõôồốộổỗơờớợởỡùúụủũưừứựửữỳýỵỷỹđ]")


def finding(rule):
    spec = RULESET[rule]
    return {"_id": f"F-{rule}", "rule": rule, "severity": spec.severity, "title": spec.title,
            "legal_basis": spec.citation, "dossier_code": "000.00.10.H56-261120-0007",
            "procedure_code": "1.001193", "agency_code": "000.00.10.H56",
            "due_at": "2026-11-20T10:00:00+00:00", "detected_at": "2026-11-23T03:05:00+00:00",
            "overdue_working_hours": 11.5 if rule == "OVERDUE" else None,
            "details": {"applicant": CITIZEN}, **CITIZEN}


@pytest.mark.parametrize("rule", RULE_CODES)
def test_every_rule_renders_in_vietnamese(rule):
    r = Renderer()
    f = finding(rule)
    ctx = r.context(f, agency_name="Sở Tư pháp tỉnh Long An", procedure_name="Đăng ký khai sinh",
                    recipient_name="Hoàng Văn Em", recipient_title="Giám đốc Sở Tư pháp")
    out = r.render_alert(ctx, ack_url="https://notify.example/v1/ack/TOKEN",
                         requirement=RULESET[rule].requirement)
    for part in (out.subject, out.text, out.html, out.sms):
        assert "000.00.10.H56-261120-0007" in part
        assert VI.search(part), f"{rule}: no Vietnamese diacritics in {part[:80]!r}"
        for secret in CITIZEN.values():
            assert secret not in part
    assert RULESET[rule].title in out.text and RULESET[rule].citation in out.text
    assert RULESET[rule].requirement.strip() in out.text
    assert "Đăng ký khai sinh" in out.text and "Sở Tư pháp tỉnh Long An" in out.text
    assert "20/11/2026 17:00" in out.text                  # 10:00 UTC = 17:00 in Hồ Chí Minh City
    assert "https://notify.example/v1/ack/TOKEN" in out.text and 'href="https://notify.example/v1/ack/TOKEN"' in out.html
    assert out.html.startswith("<!DOCTYPE html>") and "</html>" in out.html


@pytest.mark.parametrize("rule", RULE_CODES)
def test_template_requirement_used_without_ruleset(rule):
    r = Renderer()
    ctx = r.context(finding(rule), agency_name="Sở", procedure_name=None)
    out = r.render_alert(ctx)
    body = out.text.split("Việc cần làm theo quy định:")[1]
    assert len(body.strip()) > 40 and VI.search(body)
    assert "mã 1.001193" in out.text


def test_html_escapes_directory_text():
    r = Renderer()
    ctx = r.context(finding("OVERDUE"), agency_name="<script>x</script>", procedure_name="A & B")
    out = r.render_alert(ctx)
    assert "<script>" not in out.html and "&lt;script&gt;" in out.html and "A &amp; B" in out.html


def test_kinds_change_subject_and_resolved_has_no_ack_link():
    r = Renderer()
    ctx = r.context(finding("OVERDUE"), agency_name="Sở", procedure_name="P")
    assert r.render_alert(ctx, level=1, escalate_after_wh=16, ack_url="u").subject.startswith("[Chuyển cấp]")
    assert "16 giờ làm việc" in r.render_alert(ctx, level=1, escalate_after_wh=16).text
    assert r.render_alert(ctx, kind="repeat").subject.startswith("[Nhắc lại]")
    resolved = r.render_alert(ctx, kind="resolved", ack_url="http://ack")
    assert resolved.subject.startswith("[Đã khắc phục]") and "http://ack" not in resolved.text


def test_late_and_local_time_texts():
    assert late_text(None) is None and late_text(0) is None
    assert late_text(3) == "quá hạn 3 giờ làm việc"
    assert late_text(8) == "quá hạn 1 ngày làm việc"
    assert late_text(19.5) == "quá hạn 2 ngày 3 giờ làm việc"
    assert late_text(0.5) == "quá hạn 30 phút làm việc"
    assert local_text("2026-12-31T17:30:00+00:00") == "01/01/2027 00:30"


def test_digest_counts_and_lists():
    r = Renderer()
    item = {"dossier_code": "D1", "agency_name": "Sở Tư pháp", "title": "Hồ sơ quá hạn",
            "due_local": "20/11/2026 17:00", "late_text": "quá hạn 1 ngày làm việc"}
    out = r.render_digest({"recipient_greeting": "ông/bà A", "agency_name": "UBND tỉnh Long An",
                           "date_local": "25/11/2026", "overdue": [item], "due_soon": [], "violations": []})
    assert "1 quá hạn, 0 sắp đến hạn, 0 vi phạm khác" in out.subject
    assert "D1" in out.text and "Hồ sơ quá hạn:" in out.text and "D1" in out.html
