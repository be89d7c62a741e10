"""Every read API answers 503 `store_unavailable` + Retry-After (not a 500) while its MongoDB is
unreachable — a real refused TCP connection, no mock — and /readyz says which check failed."""
from __future__ import annotations

import time

import pytest

from shared.platform.config import Settings

from helpers.net import closed_port


def _settings() -> Settings:
    return Settings.from_env({"MONGO_URI": f"mongodb://127.0.0.1:{closed_port()}/",
                              "MONGO_TIMEOUT_MS": "300"})


def _sla():
    from services.sla.api import create_app
    return create_app({"SETTINGS": _settings()})


def _notify():
    from services.notify.api import create_app
    return create_app({"SETTINGS": _settings(), "ENV": {"NOTIFY_SECRET": "s" * 32}})


@pytest.mark.parametrize("make, path", [
    (_sla, "/v1/findings"), (_sla, "/v1/dossiers/HS-1"), (_sla, "/v1/reports/on-time"),
    (_notify, "/v1/notifications"), (_notify, "/v1/deliveries"),
])
def test_store_down_is_503_with_retry_after(make, path):
    client = make().test_client()
    t0 = time.monotonic()
    r = client.get(path, headers={"Authorization": "Bearer mck_anything"})
    assert r.status_code == 503, r.get_json()
    assert r.headers["Retry-After"] == "5"
    assert r.get_json()["errors"][0]["code"] == "store_unavailable"
    assert time.monotonic() - t0 < 10       # bounded by MONGO_TIMEOUT_MS, not a hang
    ready = client.get("/readyz")
    assert ready.status_code == 503 and ready.get_json()["checks"]["mongo"] != "ok"
