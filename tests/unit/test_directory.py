"""Agency directory: format, validation errors, tree queries, acting heads."""
from __future__ import annotations

import json
import textwrap

import pytest

from shared.domain.directory import (Directory, DirectoryError, default_directory,
                              directory_from_records, load_directory)

DESIGN_EXAMPLE = """\
- code: 000.00.00.H56
  name: UBND tỉnh Long An
  parent: null
  head: {name: Nguyễn Văn A, title: Chủ tịch UBND tỉnh, email: ct@example.org, phone: "0272 3800 001"}
  acting_head: null
  one_stop_chief: {name: Trần Thị B, email: motcua@example.org}
  office: default
"""


def ag(code, parent=None, **over):
    rec = {"code": code, "name": f"Cơ quan {code}", "parent": parent,
           "head": {"name": f"Thủ trưởng {code}", "email": f"head-{code.lower()}@example.org"}}
    rec.update(over)
    return rec


def tree() -> Directory:
    # root → A → A1 → A1x (depth 4), root → B; a second root R2
    return directory_from_records([
        ag("ROOT"), ag("A", "ROOT"), ag("A1", "A"), ag("A1x", "A1"), ag("B", "ROOT"), ag("R2"),
    ], "dir.yaml")


def error_of(records) -> DirectoryError:
    with pytest.raises(DirectoryError) as exc:
        directory_from_records(records, "dir.yaml")
    return exc.value


def test_design_example_is_accepted(tmp_path):
    p = tmp_path / "directory.yaml"
    p.write_text(DESIGN_EXAMPLE, encoding="utf-8")
    d = load_directory(p)
    a = d.get("000.00.00.H56")
    assert a.name == "UBND tỉnh Long An" and a.parent is None and a.office == "default"
    assert a.head.title == "Chủ tịch UBND tỉnh" and a.head.phone == "0272 3800 001"
    assert a.one_stop_chief.email == "motcua@example.org"
    assert d.responsible_head("000.00.00.H56").name == "Nguyễn Văn A"


def test_json_is_accepted(tmp_path):
    p = tmp_path / "d.json"
    p.write_text(json.dumps([ag("X")]), encoding="utf-8")
    assert "X" in load_directory(p)


def test_tree_queries_any_depth():
    d = tree()
    assert d.ancestors("A1x") == ["A1", "A", "ROOT"]
    assert d.ancestors("ROOT") == []
    assert d.subtree("A") == {"A", "A1", "A1x"}
    assert d.subtree("ROOT") == {"ROOT", "A", "A1", "A1x", "B"}
    assert d.within("A1x", "ROOT") and d.within("A", "A")
    assert not d.within("B", "A") and not d.within("ROOT", "A") and not d.within("A", "R2")
    assert not d.within("NOPE", "ROOT") and not d.within("A", "NOPE")
    assert d.roots() == ["R2", "ROOT"] and d.children("ROOT") == ["A", "B"]
    assert d.summary()["depth"] == 4
    with pytest.raises(KeyError, match="NOPE"):
        d.ancestors("NOPE")


def test_acting_head_receives_instead_of_head():
    d = directory_from_records([
        ag("P"),
        ag("C", "P", acting_head={"name": "Quyền Giám đốc", "email": "acting@example.org",
                                   "sms": "+84 900 000 001"}),
    ])
    assert d.responsible_head("C").name == "Quyền Giám đốc"
    assert d.get("C").head.name == "Thủ trưởng C"           # the head is kept
    assert d.responsible_head("P").name == "Thủ trưởng P"
    assert d.parent_head("C").name == "Thủ trưởng P" and d.parent_head("P") is None
    assert d.responsible_head("C").channels() == {"email": "acting@example.org", "sms": "+84 900 000 001"}


def test_no_head_means_none():
    d = directory_from_records([{"code": "X", "name": "Không thủ trưởng"}])
    assert d.responsible_head("X") is None and d.summary()["without_head"] == ["X"]


def test_version_is_content_hash():
    assert tree().version == tree().version
    changed = directory_from_records([ag("ROOT", head={"name": "Người khác"})])
    assert changed.version != directory_from_records([ag("ROOT")]).version


@pytest.mark.parametrize("records, entry, field, fragment", [
    ([ag("A"), ag("A")], "#2 (A)", "code", "duplicate"),
    ([ag("A", "GHOST")], "#1 (A)", "parent", "unknown parent"),
    ([ag("A", "A")], "#1 (A)", "parent", "own parent"),
    ([ag("A", colour="red")], "#1 (A)", "colour", "unknown key"),
    ([ag("A", head={"name": "X", "email": "not-an-email"})], "#1 (A)", "head.email", "e-mail"),
    ([ag("A", head={"name": "X", "mail": "x@example.org"})], "#1 (A)", "head.mail", "unknown key"),
    ([ag("A", head={"email": "x@example.org"})], "#1 (A)", "head.name", "required"),
    ([ag("A", one_stop_chief={"name": "X", "phone": "abc"})], "#1 (A)", "one_stop_chief.phone", "phone"),
    ([ag("A", deputies=[{"name": "X", "webhook": "ftp://x"}])], "#1 (A)", "deputies[0].webhook", "http"),
    ([ag("A", contacts={"fax": "1"})], "#1 (A)", "contacts.fax", "unknown key"),
    ([ag("A", office="Giờ hành chính")], "#1 (A)", "office", "calendar id"),
    ([ag("A", name="")], "#1 (A)", "name", "non-empty"),
    ([{"code": "A b", "name": "x"}], "#1 (A b)", "code", "agency code"),
])
def test_errors_name_file_entry_and_field(records, entry, field, fragment):
    err = error_of(records)
    assert (err.file, err.entry, err.field) == ("dir.yaml", entry, field)
    assert fragment in err.message


def test_cycles_are_rejected_once():
    err = error_of([ag("R"), ag("A", "C"), ag("B", "A"), ag("C", "B")])
    cycles = [e for e in err.errors if "cycle" in e.message]
    assert len(cycles) == 1 and cycles[0].field == "parent"
    assert "A" in cycles[0].message and "B" in cycles[0].message and "C" in cycles[0].message


def test_file_level_errors(tmp_path):
    p = tmp_path / "d.yaml"
    p.write_text("agencies: []", encoding="utf-8")
    with pytest.raises(DirectoryError, match="list of agencies"):
        load_directory(p)
    with pytest.raises(DirectoryError, match="file not found"):
        load_directory(tmp_path / "missing.yaml")


def test_shipped_sample_directory():
    d = default_directory()
    root = d.roots()
    assert root == ["000.00.00.H56"]
    assert d.summary()["depth"] >= 3
    names = " ".join(a.name for a in d)
    for word in ("Sở Tư pháp", "Sở Xây dựng", "Văn phòng đăng ký đất đai", "Lao động",
                 "Kế hoạch và Đầu tư", "UBND phường", "UBND xã"):
        assert word in names
    for a in d:
        assert a.one_stop_chief is not None and a.responsible_head is not None, a.code
        for p in (a.head, a.acting_head, a.one_stop_chief, *a.deputies):
            if p and p.email:
                assert p.email.endswith((".example.org", ".local")), p.email


# ----------------------------------------------------------------------------- issue 11 (10, 11)

def test_an_unknown_office_is_an_error_naming_entry_and_field():
    err = error_of([ag("A"), ag("B", "A", office="defualt")])
    assert (err.file, err.entry, err.field) == ("dir.yaml", "#2 (B)", "office")
    assert "unknown office 'defualt'" in err.message and "default" in err.message


def test_offices_of_another_offices_file(tmp_path):
    offices = tmp_path / "offices.yaml"
    offices.write_text("offices:\n  so-tp:\n    name: Sở Tư pháp\n", encoding="utf-8")
    d = directory_from_records([ag("A", office="so-tp")], "dir.yaml", offices_file=offices)
    assert d.get("A").office == "so-tp"
    with pytest.raises(DirectoryError) as exc:
        directory_from_records([ag("A", office="default")], "dir.yaml", offices_file=offices)
    assert exc.value.field == "office"


def test_every_problem_is_reported_in_one_run():
    err = error_of([
        ag("A", office="defualt"),
        ag("B", "GHOST", head={"name": "X", "email": "bad"}),    # unknown parent + bad e-mail
        ag("C", "B"),                                            # its parent has errors: not unknown
        ag("A", head={"name": "Y", "email": "bad"}),             # duplicate + bad e-mail
    ])
    assert [(e.entry, e.field) for e in err.errors] == [
        ("#1 (A)", "office"),
        ("#2 (B)", "head.email"), ("#2 (B)", "parent"),
        ("#4 (A)", "head.email"), ("#4 (A)", "code"),
    ]
    assert "unknown parent agency 'GHOST'" in err.errors[2].message
    assert "duplicate" in err.errors[4].message


def test_a_cycle_through_an_invalid_entry_is_reported():
    err = error_of([ag("A", "B", name=""), ag("B", "A")])
    assert {e.field for e in err.errors} == {"name", "parent"}
    assert any("cycle" in e.message for e in err.errors)
