"""Vietnamese alert texts (Jinja2): subject and body per rule, plain text + HTML, SMS, digest.

Per-rule templates live in `jinja/rules/<RULE>.j2` (blocks `subject` and `requires`: what the
law requires now); the layouts are `alert.*.j2`, `sms.txt.j2`, `digest.*.j2`. The context is
built from a whitelist of finding fields: `details` and anything citizen-related never reach a
template (no ID numbers, phones or addresses of applicants).
"""
from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from jinja2 import Environment, FileSystemLoader, StrictUndefined, TemplateNotFound

from shared.domain.instants import TZ, stored_utc
from shared.domain.workcal import working_hours_vi

TEMPLATE_DIR = Path(__file__).resolve().parent / "jinja"
SEVERITY_TEXT = {"info": "thông tin", "warning": "cảnh báo", "critical": "nghiêm trọng"}
KIND_PREFIX = {"alert": "", "repeat": "[Nhắc lại] ", "resolved": "[Đã khắc phục] "}


class TemplateMissing(LookupError):
    pass


@dataclass(frozen=True)
class Rendered:
    subject: str
    text: str
    html: str
    sms: str


def local_text(t: datetime | str | None) -> str | None:
    """dd/mm/yyyy HH:MM in Asia/Ho_Chi_Minh."""
    if t is None or t == "":
        return None
    if isinstance(t, str):
        t = datetime.fromisoformat(t)
    return stored_utc(t).astimezone(TZ).strftime("%d/%m/%Y %H:%M")


def late_text(overdue_working_hours) -> str | None:
    """'quá hạn 2 ngày 3 giờ làm việc' (8 working hours per working day)."""
    if overdue_working_hours is None or float(overdue_working_hours) <= 0:
        return None
    return "quá hạn " + working_hours_vi(float(overdue_working_hours))


def _escalation_intro(ctx: dict, esc: dict) -> str:
    upward = "theo quy chế, cảnh báo được chuyển đến Thủ trưởng cơ quan cấp trên để chỉ đạo xử lý."
    if esc.get("reason") == "lateness":
        late = f" ({ctx['late_text']})" if ctx.get("late_text") else ""
        text = (f"Hồ sơ dưới đây đã quá hạn giải quyết{late}, đến mức phải báo cáo cấp trên; " + upward)
        if esc.get("acked_local"):
            text += f" Cơ quan chịu trách nhiệm đã xác nhận đã nhận cảnh báo lúc {esc['acked_local']}."
        return text
    after = f" sau {esc['after_wh']:g} giờ làm việc" if esc.get("after_wh") else ""
    sent = f", gửi lúc {esc['first_sent_local']}," if esc.get("first_sent_local") else ""
    return (f"Cảnh báo về hồ sơ dưới đây{sent} chưa được cơ quan chịu trách nhiệm xác nhận{after}; " + upward)


def greeting(name: str, title: str) -> str:
    if name and title:
        return f"ông/bà {name} ({title})"
    return f"ông/bà {name}" if name else (title or "Quý cơ quan")


class Renderer:
    def __init__(self, template_dir: Path = TEMPLATE_DIR, *, auto_reload: bool = False):
        # templates are code, read once: Jinja's default re-stats every template file on every
        # render (several stat calls per alert, each a GIL hand-off under the send threads)
        self.text_env = Environment(loader=FileSystemLoader(template_dir), autoescape=False,
                                    undefined=StrictUndefined, keep_trailing_newline=True,
                                    auto_reload=auto_reload)
        self.html_env = Environment(loader=FileSystemLoader(template_dir), autoescape=True,
                                    undefined=StrictUndefined, auto_reload=auto_reload)

    def _rule_blocks(self, rule: str, ctx: dict) -> tuple[str, str]:
        try:
            tpl = self.text_env.get_template(f"rules/{rule}.j2")
        except TemplateNotFound:
            raise TemplateMissing(f"no template for rule {rule!r} (services/notify/jinja/rules/)") from None
        c = tpl.new_context(ctx)
        subject = "".join(tpl.blocks["subject"](c)).strip()
        requires = "".join(tpl.blocks["requires"](c)).strip()
        return subject, requires

    def context(self, finding: dict, *, agency_name: str, procedure_name: str | None,
                recipient_name: str = "", recipient_title: str = "", dossier_url: str | None = None) -> dict:
        """The whitelisted template context of a finding."""
        return {
            "dossier_code": finding["dossier_code"],
            "procedure_code": (finding.get("procedure_code") or "") if procedure_name else "",
            "procedure_name": procedure_name or (f"mã {finding['procedure_code']}" if finding.get("procedure_code")
                                                 else "không rõ"),
            "agency_code": finding["agency_code"],
            "agency_name": agency_name,
            "rule": finding["rule"],
            "title": finding.get("title") or finding["rule"],
            "legal_basis": finding.get("legal_basis") or "",
            "severity": finding["severity"],
            "severity_text": SEVERITY_TEXT.get(finding["severity"], finding["severity"]),
            "due_local": local_text(finding.get("due_at")),
            "detected_local": local_text(finding.get("detected_at")) or "",
            "late_text": late_text(finding.get("overdue_working_hours")),
            "recipient_greeting": greeting(recipient_name, recipient_title),
            "dossier_url": dossier_url,
        }

    def render_alert(self, ctx: dict, *, kind: str = "alert", level: int = 0,
                     escalate_after_wh: float | None = None, ack_url: str | None = None,
                     requirement: str | None = None, escalation: dict | None = None) -> Rendered:
        """Subject, text, HTML and SMS of an alert (`kind` alert/repeat/resolved, `level` ≥ 1: escalated).

        `requirement` (the rule set's "what the law requires now") replaces the template's own.
        `escalation` (level ≥ 1): `reason` `lateness` (the rule set escalates a dossier this
        late, acknowledged or not) or `unacknowledged` (the alert reached the agency at
        `first_sent_local` and nobody acknowledged it for `after_wh` working hours), and
        `acked_local` when the agency acknowledged. Different facts, different words."""
        subject, requires = self._rule_blocks(ctx["rule"], ctx)
        if requirement:
            requires = requirement.strip()
        prefix = KIND_PREFIX.get(kind, "")
        if kind == "resolved":
            intro = ("Vi phạm dưới đây đã chấm dứt (hồ sơ không còn ở tình trạng vi phạm). "
                     "Thông báo này để đồng chí theo dõi, không cần xác nhận.")
            requires = "Không phải thực hiện thêm. Kết quả xử lý vẫn được ghi nhận trong báo cáo."
            ack_url = None
        elif level >= 1:
            prefix = "[Chuyển cấp] " + prefix
            intro = _escalation_intro(ctx, escalation or {"reason": "unacknowledged", "after_wh": escalate_after_wh})
        elif kind == "repeat":
            intro = "Nhắc lại: vi phạm dưới đây vẫn chưa được khắc phục và chưa được xác nhận."
        else:
            intro = "Hệ thống phát hiện hồ sơ vi phạm quy định về giải quyết thủ tục hành chính."
        full = dict(ctx, subject=prefix + subject, intro=intro, requires=requires, ack_url=ack_url,
                    prefix=prefix)
        text = self.text_env.get_template("alert.txt.j2").render(full)
        html = self.html_env.get_template("alert.html.j2").render(full)
        sms = self.text_env.get_template("sms.txt.j2").render(full).strip()
        return Rendered(prefix + subject, text, html, sms)

    def render_digest(self, ctx: dict) -> Rendered:
        """Daily digest: ctx has recipient_greeting, agency_name, date_local, overdue, due_soon,
        violations (lists of dicts with dossier_code, agency_name, title, due_local, late_text)."""
        n_over, n_soon, n_viol = len(ctx["overdue"]), len(ctx["due_soon"]), len(ctx["violations"])
        subject = (f"Tổng hợp hồ sơ ngày {ctx['date_local']} - {ctx['agency_name']}: "
                   f"{n_over} quá hạn, {n_soon} sắp đến hạn, {n_viol} vi phạm khác")
        full = dict(ctx, subject=subject)
        text = self.text_env.get_template("digest.txt.j2").render(full)
        html = self.html_env.get_template("digest.html.j2").render(full)
        sms = f"Tổng hợp {ctx['date_local']}: {n_over} hồ sơ quá hạn, {n_soon} sắp đến hạn, {n_viol} vi phạm khác."
        return Rendered(subject, text, html, sms)
