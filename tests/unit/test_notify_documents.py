"""Pre-filled documents attached to alerts (.docx), on the form of the rule set that judged the
dossier: the apology / extension request, the supplement request, the stop notice."""
from __future__ import annotations

import io
from email import message_from_bytes

import pytest
from docx import Document

from services.notify.channels import Outgoing, SmtpChannel
from services.notify.documents import DOCX, attachments_for, stop_notice
from shared.domain.engine import default_rulesets

SETS = default_rulesets()


def finding(rule, ruleset, **over):
    f = {"_id": f"F-{rule}", "rule": rule, "state": "open", "ruleset": ruleset, "severity": "critical",
         "dossier_code": "000.00.17.H56-250708-0042", "procedure_code": "1.001193",
         "agency_code": "000.00.17.H56", "due_at": "2025-07-11T02:00:00+00:00",
         "details": {"legal_due_at": "2025-07-14T02:00:00+00:00"}}
    f.update(over)
    return f


def text(content: bytes) -> str:
    doc = Document(io.BytesIO(content))
    parts = [p.text for p in doc.paragraphs]
    for t in doc.tables:
        parts += [c.text for row in t.rows for c in row.cells]
    return "\n".join(parts)


def test_extension_request_under_118_is_mau_04_of_circular_03_2025():
    [a] = attachments_for(finding("APOLOGY_MISSING", "nd118-2025"), agency_name="UBND phường Tân An",
                          procedure_name="Đăng ký khai sinh")
    assert a.mimetype == DOCX and a.filename == "mau-04-000.00.17.H56-250708-0042.docx"
    t = text(a.content)
    for s in ("Mẫu số 04 — Thông tư 03/2025/TT-VPCP", "PHIẾU ĐỀ NGHỊ GIA HẠN THỜI GIAN GIẢI QUYẾT",
              "CỘNG HÒA XÃ HỘI CHỦ NGHĨA VIỆT NAM", "UBND PHƯỜNG TÂN AN", "Đăng ký khai sinh",
              "Mã hồ sơ: 000.00.17.H56-250708-0042",
              "Thời hạn giải quyết theo quy định: 09 giờ 00 phút, ngày 14 tháng 07 năm 2025",
              "Đề nghị gia hạn thời gian giải quyết đến", "khoản 6 Điều 19", "THỦ TRƯỞNG CƠ QUAN, ĐƠN VỊ"):
        assert s in t, s


def test_apology_under_61_107_is_mau_04_of_circular_01_2018():
    [a] = attachments_for(finding("DUE_SOON", "nd61-107", details={}), agency_name="Sở Tư pháp")
    t = text(a.content)
    assert "Mẫu số 04 — Thông tư 01/2018/TT-VPCP" in t
    assert "PHIẾU XIN LỖI VÀ HẸN LẠI NGÀY TRẢ KẾT QUẢ" in t and "gia hạn" not in t
    assert "ngày 11 tháng 07 năm 2025" in t            # DUE_SOON's due_at is the legal due date


def test_supplement_request_lists_missing_components_by_name():
    f = finding("RECEIVED_INCOMPLETE", "nd118-2025", details={"still_missing": ["giay-chung-sinh"]})
    [a] = attachments_for(f, agency_name="UBND xã Mỹ Yên",
                          component_name={"giay-chung-sinh": "Giấy chứng sinh"}.get)
    t = text(a.content)
    assert "Mẫu số 02 — Thông tư 03/2025/TT-VPCP" in t and "PHIẾU YÊU CẦU BỔ SUNG, HOÀN THIỆN HỒ SƠ" in t
    assert "1. Giấy chứng sinh" in t


@pytest.mark.parametrize("f", [finding("OVERDUE", "nd118-2025"), finding("APOLOGY_MISSING", "nd118-2025", state="resolved"),
                               finding("APOLOGY_MISSING", "nd99-unknown")])
def test_no_document_when_none_is_required(f):
    assert attachments_for(f, agency_name="X") == ()


def test_stop_notice_is_mau_05_of_circular_03_2025():
    form = SETS.get("nd118-2025").form("stop_notice")
    t = text(stop_notice(form, dossier_code="M17.001.56-250708-AB0042", agency_name="Trung tâm Phục vụ hành chính công xã Mỹ Yên",
                         procedure_name="Đăng ký khai sinh", requested_at="2025-07-09T01:00:00+00:00"))
    assert "THÔNG BÁO DỪNG GIẢI QUYẾT HỒ SƠ" in t and "Mẫu số 05 — Thông tư 03/2025/TT-VPCP" in t
    assert "Điều 21 Nghị định 118/2025/NĐ-CP" in t and "08 giờ 00 phút, ngày 09 tháng 07 năm 2025" in t
    assert SETS.get("nd61-107").form("stop_notice") is None


def test_email_carries_the_document_as_an_attachment():
    [a] = attachments_for(finding("APOLOGY_MISSING", "nd118-2025"), agency_name="UBND phường Tân An")
    ch = SmtpChannel("127.0.0.1", 25, "motcua@example.org")
    em = ch.build(Outgoing("email", "head@example.org", "Chưa gửi văn bản xin lỗi", "nội dung", "<p>nội dung</p>",
                           message_id="n-1", attachments=(a,)))
    msg = message_from_bytes(em.as_bytes())
    assert msg.get_content_type() == "multipart/mixed"
    parts = list(msg.walk())
    assert [p.get_content_type() for p in parts[1:4]] == ["multipart/alternative", "text/plain", "text/html"]
    doc = next(p for p in parts if p.get_filename())
    assert doc.get_content_type() == DOCX and doc.get_filename() == a.filename
    assert doc.get_payload(decode=True) == a.content
    plain = ch.build(Outgoing("email", "head@example.org", "x", "y", "<p>y</p>"))
    assert plain.get_content_type() == "multipart/alternative"     # no attachment: unchanged


# --------------------------------------------------------------------- what the events carried

def test_stop_notice_is_attached_to_stop_notice_missing_filled_from_form_data():
    f = finding("STOP_NOTICE_MISSING", "nd118-2025", severity="warning",
                form_data={"applicant_name": "Trần Thị Bình", "reason": "Người nộp không còn nhu cầu",
                           "requested_at": "2025-07-08T01:00:00+00:00"})
    [a] = attachments_for(f, agency_name="UBND xã Mỹ Yên", procedure_name="Đăng ký khai sinh")
    assert a.filename == "mau-05-000.00.17.H56-250708-0042.docx"
    t = text(a.content)
    for s in ("Mẫu số 05 — Thông tư 03/2025/TT-VPCP", "THÔNG BÁO DỪNG GIẢI QUYẾT HỒ SƠ",
              "Kính gửi: Ông/Bà Trần Thị Bình", "08 giờ 00 phút, ngày 08 tháng 07 năm 2025",
              "Lý do dừng giải quyết theo đề nghị của Ông/Bà: Người nộp không còn nhu cầu",
              "mã hồ sơ 000.00.17.H56-250708-0042", "Đăng ký khai sinh"):
        assert s in t, s


def test_no_stop_notice_under_61_107():
    assert attachments_for(finding("STOP_NOTICE_MISSING", "nd61-107"), agency_name="X") == ()


def test_extension_request_prints_the_name_reason_and_proposed_date_of_the_events():
    f = finding("DUE_SOON", "nd118-2025",
                form_data={"applicant_name": "Nguyễn Văn An", "reason": "Chờ kết quả xác minh",
                           "proposed_at": "2025-07-18T03:00:00+00:00"})
    t = text(attachments_for(f, agency_name="UBND phường Tân An")[0].content)
    assert "Kính gửi: Ông/Bà Nguyễn Văn An" in t
    assert "Lý do chậm giải quyết: Chờ kết quả xác minh" in t
    assert "Đề nghị gia hạn thời gian giải quyết đến: 10 giờ 00 phút, ngày 18 tháng 07 năm 2025" in t


def test_supplement_request_names_the_applicant():
    f = finding("ONLINE_RECEIPT_LATE", "nd118-2025", form_data={"applicant_name": "Lê Thị Hoa"})
    t = text(attachments_for(f, agency_name="UBND xã Mỹ Yên")[0].content)
    assert "Hồ sơ của: Lê Thị Hoa" in t


def test_what_the_events_did_not_give_stays_a_dotted_line():
    t = text(attachments_for(finding("APOLOGY_MISSING", "nd118-2025"), agency_name="X")[0].content)
    assert "Kính gửi: ……" in t and "Lý do chậm giải quyết: ……" in t
    assert "Đề nghị gia hạn thời gian giải quyết đến: ……" in t
