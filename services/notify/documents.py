"""Pre-filled documents the law requires next, attached to alerts as .docx (python-docx) for the
head to print, complete and sign — on the form of the rule set that judged the dossier:

- the apology / extension request (DUE_SOON, APOLOGY_MISSING): Phiếu xin lỗi và hẹn lại ngày trả
  kết quả (Mẫu 04, Circular 01/2018) under nd61-107; Phiếu đề nghị gia hạn thời gian giải quyết
  (Mẫu 04, Circular 03/2025) under nd118-2025 (Đ19 k6: at the latest one day before expiry);
- the supplement request (RECEIVED_INCOMPLETE, ONLINE_RECEIPT_LATE): Phiếu yêu cầu bổ sung, hoàn
  thiện hồ sơ (Mẫu 02);
- the stop notice (STOP_NOTICE_MISSING): Thông báo dừng giải quyết hồ sơ (Mẫu 05, Circular
  03/2025; no 61/107 form).

Filled from the finding (dossier code, procedure, agency, due dates, components) and its
`form_data` (shared/contracts/findings.py): the applicant's name, the reason and the dates of the
extension or stop request, as the dossier's events gave them. What the events did not give is a
dotted line to fill by hand. The name is printed on the form only — never in the alert's text,
subject or logs (docs/law.md). The layout follows the forms' usual structure (national motto,
agency, number, title, body, signature); the circulars' full texts were not read (LEGAL-118.md).
"""
from __future__ import annotations

import io
from dataclasses import dataclass
from datetime import datetime, timezone
from functools import lru_cache

from shared.contracts.findings import FORM_DATA_RULES
from shared.domain.instants import TZ

DOCX = "application/vnd.openxmlformats-officedocument.wordprocessingml.document"
FORM_FOR_RULE = FORM_DATA_RULES
DOTS = "…………………………………………"


@dataclass(frozen=True)
class Attachment:
    filename: str
    content: bytes
    mimetype: str = DOCX


@lru_cache(maxsize=1)
def _rulesets():
    from shared.domain.engine.ruledata import default_rulesets
    return default_rulesets()


def _t(v) -> datetime | None:
    if v is None or v == "":
        return None
    t = datetime.fromisoformat(v) if isinstance(v, str) else v
    if t.tzinfo is None:
        t = t.replace(tzinfo=timezone.utc)
    return t.astimezone(TZ)


def _when(t: datetime | None) -> str:
    return f"{t:%H} giờ {t:%M} phút, ngày {t:%d} tháng {t:%m} năm {t:%Y}" if t else DOTS


def _fill(form_data: dict | None, key: str) -> str:
    v = (form_data or {}).get(key)
    return v.strip() if isinstance(v, str) and v.strip() else DOTS


def _addressee(form_data: dict | None) -> str:
    name = _fill(form_data, "applicant_name")
    return f"Ông/Bà {name}" if name != DOTS else DOTS


def _document(form, *, agency_name: str, parent_name: str | None, number_suffix: str,
              title: str, body: list[str], signer: str):
    from docx import Document
    from docx.enum.text import WD_ALIGN_PARAGRAPH
    from docx.shared import Pt

    doc = Document()
    style = doc.styles["Normal"]
    style.font.name = "Times New Roman"
    style.font.size = Pt(13)
    note = doc.add_paragraph(f"Mẫu số {form.number} — {form.circular}")
    note.alignment = WD_ALIGN_PARAGRAPH.RIGHT
    head = doc.add_table(rows=1, cols=2)
    left, right = head.rows[0].cells
    left.text = ((parent_name.upper() + "\n") if parent_name else "") + agency_name.upper() + \
        f"\n———\nSố: ……/{number_suffix}"
    right.text = ("CỘNG HÒA XÃ HỘI CHỦ NGHĨA VIỆT NAM\nĐộc lập - Tự do - Hạnh phúc\n———\n"
                  "……………, ngày …… tháng …… năm ……")
    for cell in (left, right):
        for p in cell.paragraphs:
            p.alignment = WD_ALIGN_PARAGRAPH.CENTER
    h = doc.add_paragraph()
    h.alignment = WD_ALIGN_PARAGRAPH.CENTER
    run = h.add_run(title.upper())
    run.bold = True
    for line in body:
        doc.add_paragraph(line)
    s = doc.add_paragraph()
    s.alignment = WD_ALIGN_PARAGRAPH.RIGHT
    s.add_run(signer).bold = True
    doc.add_paragraph("(Ký, ghi rõ họ tên và đóng dấu)").alignment = WD_ALIGN_PARAGRAPH.RIGHT
    buf = io.BytesIO()
    doc.save(buf)
    return buf.getvalue()


def apology(form, finding: dict, *, agency_name: str, parent_name: str | None = None,
            procedure_name: str | None = None) -> bytes:
    details = finding.get("details") or {}
    fd = finding.get("form_data") or {}
    legal_due = _t(details.get("legal_due_at") or finding.get("due_at"))
    proposed = _when(_t(fd.get("proposed_at")))
    extension = form.circular.startswith("Thông tư 03/2025")
    body = [
        f"Kính gửi: {_addressee(fd)}",
        f"{agency_name} đã tiếp nhận hồ sơ đề nghị giải quyết thủ tục hành chính: "
        f"{procedure_name or finding.get('procedure_code') or DOTS}.",
        f"Mã hồ sơ: {finding['dossier_code']}.",
        f"Thời hạn giải quyết theo quy định: {_when(legal_due)}.",
        f"Lý do chậm giải quyết: {_fill(fd, 'reason')}",
    ]
    if extension:
        body += [f"Đề nghị gia hạn thời gian giải quyết đến: {proposed}",
                 "Cơ quan, đơn vị thành thật xin lỗi Ông/Bà vì sự chậm trễ này; văn bản này đồng thời "
                 "thông báo cho Bộ phận Một cửa để điều chỉnh ngày trả kết quả (khoản 6 Điều 19 "
                 "Nghị định 118/2025/NĐ-CP). Việc hẹn lại ngày trả kết quả chỉ thực hiện một lần."]
    else:
        body += ["Sự chậm trễ này đã gây phiền hà cho Ông/Bà. Cơ quan, đơn vị thành thật xin lỗi "
                 f"và hẹn trả kết quả vào: {proposed}",
                 "Xin trân trọng cảm ơn!"]
    return _document(form, agency_name=agency_name, parent_name=parent_name,
                     number_suffix="PGH" if extension else "PXL", title=form.title, body=body,
                     signer="THỦ TRƯỞNG CƠ QUAN, ĐƠN VỊ")


def supplement_request(form, finding: dict, *, agency_name: str, parent_name: str | None = None,
                       procedure_name: str | None = None, component_name=None) -> bytes:
    details = finding.get("details") or {}
    missing = details.get("still_missing") or details.get("missing_components") or []
    name = component_name or (lambda cid: cid)
    items = [f"{i}. {name(c) or c}" for i, c in enumerate(missing, 1)] or [f"1. {DOTS}", f"2. {DOTS}"]
    fd = finding.get("form_data") or {}
    body = [f"Hồ sơ của: {_fill(fd, 'applicant_name')}",
            f"Nội dung yêu cầu giải quyết: {procedure_name or finding.get('procedure_code') or DOTS}.",
            f"Mã hồ sơ: {finding['dossier_code']}.",
            "Yêu cầu bổ sung, hoàn thiện hồ sơ một lần, đầy đủ, gồm những nội dung sau:", *items,
            f"Lý do: {_fill(fd, 'reason')}",
            "Trong quá trình hoàn thiện hồ sơ, nếu có vướng mắc, Ông/Bà liên hệ "
            f"{agency_name} để được hướng dẫn."]
    return _document(form, agency_name=agency_name, parent_name=parent_name, number_suffix="PYC",
                     title=form.title, body=body, signer="NGƯỜI HƯỚNG DẪN")


def stop_notice(form, *, dossier_code: str, agency_name: str, parent_name: str | None = None,
                procedure_name: str | None = None, requested_at=None, applicant_name: str | None = None,
                reason: str | None = None) -> bytes:
    fd = {"applicant_name": applicant_name, "reason": reason}
    body = [f"Kính gửi: {_addressee(fd)}",
            f"Căn cứ đề nghị dừng giải quyết hồ sơ của Ông/Bà ngày {_when(_t(requested_at))}; "
            "căn cứ Điều 21 Nghị định 118/2025/NĐ-CP,",
            f"{agency_name} thông báo dừng giải quyết hồ sơ: "
            f"{procedure_name or DOTS}, mã hồ sơ {dossier_code}.",
            f"Lý do dừng giải quyết theo đề nghị của Ông/Bà: {_fill(fd, 'reason')}",
            f"Hồ sơ đã nộp được trả lại tại: {DOTS}"]
    return _document(form, agency_name=agency_name, parent_name=parent_name, number_suffix="TB",
                     title=form.title, body=body, signer="THỦ TRƯỞNG CƠ QUAN, ĐƠN VỊ")


def attachments_for(finding: dict, *, agency_name: str, parent_name: str | None = None,
                    procedure_name: str | None = None, component_name=None,
                    rulesets=None) -> tuple[Attachment, ...]:
    """The document the law requires next for this finding, on its rule set's form (empty when
    none applies, the finding is resolved, or the rule set names no such form)."""
    key = FORM_FOR_RULE.get(finding.get("rule"))
    if key is None or finding.get("state") == "resolved":
        return ()
    try:
        rs = (rulesets or _rulesets()).get(finding.get("ruleset") or "")
    except KeyError:
        return ()
    form = rs.form(key)
    if form is None:
        return ()
    if key == "apology":
        content = apology(form, finding, agency_name=agency_name, parent_name=parent_name,
                          procedure_name=procedure_name)
    elif key == "stop_notice":
        fd = finding.get("form_data") or {}
        content = stop_notice(form, dossier_code=finding["dossier_code"], agency_name=agency_name,
                              parent_name=parent_name, procedure_name=procedure_name,
                              requested_at=fd.get("requested_at"), applicant_name=fd.get("applicant_name"),
                              reason=fd.get("reason"))
    else:
        content = supplement_request(form, finding, agency_name=agency_name, parent_name=parent_name,
                                     procedure_name=procedure_name, component_name=component_name)
    safe = "".join(ch if ch.isalnum() or ch in "-._" else "-" for ch in finding["dossier_code"])
    return (Attachment(f"mau-{form.number}-{safe}.docx", content),)
