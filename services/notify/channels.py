"""Delivery channels behind one port: `send(Outgoing)` returns on success or raises `ChannelError`.

Real adapters: SMTP e-mail (plain text + HTML, STARTTLS and auth optional), a JSON webhook signed
with HMAC-SHA256 (`X-Motcua-Signature: sha256=<hex>`), and a generic SMS gateway over HTTP.
`FakeChannel` records what it was asked to send, for unit tests.
"""
from __future__ import annotations

import json
import smtplib
import socket
import threading
import time
from dataclasses import dataclass, field
from email.header import Header
from email.mime.application import MIMEApplication
from email.mime.multipart import MIMEMultipart
from email.mime.text import MIMEText
from email.utils import format_datetime, make_msgid
from typing import Protocol
from urllib.parse import quote

from shared.platform.clock import Clock, SystemClock
from shared.domain.instants import TZ

from .tokens import sign_webhook

SIGNATURE_HEADER = "X-Motcua-Signature"


class ChannelError(Exception):
    """A failed send. `permanent` errors are not retried (bad address, 4xx); others are."""

    def __init__(self, message: str, *, permanent: bool = False):
        self.permanent = permanent
        super().__init__(message)


@dataclass
class Outgoing:
    """One message to one recipient on one channel."""
    channel: str            # email | sms | webhook
    address: str            # e-mail address, phone number, or webhook URL
    subject: str
    text: str
    html: str | None = None
    payload: dict | None = None      # webhook JSON body
    target: str | None = None        # webhook name (selects its secret)
    message_id: str | None = None    # stable id (notification id) for receivers to dedupe
    headers: dict = field(default_factory=dict)
    attachments: tuple = ()          # e-mail only: objects with filename, content (bytes), mimetype


class Channel(Protocol):
    name: str

    def send(self, msg: Outgoing) -> None:
        """Deliver or raise ChannelError."""


class _DeadBeforeMessage(smtplib.SMTPServerDisconnected):
    """A reused connection found closed at MAIL FROM: nothing of the message was sent."""


class _SMTP(smtplib.SMTP):
    """smtplib.SMTP telling apart a connection that is dead at MAIL FROM (the first command of
    a message: safe to send again on a fresh connection) from any later failure (not safe: the
    server may have taken the message)."""

    def mail(self, sender, options=()):
        try:
            code, resp = super().mail(sender, options)
        except (smtplib.SMTPServerDisconnected, OSError) as exc:
            raise _DeadBeforeMessage(f"connection closed at MAIL FROM: {exc}") from None
        if code == 421:   # the server is closing this connection
            self.close()
            raise _DeadBeforeMessage(f"SMTP 421 at MAIL FROM: {resp!r}")
        return code, resp


class SmtpChannel:
    name = "email"

    def __init__(self, host: str, port: int, sender: str, *, user: str = "", password: str = "",
                 starttls: bool = False, timeout: float = 15.0, reuse: bool = True,
                 max_per_connection: int = 100, idle_seconds: float = 30.0, clock: Clock | None = None):
        self.host, self.port, self.sender = host, int(port), sender
        self.clock = clock or SystemClock()
        self.user, self.password, self.starttls, self.timeout = user, password, starttls, timeout
        # one open connection per sending thread (connect + EHLO + QUIT cost more than a message);
        # a reused connection is not checked with a NOOP round trip: MAIL FROM is the check — if
        # the server closed it, nothing of the message was sent yet and the message goes once on
        # a fresh connection; a failure after MAIL FROM is never retried here
        self.reuse, self.max_per_connection, self.idle_seconds = reuse, max_per_connection, idle_seconds
        self._local = threading.local()

    def build(self, msg: Outgoing):
        """multipart/alternative (plain + HTML), UTF-8. The classic email API is used on purpose:
        the modern header folder drops the space between two folded encoded words, which would
        glue Vietnamese words together in long subjects."""
        if msg.html:
            em = MIMEMultipart("alternative")
            em.attach(MIMEText(msg.text, "plain", "utf-8"))
            em.attach(MIMEText(msg.html, "html", "utf-8"))
        else:
            em = MIMEText(msg.text, "plain", "utf-8")
        if msg.attachments:
            body, em = em, MIMEMultipart("mixed")
            em.attach(body)
            for a in msg.attachments:
                part = MIMEApplication(a.content, _subtype=a.mimetype.split("/", 1)[1])
                part.replace_header("Content-Type", a.mimetype)
                part.add_header("Content-Disposition", "attachment", filename=("utf-8", "", a.filename))
                em.attach(part)
        em["From"] = self.sender
        em["To"] = msg.address
        em["Subject"] = Header(msg.subject, "utf-8")
        # the injected clock's instant (virtual in tests and demos), shown in Vietnam's offset
        em["Date"] = format_datetime(self.clock.now().astimezone(TZ))
        em["Message-ID"] = make_msgid(idstring=msg.message_id, domain="motcua") if msg.message_id else make_msgid(domain="motcua")
        for k, v in msg.headers.items():
            em[k] = v
        return em

    def _connect(self) -> smtplib.SMTP:
        smtp = _SMTP(self.host, self.port, timeout=self.timeout)
        try:
            if self.starttls:
                smtp.starttls()
            if self.user:
                smtp.login(self.user, self.password)
        except BaseException:
            _close(smtp)
            raise
        return smtp

    def _connection(self) -> tuple[smtplib.SMTP, bool]:
        """(this thread's open connection, True) unless it is used up or idle too long, else
        (a new one, False)."""
        held = getattr(self._local, "held", None)
        self._local.held = None
        if held is not None:
            smtp, count, last = held
            if count < self.max_per_connection and time.monotonic() - last < self.idle_seconds:
                return smtp, True
            _close(smtp)
        return self._connect(), False

    def close(self) -> None:
        """Close this thread's held connection (others close when their thread ends or idles)."""
        held = getattr(self._local, "held", None)
        self._local.held = None
        if held is not None:
            _close(held[0])

    def send(self, msg: Outgoing) -> None:
        em = self.build(msg)
        smtp = None
        try:
            if not self.reuse:
                with self._connect() as smtp:
                    smtp.send_message(em, self.sender, [msg.address])
                return
            smtp, reused = self._connection()
            try:
                smtp.send_message(em, self.sender, [msg.address])
            except _DeadBeforeMessage:
                if not reused:
                    raise
                _close(smtp)
                smtp = None
                smtp = self._connect()
                smtp.send_message(em, self.sender, [msg.address])
            count = getattr(smtp, "_motcua_sent", 0) + 1
            smtp._motcua_sent = count
            self._local.held = (smtp, count, time.monotonic())
            smtp = None
        except smtplib.SMTPRecipientsRefused as exc:
            codes = [c for c, _ in exc.recipients.values()]
            raise ChannelError(f"recipient refused (SMTP {codes})", permanent=all(c >= 500 for c in codes)) from None
        except smtplib.SMTPAuthenticationError as exc:
            raise ChannelError(f"SMTP authentication failed ({exc.smtp_code})", permanent=False) from None
        except smtplib.SMTPResponseException as exc:
            raise ChannelError(f"SMTP {exc.smtp_code}: {exc.smtp_error!r}"[:300],
                               permanent=500 <= exc.smtp_code < 600 and exc.smtp_code != 554) from None
        except (smtplib.SMTPException, OSError, socket.timeout) as exc:
            raise ChannelError(f"SMTP {type(exc).__name__}: {exc}"[:300]) from None
        finally:
            if smtp is not None and self.reuse:   # after any error: a fresh connection next time
                _close(smtp)


def _close(smtp: smtplib.SMTP) -> None:
    try:
        smtp.quit()
    except (smtplib.SMTPException, OSError):
        smtp.close()


def _http_error(what: str, status: int, body: str) -> ChannelError:
    permanent = 400 <= status < 500 and status not in (408, 425, 429)
    return ChannelError(f"{what} HTTP {status}: {body[:200]}", permanent=permanent)


class WebhookChannel:
    name = "webhook"

    def __init__(self, secrets: dict[str, str], *, timeout: float = 10.0, session=None):
        self.secrets = dict(secrets)
        self.timeout = timeout
        self._session = session
        self._local = threading.local()

    def _http(self):
        import requests
        if self._session is not None:
            return self._session
        if not hasattr(self._local, "s"):
            self._local.s = requests.Session()
        return self._local.s

    def send(self, msg: Outgoing) -> None:
        import requests
        secret = self.secrets.get(msg.target or "")
        if not secret:
            raise ChannelError(f"no secret configured for webhook {msg.target!r}", permanent=True)
        body = json.dumps(msg.payload, ensure_ascii=False, separators=(",", ":"), sort_keys=True).encode("utf-8")
        headers = {"Content-Type": "application/json; charset=utf-8",
                   SIGNATURE_HEADER: sign_webhook(secret, body),
                   "X-Motcua-Delivery": msg.message_id or ""}
        try:
            r = self._http().post(msg.address, data=body, headers=headers, timeout=self.timeout)
        except requests.RequestException as exc:
            raise ChannelError(f"webhook {type(exc).__name__}: {exc}"[:300]) from None
        if not 200 <= r.status_code < 300:
            raise _http_error("webhook", r.status_code, r.text)


class SmsChannel:
    """Generic HTTP SMS gateway: `url_template` with {phone} and {text} (URL-encoded).

    GET calls the formatted URL; POST posts `{"to": phone, "text": text}` as JSON to it."""
    name = "sms"
    MAX_TEXT = 480

    def __init__(self, url_template: str, method: str = "POST", *, timeout: float = 10.0):
        self.url_template, self.method, self.timeout = url_template, method, timeout

    def send(self, msg: Outgoing) -> None:
        import requests
        text = msg.text if len(msg.text) <= self.MAX_TEXT else msg.text[: self.MAX_TEXT - 1] + "…"
        url = self.url_template.format(phone=quote(msg.address, safe=""), text=quote(text, safe=""))
        try:
            if self.method == "GET":
                r = requests.get(url, timeout=self.timeout)
            else:
                r = requests.post(url, json={"to": msg.address, "text": text}, timeout=self.timeout)
        except requests.RequestException as exc:
            raise ChannelError(f"sms {type(exc).__name__}: {exc}"[:300]) from None
        if not 200 <= r.status_code < 300:
            raise _http_error("sms", r.status_code, r.text)


class FakeChannel:
    """Records every message; `fail_next(n, permanent=False)` makes the next n sends fail."""

    def __init__(self, name: str):
        self.name = name
        self.sent: list[Outgoing] = []
        self.attempts = 0
        self._fail = 0
        self._permanent = False
        self._lock = threading.Lock()

    def fail_next(self, n: int, *, permanent: bool = False) -> None:
        self._fail, self._permanent = n, permanent

    def send(self, msg: Outgoing) -> None:
        with self._lock:
            self.attempts += 1
            if self._fail > 0:
                self._fail -= 1
                raise ChannelError(f"{self.name} fake failure", permanent=self._permanent)
            self.sent.append(msg)
