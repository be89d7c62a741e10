"""Up from nothing: every container healthy, and a dossier posted to intake on 127.0.0.1 produces
the Vietnamese alert in Mailpit (read through Mailpit's HTTP API)."""
from __future__ import annotations

import time
import uuid
from datetime import datetime, timedelta, timezone

from helpers.compose import figure

APP = {"intake", "sla-worker", "sla-api", "notify-worker", "notify-api", "dashboard"}
INFRA = {"kafka", "mongo", "mailpit"}
MONITORING = {"prometheus", "alertmanager"}


def test_every_container_is_healthy_after_up_from_fresh_volumes(stack):
    status = stack.wait_healthy(timeout=60)
    services = {c["Service"] for c in stack.containers()}
    assert services == APP | INFRA | MONITORING, services
    assert all(s == "running/healthy" for s in status.values()), status
    # published on 127.0.0.1 only
    for c in stack.containers():
        for p in c.get("Publishers") or []:
            if p.get("PublishedPort"):
                assert p["URL"] in ("127.0.0.1", ""), f"{c['Name']} publishes on {p['URL']}"
    for service in ("prometheus", "alertmanager"):
        assert stack.http.get(f"{stack.url(service)}/-/ready", timeout=10).status_code == 200
    for service in ("intake", "sla-api", "notify-api"):
        assert stack.http.get(f"{stack.url(service)}/healthz", timeout=10).status_code == 200
        assert stack.http.get(f"{stack.url(service)}/readyz", timeout=10).status_code == 200
    assert stack.http.get(f"{stack.url('dashboard')}/healthz", timeout=10).status_code == 200


def test_a_dossier_posted_to_intake_produces_the_vietnamese_alert_in_mailpit(stack):
    tag = uuid.uuid4().hex[:8]
    code = f"000.00.17.H56-{tag}"
    received = datetime.now(timezone.utc) - timedelta(days=40)
    event = {"event_id": str(uuid.uuid4()), "type": "dossier.received", "dossier_code": code,
             "occurred_at": received.isoformat(), "agency_code": "000.00.17.H56",
             "actor": {"id": "cb-01", "name": "Lý Thị Ngân", "role": "counter"},
             "data": {"procedure_code": "1.001612", "channel": "direct", "components": [],
                      "applicant": {"kind": "citizen", "name": "Nguyễn Văn An"}}}
    t0 = time.monotonic()
    resp = stack.http.post(f"{stack.url('intake')}/v1/events", json=event,
                           headers={"Authorization": f"Bearer {stack.key}"}, timeout=30)
    assert resp.status_code == 202, resp.text
    overdue = stack.wait_mail(code, timeout=120, also=lambda m: m["Subject"].startswith("Hồ sơ quá hạn"))[0]
    took = time.monotonic() - t0
    text = stack.mail_text(overdue["ID"])
    assert code in text and "quá hạn" in text, text
    subjects = [m["Subject"] for m in stack.mail_about(code)]
    figure(f"dossier posted -> its overdue alert in Mailpit: {took:.1f} s "
           f"({len(subjects)} alert(s): {'; '.join(sorted(set(subjects)))[:200]})")
