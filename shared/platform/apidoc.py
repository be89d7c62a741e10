"""Small helpers for the hand-written OpenAPI 3 documents of the sla and notify read APIs
(`services/sla/openapi.py`, `services/notify/openapi.py`): the error body every API answers
with, query parameters, and a blueprint serving the document at `/openapi.json`."""
from __future__ import annotations

ERRORS = {"type": "object", "required": ["errors"], "properties": {"errors": {
    "type": "array", "minItems": 1, "items": {"type": "object", "required": ["code", "field", "message"],
                                              "properties": {"code": {"type": "string"},
                                                             "field": {"type": "string"},
                                                             "message": {"type": "string"}}}}}}


def err(description: str) -> dict:
    return {"description": description,
            "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Errors"}}}}


def query(name: str, description: str, schema: dict | None = None) -> dict:
    return {"name": name, "in": "query", "required": False, "description": description,
            "schema": schema or {"type": "string"}}


def path(name: str, description: str, schema: dict | None = None) -> dict:
    return {"name": name, "in": "path", "required": True, "description": description,
            "schema": schema or {"type": "string"}}


def common_errors(*, auth: bool = True) -> dict:
    out = {"400": err("a query parameter is malformed or unknown (`field` names it)"),
           "503": err("the store is unavailable: retry (Retry-After)")}
    if auth:
        out.update({"401": err("missing or invalid API key"),
                    "403": err("role may not read, or agency outside the key's subtree"),
                    "429": err("rate limited")})
    return out


def document(title: str, description: str, paths: dict, schemas: dict | None = None) -> dict:
    return {"openapi": "3.0.3", "info": {"title": title, "version": "1.0.0", "description": description},
            "paths": paths,
            "components": {"securitySchemes": {"bearer": {"type": "http", "scheme": "bearer",
                                                          "description": "API key from `motcua keys create`"}},
                           "schemas": {"Errors": ERRORS, **(schemas or {})}}}


def blueprint(name: str, build):
    """A Flask blueprint answering `GET /openapi.json` with `build()` (a dict)."""
    from flask import Blueprint, jsonify

    bp = Blueprint(name, __name__)
    bp.add_url_rule("/openapi.json", "openapi_json", lambda: jsonify(build()))
    return bp
