"""The supervisors' dashboard: server-rendered Vietnamese pages (Flask + Jinja), no JavaScript.

`gunicorn 'services.dashboard.app:create_app()'`. Nothing connects at import or in the factory:
the database, the view and the feed are built on first use in each (forked) worker.

Sign-in: an API key (role agency, supervisor or admin; `motcua keys create`) is exchanged for a
signed session cookie (HttpOnly, SameSite=Lax, Secure when DASHBOARD_COOKIE_SECURE=1) holding
the key id only; the key is re-checked (revocation) at most every few seconds. Every POST carries
the session's CSRF token. A person sees exactly their key's agency subtree, as the APIs do.

Test configuration (`create_app(settings, clock, config=...)`): DIRECTORY, CATALOG, ENGINE_CTX,
SECRET_KEY, COOKIE_SECURE, REFRESH_SECONDS (without the feed: reload the view when older than
this; 0 = on every request), FEED (True: keep the view current from Kafka, `feed.Feed`),
NOTIFY_POLICY, ENV.
"""
from __future__ import annotations

import hmac
import logging
import os
import secrets
import threading
import time
from datetime import date, datetime, time as dtime, timedelta
from urllib.parse import urlencode

from shared.contracts.events import DOSSIER_CODE
from shared.platform.config import Settings, env
from shared.platform.runtime import Lazy
from shared.domain.instants import TZ

from . import fmt, view as v
from .bootstrap import bootstrap
from .exports import CSV_MIME, XLSX_MIME, to_csv, to_xlsx

log = logging.getLogger("motcua.dashboard")
READ_ROLES = ("agency", "supervisor", "admin")
PAGE = 50
LATE_PAGE = 25
SESSION_HOURS = 8


class PageError(Exception):
    """A request the page cannot answer: shown as an error page with this status and message."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status, self.message = status, message


def create_app(settings: Settings | None = None, clock=None, *, db=None, config: dict | None = None):
    """Build the dashboard (Flask)."""
    from flask import (Flask, Response, abort, flash, g, redirect, render_template, request, session,
                       url_for)

    app = Flask("motcua.dashboard", template_folder="templates", static_folder="static",
                root_path=os.path.dirname(os.path.abspath(__file__)))
    app.config.update(config or {})
    boot = bootstrap(settings, environ={**os.environ, **(app.config.get("ENV") or {})}, clock=clock, db=db,
                     directory=app.config.get("DIRECTORY"), catalog=app.config.get("CATALOG"),
                     ctx=app.config.get("ENGINE_CTX"), policy=app.config.get("NOTIFY_POLICY"))
    environ, settings, clock = boot.environ, boot.settings, boot.clock
    secret_key = app.config.get("SECRET_KEY") or env("DASHBOARD_SECRET", environ)
    if not secret_key:
        log.warning("DASHBOARD_SECRET is not set: a random one is used, sessions end when the process does")
        secret_key = secrets.token_hex(32)
    secure = app.config.get("COOKIE_SECURE")
    if secure is None:
        secure = env("DASHBOARD_COOKIE_SECURE", environ) in ("1", "true", "yes")
    app.config.update(SECRET_KEY=secret_key, SESSION_COOKIE_NAME="motcua_session",
                      SESSION_COOKIE_HTTPONLY=True, SESSION_COOKIE_SAMESITE="Lax",
                      SESSION_COOKIE_SECURE=bool(secure),
                      PERMANENT_SESSION_LIFETIME=timedelta(hours=SESSION_HOURS),
                      MAX_CONTENT_LENGTH=64 * 1024)
    refresh = app.config.get("REFRESH_SECONDS")
    refresh = float(env("DASHBOARD_REFRESH_S", environ) if refresh is None else refresh)
    use_feed = app.config.get("FEED")
    if use_feed is None:
        use_feed = env("DASHBOARD_FEED", environ) in ("1", "true", "yes")
    app.jinja_env.filters.update(fmt.FILTERS)
    app.jinja_env.globals.update(fmt=fmt)

    get_db = boot.db

    def _store():
        from .store import DashboardStore
        # this process's own acknowledgements reach its view at once
        return DashboardStore(get_db(), clock, on_change=lambda _key, msg: the_view.alerts.apply(msg))

    get_store = Lazy(_store)

    get_directory, get_catalog, get_ctx = boot.directory, boot.catalog, boot.ctx

    def _notify():
        from services.notify.service import NotifyService
        return NotifyService(get_store().notify, boot.policy(), get_directory(), {}, clock,
                             secret=env("NOTIFY_SECRET", environ))

    get_notify = Lazy(_notify)

    # -- the view ---------------------------------------------------------------------------------
    the_view = v.View()
    load_lock = threading.Lock()
    loaded = {"at": None}
    started: dict = {}          # the feed once started (a scrape never starts it)

    def _feed():
        from .feed import Feed
        f = Feed(settings, get_store(), the_view, clock)
        f.start()
        started["feed"] = f
        return f

    get_feed = Lazy(_feed)

    def current_view() -> v.View:
        if use_feed:
            f = get_feed()
            if not f.wait_loaded(timeout=60):
                raise PageError(503, "Hệ thống đang nạp dữ liệu hồ sơ, vui lòng tải lại trang sau ít phút.")
            return the_view
        with load_lock:
            if loaded["at"] is None or time.monotonic() - loaded["at"] >= refresh:
                get_store().load(the_view)
                loaded["at"] = time.monotonic()
        return the_view

    app.extensions["motcua.dashboard"] = {"view": the_view, "store": get_store, "feed": get_feed}
    metrics = dashboard_metrics(the_view, lambda: started.get("feed"))

    # -- sign-in, CSRF ------------------------------------------------------------------------------
    def csrf_token() -> str:
        tok = session.get("csrf")
        if not tok:
            tok = session["csrf"] = secrets.token_urlsafe(32)
        return tok

    app.jinja_env.globals["csrf_token"] = csrf_token

    @app.before_request
    def _guard():
        g.principal = None
        g.t0 = time.perf_counter()
        if request.endpoint in ("static", "healthz", "metrics_view"):
            return None
        if request.method == "POST":
            sent = request.form.get("csrf_token", "")
            if not sent or not session.get("csrf") or not hmac.compare_digest(sent, session["csrf"]):
                raise PageError(400, "Phiên làm việc không hợp lệ hoặc đã hết hạn (mã chống giả mạo CSRF "
                                     "không khớp). Vui lòng tải lại trang và thử lại.")
        key_id = session.get("key_id")
        if key_id:
            p = get_store().principal_of(key_id)
            if p is None or p.role not in READ_ROLES:
                session.clear()
            else:
                g.principal = p
        if g.principal is None and request.endpoint not in ("login", "login_post"):
            if request.method == "GET":
                return redirect(url_for("login", next=request.full_path.rstrip("?")))
            raise PageError(401, "Bạn cần đăng nhập lại.")
        return None

    @app.after_request
    def _headers(resp):
        resp.headers.setdefault("Content-Security-Policy",
                                "default-src 'self'; img-src 'self' data:; style-src 'self'; "
                                "frame-ancestors 'none'; form-action 'self'; base-uri 'none'")
        resp.headers.setdefault("X-Content-Type-Options", "nosniff")
        resp.headers.setdefault("Referrer-Policy", "same-origin")
        if g.get("principal") is not None:
            resp.headers.setdefault("Cache-Control", "no-store")
        route = request.url_rule.rule if request.url_rule is not None else "<unmatched>"
        metrics.requests.labels("dashboard", route, request.method, str(resp.status_code)).inc()
        metrics.latency.labels("dashboard", route).observe(time.perf_counter() - g.get("t0", time.perf_counter()))
        return resp

    @app.errorhandler(PageError)
    def _page_error(exc: PageError):
        return render_template("error.html.j2", status=exc.status, message=exc.message), exc.status

    @app.errorhandler(404)
    def _not_found(_exc):
        return render_template("error.html.j2", status=404, message="Không có trang này."), 404

    @app.errorhandler(405)
    def _not_allowed(_exc):
        return render_template("error.html.j2", status=405, message="Thao tác này không được phép tại địa chỉ này."), 405

    @app.errorhandler(413)
    def _too_large(_exc):
        return render_template("error.html.j2", status=413, message="Dữ liệu gửi lên quá lớn."), 413

    @app.errorhandler(Exception)
    def _unexpected(exc):
        from pymongo.errors import PyMongoError
        from werkzeug.exceptions import HTTPException
        if isinstance(exc, HTTPException):
            return render_template("error.html.j2", status=exc.code, message=exc.description), exc.code
        if isinstance(exc, PyMongoError):
            log.error("store unavailable: %s", exc.__class__.__name__)
            return render_template("error.html.j2", status=503,
                                   message="Cơ sở dữ liệu tạm thời không trả lời. Vui lòng thử lại sau."), 503
        log.exception("unexpected error")
        return render_template("error.html.j2", status=500, message="Lỗi hệ thống. Vui lòng thử lại sau."), 500

    def safe_next(target: str | None) -> str:
        if target and target.startswith("/") and not target.startswith("//") and "\\" not in target:
            return target
        return url_for("overview")

    @app.get("/dang-nhap")
    def login():
        if g.principal is not None:
            return redirect(safe_next(request.args.get("next")))
        return render_template("login.html.j2", next=request.args.get("next", ""), error=None)

    @app.post("/dang-nhap")
    def login_post():
        secret = (request.form.get("key") or "").strip()
        nxt = request.form.get("next", "")
        p = get_store().keys.verify(secret) if secret else None
        if p is None:
            return render_template("login.html.j2", next=nxt,
                                   error="Khóa truy cập không đúng hoặc đã bị thu hồi."), 401
        if p.role not in READ_ROLES:
            return render_template("login.html.j2", next=nxt,
                                   error="Khóa của quầy tiếp nhận (vai trò counter) không dùng để xem "
                                         "bảng theo dõi; hãy dùng khóa vai trò cơ quan, giám sát hoặc quản trị."), 403
        session.clear()                       # a new session: no fixation
        session.permanent = True
        session["key_id"] = p.key_id
        session["csrf"] = secrets.token_urlsafe(32)
        log.info("signed in", extra={"fields": {"key_id": p.key_id, "agency": p.agency_code}})
        return redirect(safe_next(nxt))

    @app.post("/dang-xuat")
    def logout():
        session.clear()
        flash("Bạn đã đăng xuất.")
        return redirect(url_for("login"))

    @app.get("/healthz")
    def healthz():
        return {"status": "ok"}

    @app.get("/metrics")
    def metrics_view():
        from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
        # this process's registry, never the multiprocess files: the view and its feed are per
        # process (one gunicorn worker, gunicorn.conf.py)
        return Response(generate_latest(metrics.registry), headers={"Content-Type": CONTENT_TYPE_LATEST})

    # -- request helpers ------------------------------------------------------------------------
    def scope_of(p) -> set[str]:
        d = get_directory()
        return set(d.subtree(p.agency_code)) if p.agency_code in d else {p.agency_code}

    def agency_name(code: str | None) -> str:
        a = get_directory().get(code) if code else None
        return a.name if a else (code or "")

    def procedure(code: str | None):
        c = get_catalog()
        return c.get(code) if code and code in c else None

    def procedure_name(code: str | None) -> str:
        pr = procedure(code)
        return pr.name if pr else (code or "")

    def rule_titles() -> dict[str, str]:
        from shared.domain.engine.ruledata import default_rulesets
        try:
            rs = get_ctx().rulesets
        except Exception:   # noqa: BLE001
            rs = default_rulesets()
        out = {}
        for rid in rs.ids:
            for code, spec in rs.get(rid).rules.items():
                out.setdefault(code, spec.title)
        return out

    get_rule_titles = Lazy(rule_titles)

    def check_params(allowed: set[str]):
        unknown = sorted(set(request.args) - allowed)
        if unknown:
            raise PageError(400, f"Tham số không hợp lệ: {', '.join(unknown)} "
                                 f"(được dùng: {', '.join(sorted(allowed))}).")

    def arg_date(name: str, label: str) -> date | None:
        raw = request.args.get(name, "").strip()
        if not raw:
            return None
        for f in ("%Y-%m-%d", "%d/%m/%Y"):
            try:
                return datetime.strptime(raw, f).date()
            except ValueError:
                pass
        raise PageError(400, f"{label} không hợp lệ: «{raw[:40]}» (nhập theo dạng dd/mm/yyyy).")

    def arg_choice(name: str, choices, label: str) -> str | None:
        raw = request.args.get(name, "").strip()
        if not raw:
            return None
        if raw not in choices:
            raise PageError(400, f"{label} không hợp lệ: «{raw[:40]}».")
        return raw

    def arg_page() -> int:
        raw = request.args.get("page", "1")
        if not raw.isdigit() or not 1 <= int(raw) <= 100_000:
            raise PageError(400, "Số trang không hợp lệ.")
        return int(raw)

    def arg_agency(p, scope: set[str]) -> set[str] | None:
        code = request.args.get("agency", "").strip()
        if not code:
            return None
        if code not in scope:
            raise PageError(403, f"Cơ quan, đơn vị «{code[:40]}» không thuộc phạm vi của bạn.")
        d = get_directory()
        return set(d.subtree(code)) & scope if code in d else {code}

    def period(default_month: bool) -> tuple[date | None, date | None, datetime | None, datetime | None]:
        d_from = arg_date("from", "Từ ngày")
        d_to = arg_date("to", "Đến ngày")
        if default_month:
            today = clock.now().astimezone(TZ).date()
            d_from = d_from or today.replace(day=1)
            d_to = d_to or today
        if d_from and d_to and d_from > d_to:
            raise PageError(400, "«Từ ngày» không được sau «Đến ngày».")
        start = datetime.combine(d_from, dtime(0), tzinfo=TZ) if d_from else None
        end = datetime.combine(d_to + timedelta(days=1), dtime(0), tzinfo=TZ) if d_to else None
        return d_from, d_to, start, end

    def agencies_choice(scope: set[str]) -> list[tuple[str, str]]:
        return sorted(((c, agency_name(c)) for c in scope), key=lambda x: (x[1], x[0]))

    def fields_choice() -> list[str]:
        return sorted({pr.field for pr in get_catalog() if pr.field})

    def procedures_choice() -> list[tuple[str, str]]:
        return sorted(((pr.code, pr.name) for pr in get_catalog()), key=lambda x: x[0])

    def page_links(total: int, page: int, size: int) -> dict:
        pages = max(1, -(-total // size))
        args = {k: val for k, val in request.args.items() if k != "page"}

        def link(n):
            return request.path + "?" + urlencode({**args, "page": n})
        return {"page": page, "pages": pages, "total": total, "first": (page - 1) * size + 1 if total else 0,
                "last": min(total, page * size), "prev": link(page - 1) if page > 1 else None,
                "next": link(page + 1) if page < pages else None}

    def export_link(kind: str) -> str:
        args = {k: val for k, val in request.args.items() if k not in ("page", "format")}
        return request.path + "?" + urlencode({**args, "format": kind})

    def download(fmt_: str, name: str, title: str, headers: list[str], rows: list[list], notes=()):
        if fmt_ == "csv":
            body, mime, ext = to_csv(headers, rows), CSV_MIME, "csv"
        else:
            body, mime, ext = to_xlsx(title, headers, rows, list(notes)), XLSX_MIME, "xlsx"
        return Response(body, mimetype=mime,
                        headers={"Content-Disposition": f"attachment; filename={name}.{ext}"})

    def thresholds() -> v.Thresholds:
        ctx = None
        try:
            ctx = get_ctx()
        except Exception:   # noqa: BLE001
            pass
        if ctx is not None:
            return v.Thresholds(clock.now(), ctx.calendars)
        from shared.domain.workcal import calendar_for
        return v.Thresholds(clock.now(), calendar_for)

    def row_view(r: v.Row, th: v.Thresholds) -> dict:
        st = v.dossier_state(r, th)
        return {"row": r, "state": st, "late": fmt.working_days(th.overdue_hours(r)),
                "procedure": procedure_name(r.procedure_code), "agency": agency_name(r.handling_agency)}

    @app.context_processor
    def _common():
        p = g.get("principal")
        return {"principal": p, "me_agency": agency_name(p.agency_code) if p else "",
                "now_local": fmt.dt(clock.now())}

    # -- overview ----------------------------------------------------------------------------------
    @app.get("/")
    def overview():
        from services.sla.reports import judge
        check_params(set())
        p = g.principal
        vw = current_view()
        th = thresholds()
        scope = scope_of(p)
        data = v.overview(vw.rows(), vw.open_findings(), vw.acked(), scope, th, judge)
        titles = get_rule_titles()
        return render_template("overview.html.j2", data=data, chart=trend_chart(data["trend"]),
                               oldest=[row_view(r, th) for r in data["oldest"]],
                               agencies=[(c, agency_name(c), n) for c, n in data["agencies"]],
                               violations=[(rule, titles.get(rule, rule), sev, n)
                                           for (rule, sev), n in data["violations"]])

    # -- dossier list ----------------------------------------------------------------------------
    DOSSIER_HEADERS = ["Mã hồ sơ", "Thủ tục hành chính", "Lĩnh vực", "Đơn vị đang xử lý", "Tình trạng",
                       "Ngày tiếp nhận", "Hạn giải quyết theo quy định", "Quá hạn", "Cán bộ xử lý"]

    @app.get("/ho-so")
    def dossiers():
        check_params({"agency", "field", "procedure", "rule", "severity", "state", "from", "to", "page", "format"})
        p = g.principal
        scope = scope_of(p)
        flt = v.DossierFilter(agencies=arg_agency(p, scope), field=request.args.get("field") or None,
                              procedure=request.args.get("procedure") or None,
                              rule=request.args.get("rule") or None,
                              severity=arg_choice("severity", fmt.SEVERITY, "Mức độ"),
                              state=arg_choice("state", fmt.LIST_STATE, "Tình trạng"))
        d_from, d_to, flt.start, flt.end = period(False)
        export = arg_choice("format", ("csv", "xlsx"), "Định dạng tải xuống")
        page = arg_page()
        vw = current_view()
        th = thresholds()
        rows = v.select_dossiers(vw.rows(), vw.open_findings(), scope, flt, th)
        if export:
            out = []
            for r in rows:
                rv = row_view(r, th)
                out.append([r.code, rv["procedure"], r.field, rv["agency"], fmt.LIST_STATE[rv["state"]],
                            r.received_at, r.due_at, rv["late"], r.officer])
            return download(export, "ho-so", "Hồ sơ", DOSSIER_HEADERS, out)
        shown = rows[(page - 1) * PAGE: page * PAGE]
        return render_template("dossiers.html.j2", rows=[row_view(r, th) for r in shown],
                               pager=page_links(len(rows), page, PAGE), args=request.args,
                               d_from=d_from, d_to=d_to, agencies=agencies_choice(scope),
                               fields=fields_choice(), procedures=procedures_choice(),
                               rules=sorted(get_rule_titles().items()),
                               csv_link=export_link("csv"), xlsx_link=export_link("xlsx"))

    # -- findings list ---------------------------------------------------------------------------
    FINDING_HEADERS = ["Mã hồ sơ", "Vi phạm", "Mức độ", "Tình trạng", "Cơ quan chịu trách nhiệm",
                       "Phát hiện lúc", "Hạn", "Đã xác nhận cảnh báo"]

    @app.get("/vi-pham")
    def findings():
        check_params({"agency", "field", "procedure", "rule", "severity", "state", "unacked", "from", "to",
                      "page", "format"})
        p = g.principal
        scope = scope_of(p)
        state = request.args.get("state", "open")
        if state not in ("open", "escalated", "resolved", "all"):
            raise PageError(400, f"Tình trạng vi phạm không hợp lệ: «{state[:40]}».")
        flt = v.FindingFilter(agencies=arg_agency(p, scope), rule=request.args.get("rule") or None,
                              severity=arg_choice("severity", fmt.SEVERITY, "Mức độ"),
                              state=None if state == "all" else state,
                              unacked=request.args.get("unacked") == "1")
        d_from, d_to, flt.start, flt.end = period(False)
        export = arg_choice("format", ("csv", "xlsx"), "Định dạng tải xuống")
        page = arg_page()
        vw = current_view()
        acked = vw.acked()
        rows = v.select_findings(vw.open_findings() if state == "open" else vw.findings(), acked, scope, flt, vw.row,
                                 field=request.args.get("field") or None,
                                 procedure=request.args.get("procedure") or None)
        titles = get_rule_titles()
        if export:
            out = [[f.dossier_code, f.title or titles.get(f.rule, f.rule), fmt.SEVERITY.get(f.severity),
                    fmt.FINDING_STATE.get(f.state), agency_name(f.agency_code), f.detected_at, f.due_at,
                    "có" if f.id in acked else "chưa"] for f in rows]
            return download(export, "vi-pham", "Vi phạm", FINDING_HEADERS, out)
        shown = rows[(page - 1) * PAGE: page * PAGE]
        return render_template("findings.html.j2", rows=shown, acked=acked, titles=titles,
                               agency_name=agency_name, pager=page_links(len(rows), page, PAGE),
                               args=request.args, state=state, d_from=d_from, d_to=d_to,
                               agencies=agencies_choice(scope), fields=fields_choice(),
                               procedures=procedures_choice(), rules=sorted(titles.items()),
                               csv_link=export_link("csv"), xlsx_link=export_link("xlsx"))

    # -- one dossier -----------------------------------------------------------------------------
    def visible_doc(p, code: str) -> dict:
        if not DOSSIER_CODE.match(code):
            raise PageError(400, "Mã hồ sơ không hợp lệ.")
        doc = get_store().dossier(code)
        scope = scope_of(p)
        if doc is None or not any(a in scope for a in doc.get("agencies", ())):
            raise PageError(404, f"Không tìm thấy hồ sơ {code} trong phạm vi cơ quan, đơn vị của bạn.")
        return doc

    @app.get("/ho-so/<path:code>")
    def dossier(code):
        from services.sla.repository import strip_dossier
        from shared.domain import engine
        check_params(set())
        p = g.principal
        doc = visible_doc(p, code)
        now = clock.now()
        row = v.row_from_doc(doc)
        th = thresholds()
        explained, no_deadline = None, None
        try:
            state = engine.DossierState.from_doc(strip_dossier(doc))
            explained = engine.explain_deadline(state, get_ctx())
        except ValueError as exc:
            no_deadline = str(exc)
        st = get_store()
        finds = st.findings_of(doc)
        nstate, by_finding, acks = current_view().alerts.of([f["_id"] for f in finds])
        steps = v.steps(doc, now)
        pr = procedure(row.procedure_code)
        return render_template("dossier.html.j2", code=code, doc=doc, row=row, state=v.dossier_state(row, th),
                               late=fmt.working_days(th.overdue_hours(row)), explained=explained,
                               no_deadline=no_deadline, findings=finds, nstate=nstate, notes=by_finding, acks=acks,
                               steps=steps, procedure=pr, agency_name=agency_name,
                               titles=get_rule_titles())

    @app.post("/xac-nhan-canh-bao")
    def acknowledge():
        p = g.principal
        fid = (request.form.get("finding_id") or "").strip()
        code = (request.form.get("dossier_code") or "").strip()
        note = (request.form.get("note") or "").strip() or None
        if not fid or len(fid) > 128 or not DOSSIER_CODE.match(code):
            raise PageError(400, "Thiếu mã vi phạm hoặc mã hồ sơ.")
        if note is not None and len(note) > 1000:
            raise PageError(400, "Ghi chú dài quá 1.000 ký tự.")
        doc = visible_doc(p, code)
        if fid not in doc.get("finding_ids", ()):
            raise PageError(404, "Vi phạm này không thuộc hồ sơ đã chọn.")
        f = current_view().finding(fid)
        if f is None or current_view().alerts.finding(fid) is None \
                or not p.can_access(f.agency_code, get_directory()):
            raise PageError(409, "Cảnh báo về vi phạm này chưa được gửi (hoặc không thuộc phạm vi của bạn), "
                                 "nên chưa thể xác nhận.")
        res = get_notify().acknowledge(fid, f"key:{p.key_id}", by=f"key:{p.key_id}@{p.agency_code}",
                                       via="dashboard", note=note)
        if res is None:
            raise PageError(404, "Không tìm thấy cảnh báo.")
        the_view.put_ack(fid, res.get("acknowledged_at"))
        flash("Đã xác nhận đã nhận cảnh báo lúc " + fmt.dt(res.get("acknowledged_at"))
              + ". Việc nhắc lại và chuyển cấp do chưa xác nhận của cảnh báo này đã dừng.")
        return redirect(url_for("dossier", code=code) + "#canh-bao")

    # -- reports -------------------------------------------------------------------------------------
    @app.get("/bao-cao")
    def report():
        from services.sla import reports
        check_params({"agency", "from", "to", "group_by", "format"})
        p = g.principal
        scope = scope_of(p)
        agencies = arg_agency(p, scope) or scope
        d_from, d_to, start, end = period(True)
        group_by = arg_choice("group_by", reports.GROUP_BY, "Nhóm theo") or "agency"
        export = arg_choice("format", ("csv", "xlsx"), "Định dạng tải xuống")
        params = reports.Params(request.args.get("agency") or None, start, end, d_from, d_to, group_by)
        vw = current_view()
        rows = [r for r in vw.rows() if r.handling_agency in agencies]
        rep = reports.report_of(rows, params, get_catalog(), get_directory())
        cols = ["group", "name", *reports.COUNTS, *reports.RATES]
        if export:
            head = [reports.HEADERS_VI[c] for c in cols]
            out = [[r.get(c) for c in cols] for r in rep["rows"]]
            out.append(["Tổng cộng", ""] + [rep["total"].get(c) for c in (*reports.COUNTS, *reports.RATES)])
            notes = [rep["title"], f"Kỳ báo cáo: từ ngày {fmt.d(d_from)} đến ngày {fmt.d(d_to)}",
                     "Đơn vị: " + agency_name(request.args.get("agency") or p.agency_code)]
            return download(export, "bieu-06", "Biểu 06", head, out, notes)
        return render_template("report.html.j2", rep=rep, cols=cols, headers=reports.HEADERS_VI,
                               rates=set(reports.RATES), d_from=d_from, d_to=d_to, group_by=group_by,
                               args=request.args, agencies=agencies_choice(scope),
                               csv_link=export_link("csv"), xlsx_link=export_link("xlsx"),
                               groups766=reports.COVERED_766)

    LATE_HEADERS = ["Mã hồ sơ", "Thủ tục hành chính", "Đơn vị đang xử lý", "Hạn giải quyết theo quy định",
                    "Ngày có kết quả", "Trễ hạn", "Bước trễ hạn", "Từ", "Đến", "Đơn vị giữ hồ sơ",
                    "Cán bộ giữ hồ sơ"]

    @app.get("/bao-cao/tre-han")
    def late_report():
        check_params({"agency", "from", "to", "page", "format"})
        p = g.principal
        scope = scope_of(p)
        agencies = arg_agency(p, scope)
        d_from, d_to, start, end = period(True)
        export = arg_choice("format", ("csv", "xlsx"), "Định dạng tải xuống")
        page = arg_page()
        vw = current_view()
        th = thresholds()
        now = clock.now()
        horizon = min(end, now)
        late = []
        for r in vw.rows():
            if not v.visible(r, scope) or (agencies is not None and r.handling_agency not in agencies):
                continue
            if r.due_at is None or r.received_at is None or r.received_at >= end or r.due_at >= horizon:
                continue
            fin = r.finished_at
            if fin is not None and fin <= max(r.due_at, start):
                continue
            if fin is None and r.clock_now(now) <= r.due_at:
                continue          # paused before its due date: not late
            late.append((th.overdue_hours(r) or 0.0, r))
        late.sort(key=lambda x: (-x[0], x[1].code))
        st = get_store()

        def detail(r: v.Row) -> dict:
            doc = st.dossier_cached(r.code, r.rev) or {}
            steps = [s for s in v.steps(doc, now) if s["late"]] if doc else []
            return {"row": r, "procedure": procedure_name(r.procedure_code), "agency": agency_name(r.handling_agency),
                    "late": fmt.working_days(th.overdue_hours(r)), "steps": steps}

        if export:
            out = []
            for _h, r in late:
                dt_ = detail(r)
                base = [r.code, dt_["procedure"], dt_["agency"], r.due_at, r.resolved_at, dt_["late"]]
                for s in dt_["steps"] or [None]:
                    if s is None:
                        out.append(base + ["", "", "", "", ""])
                    else:
                        out.append(base + [s["name"], max(s["start"], r.due_at), s["end"], agency_name(s["agency"]),
                                           (s["officer"] or {}).get("name") or "chưa rõ"])
            return download(export, "ho-so-tre-han", "Hồ sơ trễ hạn", LATE_HEADERS, out,
                            [f"Hồ sơ trễ hạn từ ngày {fmt.d(d_from)} đến ngày {fmt.d(d_to)}"])
        shown = [detail(r) for _h, r in late[(page - 1) * LATE_PAGE: page * LATE_PAGE]]
        return render_template("late.html.j2", rows=shown, pager=page_links(len(late), page, LATE_PAGE),
                               d_from=d_from, d_to=d_to, args=request.args, agencies=agencies_choice(scope),
                               agency_name=agency_name, csv_link=export_link("csv"),
                               xlsx_link=export_link("xlsx"))

    return app


def dashboard_metrics(the_view: v.View, feed):
    """The dashboard's Prometheus metrics: the APIs' `http_requests_total` and
    `http_request_duration_seconds` (`service="dashboard"`, route = the URL rule), and, read at
    scrape time, the size of the in-memory view and the feed's lag (`feed()`: the Feed or None)."""
    from prometheus_client import CollectorRegistry, Counter, Histogram

    from shared.platform.httpapi import LATENCY_BUCKETS, Metrics

    reg = CollectorRegistry()
    m = Metrics(registry=reg,
                requests=Counter("http_requests_total", "HTTP requests by route, method and status",
                                 ["service", "route", "method", "status"], registry=reg),
                latency=Histogram("http_request_duration_seconds", "HTTP request latency by route",
                                  ["service", "route"], registry=reg, buckets=LATENCY_BUCKETS))
    reg.register(_ViewCollector(the_view, feed))
    return m


class _ViewCollector:
    """Scrape-time gauges of the view and its feed (no store or Kafka call on a scrape)."""

    def __init__(self, the_view: v.View, feed):
        self.view, self.feed = the_view, feed

    def collect(self):
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

        size = GaugeMetricFamily("dashboard_view_rows", "rows held in the in-memory view", labels=["kind"])
        alerts = self.view.alerts.sizes()
        for kind, n in (("dossiers", len(self.view)), ("findings", self.view.findings_count()),
                        ("alert_findings", alerts["alert_findings"]), ("notifications", alerts["notifications"])):
            size.add_metric([kind], n)
        yield size
        f = self.feed()
        if f is None:
            return
        lag = GaugeMetricFamily("dashboard_feed_lag", "messages of the topic not yet applied to the view",
                                labels=["topic"])
        for topic, n in sorted(f.lag.items()):
            lag.add_metric([topic], n)
        yield lag
        if f.lag_read_at is not None:
            yield GaugeMetricFamily("dashboard_feed_lag_age_seconds", "seconds since dashboard_feed_lag was read",
                                    value=round(time.monotonic() - f.lag_read_at, 3))
        yield GaugeMetricFamily("dashboard_feed_up", "1 while the feed runs, 0 while it restarts after an error",
                                value=0 if f.error else 1)
        yield CounterMetricFamily("dashboard_feed_messages", "messages applied since the process started",
                                  value=f.records)


def trend_chart(points: list[dict]) -> dict:
    """Geometry of the 12-month stacked bar chart (inline SVG, drawn by the template)."""
    width, height, left, bottom, top = 720, 240, 44, 40, 16
    plot_h = height - bottom - top
    top_n = max([p["judged"] for p in points] + [0])
    most = max(4, -(-top_n // 4) * 4)          # a multiple of 4: whole numbers on the 5 ticks
    step = (width - left - 8) / len(points)
    bars = []
    for i, p in enumerate(points):
        x = left + i * step + step * 0.15
        w = step * 0.7
        h_good = plot_h * p["good"] / most
        h_late = plot_h * p["late"] / most
        y_good = top + plot_h - h_good
        bars.append({"x": round(x, 1), "w": round(w, 1), "y_good": round(y_good, 1), "h_good": round(h_good, 1),
                     "y_late": round(y_good - h_late, 1), "h_late": round(h_late, 1),
                     "label": fmt.month(p["month"]), "lx": round(x + w / 2, 1),
                     "rate": fmt.pct(p["rate"]), "point": p})
    ticks = [{"y": round(top + plot_h - plot_h * k / 4, 1), "v": fmt.num(most * k // 4)} for k in range(5)]
    return {"width": width, "height": height, "bars": bars, "ticks": ticks, "base": top + plot_h, "left": left}
