"""Vietnamese formats: dd/mm/yyyy, HH:MM (giờ Việt Nam), 1.234,5; the words of ../shared/UI.md."""
from __future__ import annotations

from datetime import date, datetime, timezone

from shared.domain.instants import TZ
from shared.domain.workcal import working_hours_vi

STATUS = {"received": "đã tiếp nhận", "handling": "đang giải quyết", "awaiting_supplement": "chờ bổ sung",
          "paused": "tạm dừng giải quyết", "resolved": "đã có kết quả", "returned": "đã trả kết quả",
          "refused": "từ chối tiếp nhận", "withdrawn": "dừng giải quyết theo yêu cầu",
          "stopped": "dừng giải quyết (Điều 21 NĐ 118)", None: "đã nộp trực tuyến, chưa tiếp nhận"}
SEVERITY = {"info": "thông tin", "warning": "cảnh báo", "critical": "nghiêm trọng"}
FINDING_STATE = {"open": "đang mở", "escalated": "đã chuyển cấp", "resolved": "đã khắc phục"}
LIST_STATE = {"overdue": "quá hạn", "due_soon": "sắp đến hạn", "open": "đang giải quyết trong hạn",
              "finished": "đã giải quyết"}
TIMING = {"early": "trước hạn", "on_time": "đúng hạn", "late": "trễ hạn"}
NOTIFY_STATUS = {"pending": "chờ gửi", "sent": "đã gửi", "failed": "gửi lỗi", "cancelled": "đã hủy"}
NOTIFY_KIND = {"alert": "cảnh báo", "repeat": "nhắc lại", "resolved": "thông báo đã khắc phục", "digest": "tổng hợp"}
ACK_VIA = {"dashboard": "trên trang theo dõi", "link": "qua đường dẫn trong thư", "api": "qua API"}
CHANNEL = {"email": "thư điện tử", "sms": "tin nhắn", "webhook": "webhook"}
ROLE = {"officer": "cán bộ xử lý", "one_stop_chief": "người đứng đầu Bộ phận Một cửa",
        "agency_head": "người đứng đầu cơ quan", "parent_head": "người đứng đầu cơ quan cấp trên",
        "head": "người đứng đầu cơ quan", "deputies": "cấp phó", "responsible": "người chịu trách nhiệm"}
CHANNEL_IN = {"direct": "trực tiếp", "postal": "bưu chính", "online": "trực tuyến"}
ACCOUNT_ROLE = {"agency": "cơ quan, đơn vị", "supervisor": "giám sát", "admin": "quản trị"}


def local(t: datetime | str | None) -> datetime | None:
    if t is None or t == "":
        return None
    if isinstance(t, str):
        t = datetime.fromisoformat(t)
    if t.tzinfo is None:
        t = t.replace(tzinfo=timezone.utc)
    return t.astimezone(TZ)


def dt(t) -> str:
    """dd/mm/yyyy HH:MM in Vietnam time; '' for none."""
    t = local(t)
    return t.strftime("%d/%m/%Y %H:%M") if t else ""


def d(t) -> str:
    if isinstance(t, date) and not isinstance(t, datetime):
        return t.strftime("%d/%m/%Y")
    t = local(t)
    return t.strftime("%d/%m/%Y") if t else ""


def num(x, decimals: int = 0) -> str:
    """1.234,5: '.' for thousands, ',' for decimals."""
    if x is None:
        return "—"
    s = f"{x:,.{decimals}f}"
    return s.replace(",", "\x00").replace(".", ",").replace("\x00", ".")


def pct(x) -> str:
    return "—" if x is None else num(x, 1) + " %"


def working_days(hours: float | None) -> str:
    """'3 ngày 2 giờ làm việc' (a working day = 8 working hours)."""
    if hours is None or hours <= 0:
        return ""
    return working_hours_vi(hours)


def month(m: date) -> str:
    return f"{m.month:02d}/{m.year}"


FILTERS = {"dt": dt, "d": d, "num": num, "pct": pct, "wd": working_days, "month": month}
