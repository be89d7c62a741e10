"""The Giấy tiếp nhận hồ sơ và hẹn trả kết quả (Mẫu 01 of Circular 01/2018/TT-VPCP for 61/107,
of Circular 03/2025/TT-VPCP for 118/2025) of a dossier received through intake: its data as JSON
and a printable Vietnamese HTML page (`GET /v1/receipts/<event_id>[/print]`, or by dossier code:
`GET /v1/dossiers/<code>/receipt[/print]`).

Data come from the stored `dossier.received` event, the catalog (procedure and component names),
the directory (receiving unit) and the engine's `receipt_due` (the same due date the 202 gave and
the sla service stores). No identity number, phone or e-mail of the applicant is returned: the
page leaves the identity number for the counter to write by hand.
"""
from __future__ import annotations

from pathlib import Path

from jinja2 import Environment, FileSystemLoader, StrictUndefined

from shared.contracts.events import dossier_code_format

_ENV = Environment(loader=FileSystemLoader(Path(__file__).resolve().parent / "templates"),
                   autoescape=True, undefined=StrictUndefined)
CHANNEL_VI = {"direct": "Trực tiếp", "postal": "Qua dịch vụ bưu chính", "online": "Trực tuyến",
              "vneid": "Trực tuyến qua ứng dụng VNeID"}


def _agency(directory, code: str | None) -> dict | None:
    if not code:
        return None
    agency = directory.get(code) if directory is not None else None
    parent = None
    if agency is not None and agency.parent and directory is not None:
        p = directory.get(agency.parent)
        parent = {"code": p.code, "name": p.name} if p is not None else None
    return {"code": code, "name": agency.name if agency is not None else None, "parent": parent}


def receipt_data(event: dict, due: dict, ctx) -> dict:
    """Mẫu 01 data of a `dossier.received` event (as load_stored gives it) and its `receipt_due`."""
    data = event["data"]
    proc = ctx.catalog.get(data["procedure_code"], on=event["occurred_at"])
    rs = ctx.rulesets.get(due["ruleset"])
    form = rs.form("receipt")
    comps = list(dict.fromkeys(data.get("components") or ()))
    digitized = set(data.get("digitized") or ())
    reused = set(data.get("reused") or ())
    applicant = data.get("applicant") or {}
    return {
        "form": ({"number": form.number, "title": form.title, "circular": form.circular}
                 if form is not None else None),
        "dossier_code": event["dossier_code"],
        "dossier_code_format": dossier_code_format(event["dossier_code"]),
        "procedure": {"code": data["procedure_code"], "name": proc.name if proc else None,
                      "field": proc.field if proc else None},
        "components": [{"id": c, "name": (proc.component_name(c) if proc else None) or c,
                        "digitized": c in digitized, "reused": c in reused} for c in comps],
        "channel": data["channel"], "channel_text": CHANNEL_VI.get(data["channel"], data["channel"]),
        "applicant": {"kind": applicant.get("kind"), "name": applicant.get("name")},
        "received_at": due["received_at"], "received_at_local": due["received_at_local"],
        "due_at": due["due_at"], "due_at_local": due["due_at_local"],
        "appointment_at_printed": (data["appointment_at"].isoformat()
                                   if data.get("appointment_at") else None),
        "receiving_unit": _agency(ctx.directory, event["agency_code"]),
        "handling_agency": _agency(ctx.directory, data.get("handling_agency_code")),
        "ruleset": due["ruleset"], "ruleset_title": due["ruleset_title"],
        "ruleset_reason": due["ruleset_reason"], "limit": due["limit"],
        "catalog_version": due["catalog_version"], "calendar_version": due["calendar_version"],
        **({"reason": due["reason"]} if "reason" in due else {}),
    }


def receipt_html(receipt: dict) -> str:
    """The printable page (A5, Vietnamese)."""
    from shared.domain.engine.state import TZ
    from datetime import datetime

    def parts(iso):
        if not iso:
            return None
        t = datetime.fromisoformat(iso).astimezone(TZ)
        return {"h": f"{t:%H}", "m": f"{t:%M}", "d": f"{t:%d}", "mo": f"{t:%m}", "y": f"{t:%Y}"}
    return _ENV.get_template("receipt.html.j2").render(
        r=receipt, received=parts(receipt["received_at"]), due=parts(receipt["due_at"]))
