"""Downloads: the table shown, as CSV (UTF-8 with BOM, so spreadsheet software shows Vietnamese
correctly) or as an Excel workbook (.xlsx, openpyxl), with Vietnamese headers."""
from __future__ import annotations

import csv
import io
from datetime import date, datetime

from .fmt import local

CSV_MIME = "text/csv; charset=utf-8"
XLSX_MIME = "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"


def _cell(v, for_excel: bool):
    if isinstance(v, datetime):
        t = local(v)
        # Excel has no time zones: the Vietnam wall-clock time, as shown on the page
        return t.replace(tzinfo=None) if for_excel else t.strftime("%d/%m/%Y %H:%M")
    if isinstance(v, date):
        return v if for_excel else v.strftime("%d/%m/%Y")
    return "" if v is None else v


def to_csv(headers: list[str], rows: list[list]) -> bytes:
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(headers)
    for r in rows:
        w.writerow([_cell(v, False) for v in r])
    return ("\ufeff" + buf.getvalue()).encode("utf-8")


def to_xlsx(title: str, headers: list[str], rows: list[list], notes: list[str] = ()) -> bytes:
    from openpyxl import Workbook
    from openpyxl.styles import Font

    wb = Workbook()
    ws = wb.active
    ws.title = title[:31]
    for n in notes:
        ws.append([n])
    ws.append(headers)
    for c in ws[ws.max_row]:
        c.font = Font(bold=True)
    for r in rows:
        ws.append([_cell(v, True) for v in r])
    for row in ws.iter_rows(min_row=len(notes) + 2):
        for c in row:
            if isinstance(c.value, datetime):
                c.number_format = "dd/mm/yyyy hh:mm"
            elif isinstance(c.value, date):
                c.number_format = "dd/mm/yyyy"
            elif isinstance(c.value, float):
                c.number_format = "#,##0.0"
    for i, h in enumerate(headers, start=1):
        ws.column_dimensions[ws.cell(row=len(notes) + 1, column=i).column_letter].width = max(10, min(40, len(h) + 2))
    ws.freeze_panes = ws.cell(row=len(notes) + 2, column=1)
    out = io.BytesIO()
    wb.save(out)
    return out.getvalue()
