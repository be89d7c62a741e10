"""`motcua demo`'s sample events (no infrastructure needed: the events are checked against the
contract, the shipped catalog and directory)."""
from __future__ import annotations

import random
import re
from datetime import datetime, timedelta, timezone

from shared.domain.catalog import default_catalog
from shared.cli.local import demo_events
from shared.platform.config import Settings
from shared.domain.directory import load_directory
from shared.contracts.events import validate_event

NOW = datetime(2024, 11, 20, 3, 0, tzinfo=timezone.utc)


def _events(seed=7, count=12):
    directory = load_directory(Settings.from_env({}).directory_file)
    return demo_events(default_catalog(), directory, NOW, random.Random(seed), count), directory


def test_every_event_is_valid_and_refers_to_catalog_and_directory():
    events, directory = _events()
    catalog = default_catalog()
    assert len(events) >= 12
    for e in events:
        _value, errors = validate_event(e)
        assert not errors, (e["type"], errors)
        assert e["agency_code"] in directory
        assert datetime.fromisoformat(e["occurred_at"]) <= NOW
        assert re.fullmatch(r"\d{3}\.\d{2}\.\d{2}\.H56-\d{6}-\d{4}", e["dossier_code"])
        if e["type"] == "dossier.received":
            proc = catalog.get(e["data"]["procedure_code"])
            assert proc is not None
            assert not proc.unknown_components(e["data"]["components"])


def test_sample_has_overdue_unresolved_dossiers_and_a_mix_of_outcomes():
    events, _ = _events()
    by_code: dict[str, list[dict]] = {}
    for e in events:
        by_code.setdefault(e["dossier_code"], []).append(e)
    old_open = [c for c, evs in by_code.items()
                if datetime.fromisoformat(evs[0]["occurred_at"]) < NOW - timedelta(days=10)
                and not {"dossier.resolved", "dossier.refused", "dossier.withdrawn"} & {e["type"] for e in evs}]
    assert len(old_open) >= 2                     # overdue alerts right away
    types = {e["type"] for e in events}
    assert {"dossier.received", "dossier.resolved", "dossier.returned", "dossier.refused",
            "dossier.supplement_requested"} <= types
    assert all(evs[0]["type"] == "dossier.received" for evs in by_code.values())
    names = [e["data"]["applicant"]["name"] for e in events if e["type"] == "dossier.received"]
    assert any(re.search(r"[ăâđêôơưạảấầẩẫậắằẳẵặẹẻẽếềểễệỉịọỏốồổỗộớờởỡợụủứừửữựỳỵỷỹ]", n.lower()) for n in names)


def test_same_seed_same_events_different_seed_different_codes():
    a, _ = _events(seed=1)
    b, _ = _events(seed=1)
    c, _ = _events(seed=2)
    assert a == b
    assert {e["dossier_code"] for e in a} != {e["dossier_code"] for e in c}


def test_two_level_government_and_decree_118_scenarios():
    """Since 1/7/2025: a VNeID dossier received at a branch of the provincial centre for a commune,
    a dossier stopped at the applicant's request (Mẫu 05 of Circular 03/2025), an extension
    request on Mẫu 04 of Circular 03/2025; before that date the apology names Circular 01/2018."""
    directory = load_directory(Settings.from_env({}).directory_file)
    now = datetime(2026, 3, 20, 3, 0, tzinfo=timezone.utc)
    events = demo_events(default_catalog(), directory, now, random.Random(5), 15)
    for e in events:
        _value, errors = validate_event(e)
        assert not errors, (e["type"], errors)
        assert e["agency_code"] in directory
    branch = [e for e in events if e["type"] == "dossier.received" and e["data"]["channel"] == "vneid"]
    assert branch, "no VNeID receipt at a branch"
    rec = branch[0]
    centre = directory.get(directory.get(rec["agency_code"]).parent)
    assert centre.name.startswith("Trung tâm Phục vụ hành chính công tỉnh")
    commune = directory.get(rec["data"]["handling_agency_code"])
    assert commune.level == "xã" and commune.parent == centre.parent
    assert rec["data"]["submitted_at"] < rec["occurred_at"]
    stopped = [e for e in events if e["type"] == "dossier.stopped"]
    assert stopped and stopped[0]["data"]["form"] == {"circular": "03/2025/TT-VPCP", "number": "05"}
    apology = [e for e in events if e["type"] == "dossier.apology_issued"]
    assert apology and apology[0]["data"]["form"] == {"circular": "03/2025/TT-VPCP", "number": "04"}
    old = demo_events(default_catalog(), directory, NOW, random.Random(5), 15)
    assert [e["data"]["form"]["circular"] for e in old if e["type"] == "dossier.apology_issued"] == ["01/2018/TT-VPCP"]
    assert all("form" not in e["data"] for e in old if e["type"] == "dossier.stopped")
