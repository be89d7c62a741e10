"""OpenAPI 3 description of the notify API (`services/notify/api.py`), served at `/openapi.json`.
Written by hand; tests/unit/test_notify_openapi.py drives every parameter from it with
schemathesis (no answer may be a 5xx)."""
from __future__ import annotations

from functools import lru_cache

from shared.platform.apidoc import common_errors, document, err, path, query

OPEN = {"type": "object", "additionalProperties": True}


def _ok(description: str) -> dict:
    return {"description": description, "content": {"application/json": {"schema": OPEN}}}


@lru_cache(maxsize=1)
def build_spec() -> dict:
    page = [query("limit", "page size", {"type": "integer", "minimum": 1, "maximum": 500}),
            query("offset", "items skipped", {"type": "integer", "minimum": 0})]
    scope = [query("agency_code", "an agency of the key's subtree (must be known)", {"type": "string"}),
             query("finding_id", "finding id", {"type": "string", "maxLength": 128}),
             query("dossier_code", "dossier code", {"type": "string", "maxLength": 128})]
    unknown = {"422": err("unknown agency")}
    token = path("token", "the signed token of an alert's link")
    fid = path("finding_id", "finding id", {"type": "string", "minLength": 1, "maxLength": 128})
    ack_errors = {"400": err("malformed token or bad signature"), "404": err("finding not found"),
                  "410": err("link expired"), "503": err("acknowledgement not configured")}
    paths = {
        "/v1/deliveries": {"get": {
            "summary": "Every send attempt of the key's subtree, newest first", "security": [{"bearer": []}],
            "parameters": [*scope, query("channel", "channel", {"type": "string", "enum": ["email", "sms", "webhook"]}),
                           query("outcome", "outcome", {"type": "string", "enum": ["sent", "error", "failed"]}), *page],
            "responses": {"200": _ok("a page of delivery attempts"), **common_errors(), **unknown}}},
        "/v1/notifications": {"get": {
            "summary": "Notifications with their status", "security": [{"bearer": []}],
            "parameters": [*scope, query("status", "status", {"type": "string", "enum": [
                "pending", "sent", "failed", "cancelled"]}),
                query("kind", "kind", {"type": "string", "enum": ["alert", "repeat", "resolved", "digest"]}), *page],
            "responses": {"200": _ok("a page of notifications"), **common_errors(), **unknown}}},
        "/v1/findings/{finding_id}": {"get": {
            "summary": "A finding as notify holds it, with `alerting` (the same view as the sla API)",
            "security": [{"bearer": []}], "parameters": [fid],
            "responses": {"200": _ok("the finding"), "404": err("not found in the key's subtree"),
                          **common_errors()}}},
        "/v1/findings/{finding_id}/ack": {"post": {
            "summary": "Acknowledge on behalf of the key (stops repeats and the escalation for lack of "
                       "acknowledgement)", "security": [{"bearer": []}], "parameters": [fid],
            "requestBody": {"required": False, "content": {"application/json": {"schema": {
                "type": "object", "additionalProperties": False,
                "properties": {"note": {"type": "string", "maxLength": 1000}}}}}},
            "responses": {"200": _ok("acknowledged (or already resolved: `already_resolved`)"),
                          "404": err("not found in the key's subtree"), **common_errors()}}},
        "/v1/ack/{token}": {
            "get": {"summary": "The alert behind a link and a confirmation button (HTML; JSON on "
                               "Accept: application/json). Never acknowledges.", "parameters": [token],
                    "responses": {"200": _ok("the finding"), **ack_errors}},
            "post": {"summary": "Acknowledge through an alert's link", "parameters": [token],
                     "responses": {"200": _ok("acknowledged (or already resolved)"), **ack_errors}}},
    }
    for p, summary in (("/healthz", "liveness"), ("/readyz", "MongoDB reachable"), ("/metrics", "Prometheus")):
        paths[p] = {"get": {"summary": summary, "responses": {"200": {"description": "ok"},
                                                               "503": {"description": "not ready"}}}}
    return document("motcua notify", "Nhật ký gửi cảnh báo và xác nhận (delivery log, notifications and "
                    "acknowledgements of the notify service).", paths)
