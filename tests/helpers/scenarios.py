"""The engine scenarios of tests/unit/engine_scenarios/*.yaml: loading, the engine context they
run in, and each step's event as intake publishes it."""
from __future__ import annotations

import uuid
from pathlib import Path

import pytest
import yaml

from shared.domain import workcal
from shared.domain.catalog import catalog_from_records
from shared.domain.engine import EngineContext, default_rulesets

HERE = Path(__file__).resolve().parents[1] / "unit" / "engine_scenarios"
ONE_STOP = "000.00.17.H56"
DEFAULT_PROCEDURE = "T.5WD"
KINDS = ("fires", "not_fires", "resolves")


def _load_scenarios() -> list[dict]:
    out = []
    for path in sorted(HERE.glob("*.yaml")):
        if path.name == "catalog.yaml":
            continue
        for sc in yaml.safe_load(path.read_text(encoding="utf-8")):
            sc["_file"] = path.name
            out.append(sc)
    return out


SCENARIOS = _load_scenarios()


@pytest.fixture(scope="module")
def ctx() -> EngineContext:
    records = yaml.safe_load((HERE / "catalog.yaml").read_text(encoding="utf-8"))
    return EngineContext(catalog=catalog_from_records(records, "engine_scenarios/catalog.yaml"),
                         calendars=workcal.calendar_for, rulesets=default_rulesets())


def raw_event(sc: dict, index: int, step: dict, code: str, ctx) -> dict:
    """The step's event as intake publishes it to `dossier.events` (JSON-ready)."""
    etype = step["type"]
    data = dict(step.get("data") or {})
    if etype == "received":
        proc = ctx.catalog.get(sc.get("procedure", DEFAULT_PROCEDURE))
        data.setdefault("procedure_code", proc.code)
        data.setdefault("channel", "direct")
        data.setdefault("components", list(proc.required_component_ids()))
        data.setdefault("applicant", {"kind": "citizen", "name": "Nguyễn Văn An"})
    elif etype == "supplement_requested":
        data.setdefault("reason", "Thiếu giấy tờ")
    elif etype in ("apology_issued",):
        data.setdefault("reason", "Cần xác minh thêm")
    elif etype in ("paused", "resumed"):
        data.setdefault("reason", "Xác minh thực địa")
        data.setdefault("legal_basis", "Điều 17 Nghị định 61/2018/NĐ-CP")
    elif etype in ("refused", "withdrawn", "stopped"):
        data.setdefault("reason", "Theo đề nghị")
    elif etype == "resolved":
        data.setdefault("outcome", "approved")
    elif etype == "submitted":
        data.setdefault("procedure_code", ctx.catalog.get(sc.get("procedure", DEFAULT_PROCEDURE)).code)
        data.setdefault("channel", "online")
    raw = {
        "event_id": str(uuid.uuid5(uuid.NAMESPACE_URL, f"{sc['name']}#{index}")),
        "type": f"dossier.{etype}", "dossier_code": code,
        "occurred_at": str(step["at"]), "recorded_at": str(step.get("recorded", step["at"])),
        "agency_code": step.get("agency", ONE_STOP), "data": data,
    }
    return raw


