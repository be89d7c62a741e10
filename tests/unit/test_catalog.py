"""Procedure catalog: format, validation errors, alternatives, versions by date."""
from __future__ import annotations

import json
import textwrap
from datetime import date, datetime, timezone

import pytest

from shared.domain.catalog import (Catalog, CatalogError, catalog_from_records, default_catalog,
                            load_catalog)
from shared.domain.codes import COMPONENT_ID
from shared.domain.limits import Limit

MINIMAL = """\
- code: "1.001193"
  name: Đăng ký khai sinh
  field: Hộ tịch
  limit: same-day
  components:
    - {id: to-khai, name: Tờ khai đăng ký khai sinh, required: true}
    - {id: giay-chung-sinh, name: Giấy chứng sinh, required: true}
  supplement_policy: pause
  warning: 8wh
  effective_from: 2018-06-21
  source: Luật Hộ tịch 2014, Điều 16
"""


def write(tmp_path, text, name="catalog.yaml"):
    p = tmp_path / name
    p.write_text(textwrap.dedent(text), encoding="utf-8")
    return p


def proc(**over):
    base = {
        "code": "1.000001", "name": "Thủ tục thử", "field": "Hộ tịch", "limit": "5wd",
        "components": [{"id": "don", "name": "Đơn đề nghị", "required": True}],
        "source": "Nghị định thử",
    }
    base.update(over)
    return base


def error_of(records) -> CatalogError:
    with pytest.raises(CatalogError) as exc:
        catalog_from_records(records, "cat.yaml")
    return exc.value


# ----------------------------------------------------------------------------- valid files

def test_minimal_design_example_is_accepted(tmp_path):
    cat = load_catalog(write(tmp_path, MINIMAL))
    p = cat.get("1.001193")
    assert p.name == "Đăng ký khai sinh"
    assert p.limit == Limit(0, "same-day")
    assert p.warning == ("wh", 8)
    assert p.supplement_policy == "pause"
    assert p.effective_from == date(2018, 6, 21)
    assert [c.id for c in p.components] == ["to-khai", "giay-chung-sinh"]
    assert "1.001193" in cat and "9.999999" not in cat


def test_json_file_is_accepted(tmp_path):
    p = tmp_path / "c.json"
    p.write_text(json.dumps([proc()]), encoding="utf-8")
    assert load_catalog(p).get("1.000001").limit == Limit(5, "wd")


def test_defaults_and_percentage_warning():
    cat = catalog_from_records([proc(), proc(code="1.000002", warning="25%",
                                              supplement_policy="restart")])
    a, b = cat.get("1.000001"), cat.get("1.000002")
    assert a.warning == ("wh", 8) and a.supplement_policy == "pause" and a.sample is False
    assert b.warning == ("pct", 25) and b.supplement_policy == "restart"


def test_version_is_a_content_hash():
    v1 = catalog_from_records([proc()]).version
    assert v1 == catalog_from_records([proc()]).version
    assert v1 != catalog_from_records([proc(limit="6wd")]).version
    # key order and YAML formatting do not matter, content does
    assert v1 == catalog_from_records([dict(reversed(list(proc().items())))]).version


# ----------------------------------------------------------------------------- components

def alt_catalog():
    return catalog_from_records([proc(components=[
        {"id": "to-khai", "name": "Tờ khai", "required": True},
        {"id": "giay-chung-sinh", "name": "Giấy chứng sinh", "required": True,
         "any_of": [{"id": "van-ban-lam-chung", "name": "Văn bản người làm chứng"},
                    {"id": "giay-cam-doan", "name": "Giấy cam đoan về việc sinh"}]},
        {"id": "uy-quyen", "name": "Văn bản ủy quyền", "required": False},
    ])])


def test_alternatives_satisfy_a_required_component():
    p = alt_catalog().get("1.000001")
    assert p.missing_components(["to-khai", "giay-cam-doan"]) == []
    assert p.missing_components(["to-khai", "van-ban-lam-chung"]) == []
    assert p.missing_components(["to-khai"]) == ["giay-chung-sinh"]
    assert p.missing_components([]) == ["to-khai", "giay-chung-sinh"]
    assert p.required_groups() == (("to-khai",),
                                   ("giay-chung-sinh", "van-ban-lam-chung", "giay-cam-doan"))
    assert p.required_component_ids() == ("to-khai", "giay-chung-sinh")


def test_unknown_components_knows_alternatives_and_optional_ones():
    p = alt_catalog().get("1.000001")
    assert p.unknown_components(["to-khai", "giay-cam-doan", "uy-quyen"]) == []
    assert p.unknown_components(["so-ho-khau", "to-khai", "so-ho-khau", "cmnd"]) == ["so-ho-khau", "cmnd"]
    assert p.component_name("giay-cam-doan") == "Giấy cam đoan về việc sinh"
    assert p.component("van-ban-lam-chung").id == "giay-chung-sinh"


def test_catalog_level_helpers_and_unknown_code():
    cat = alt_catalog()
    assert cat.missing_components("1.000001", ["to-khai"]) == ["giay-chung-sinh"]
    assert cat.unknown_components("1.000001", ["x"]) == ["x"]
    with pytest.raises(KeyError, match="9.9"):
        cat.missing_components("9.9", [])


# ----------------------------------------------------------------------------- versions

def versions_catalog():
    return catalog_from_records([
        proc(limit="30wd", effective_from="2014-07-01", effective_to="2024-07-31"),
        proc(limit="20wd", effective_from="2024-08-01"),
    ])


def test_get_picks_the_version_in_force():
    cat = versions_catalog()
    assert cat.get("1.000001", on=date(2020, 1, 1)).limit == Limit(30, "wd")
    assert cat.get("1.000001", on=date(2024, 7, 31)).limit == Limit(30, "wd")   # inclusive
    assert cat.get("1.000001", on=date(2024, 8, 1)).limit == Limit(20, "wd")
    assert cat.get("1.000001").limit == Limit(20, "wd")                          # latest
    assert cat.get("1.000001", on=date(2010, 1, 1)) is None                      # not yet in force
    assert len(cat.versions("1.000001")) == 2 and len(cat) == 1


def test_get_with_an_instant_uses_vietnam_date():
    cat = versions_catalog()
    # 2024-07-31 18:00 UTC is 2024-08-01 01:00 in Hanoi: the new version applies
    assert cat.get("1.000001", on=datetime(2024, 7, 31, 18, tzinfo=timezone.utc)).limit == Limit(20, "wd")
    with pytest.raises(ValueError, match="naive"):
        cat.get("1.000001", on=datetime(2024, 7, 31, 18))


def test_overlapping_versions_are_rejected():
    err = error_of([proc(effective_from="2014-07-01"), proc(effective_from="2024-08-01")])
    assert err.entry == "#2 (1.000001)" and err.field == "effective_from"
    assert "overlap" in err.message


# ----------------------------------------------------------------------------- errors

@pytest.mark.parametrize("over, field, fragment", [
    ({"limit": "5 days"}, "limit", "invalid time limit"),
    ({"warning": "10min"}, "warning", "Nwh"),
    ({"warning": "150%"}, "warning", "between"),
    ({"supplement_policy": "stop"}, "supplement_policy", "pause or restart"),
    ({"effective_from": "21/06/2018"}, "effective_from", "YYYY-MM-DD"),
    ({"effective_from": "2020-01-01", "effective_to": "2019-01-01"}, "effective_to", "before"),
    ({"name": ""}, "name", "non-empty"),
    ({"sample": "yes"}, "sample", "true or false"),
    ({"colour": "red"}, "colour", "unknown key"),
    ({"components": "to-khai"}, "components", "list"),
    ({"components": [{"id": "To Khai", "name": "x"}]}, "components[0].id", "[a-z0-9]"),
    ({"components": [{"id": "a", "name": "x", "mandatory": True}]}, "components[0].mandatory", "unknown key"),
    ({"components": [{"id": "a", "name": "x", "required": "yes"}]}, "components[0].required", "true or false"),
    ({"components": [{"id": "a", "name": "x"}, {"id": "a", "name": "y"}]}, "components[1].id", "already used"),
    ({"components": [{"id": "a", "name": "x", "any_of": [{"id": "a", "name": "y"}]}]},
     "components[0].any_of[0].id", "already used"),
    ({"components": [{"id": "a", "name": "x", "any_of": ["b"]}]}, "components[0].any_of[0]", "mapping"),
    ({"steps": [{"role": "so-tnmt", "name": "Thẩm định", "share": "3xx"}]}, "steps[0].share", "invalid"),
    ({"steps": [{"role": "Sở TNMT", "name": "Thẩm định", "share": "3wd"}]}, "steps[0].role", "slug"),
    ({"steps": [{"role": "a", "name": "A", "share": "3wd"}, {"role": "b", "name": "B", "share": "3wd"}]},
     "steps", "more than the limit 5wd"),
    ({"steps": [{"role": "a", "name": "A", "share": "60%"}, {"role": "b", "name": "B", "share": "50%"}]},
     "steps", "110%"),
])
def test_each_error_names_file_entry_and_field(over, field, fragment):
    err = error_of([proc(), proc(code="1.000002", **over)])
    assert err.file == "cat.yaml"
    assert err.entry == "#2 (1.000002)"
    assert err.field == field
    assert fragment in err.message
    assert "cat.yaml" in str(err) and "1.000002" in str(err)


def test_missing_required_keys_are_reported():
    rec = proc()
    del rec["limit"], rec["components"]
    err = error_of([rec])
    assert {(e.field, e.message) for e in err.errors} == {
        ("limit", "required key is missing"), ("components", "required key is missing")}


def test_source_required_unless_sample():
    rec = proc()
    del rec["source"]
    assert error_of([rec]).field == "source"
    cat = catalog_from_records([dict(rec, sample=True)])
    assert cat.get("1.000001").sample is True


def test_unquoted_yaml_code_read_as_number(tmp_path):
    with pytest.raises(CatalogError) as exc:
        load_catalog(write(tmp_path, MINIMAL.replace('"1.001193"', "1.001193")))
    assert exc.value.field == "code" and "quote" in exc.value.message


def test_all_errors_are_collected():
    err = error_of([proc(limit="x"), proc(code="1.000002", warning="x")])
    assert len(err.errors) == 2 and "2 errors" in str(err)


@pytest.mark.parametrize("text, fragment", [
    ("{code: 1}", "list of procedures"),
    ("- [unclosed", "not valid YAML"),
    ("- 42", "must be a mapping"),
])
def test_file_level_errors(tmp_path, text, fragment):
    with pytest.raises(CatalogError) as exc:
        load_catalog(write(tmp_path, text))
    assert fragment in str(exc.value) and "catalog.yaml" in str(exc.value)


def test_missing_file(tmp_path):
    with pytest.raises(CatalogError, match="file not found"):
        load_catalog(tmp_path / "nope.yaml")


def test_steps_are_parsed():
    cat = catalog_from_records([proc(limit="20wd", steps=[
        {"role": "co-quan-thue", "name": "Xác định nghĩa vụ tài chính", "share": "5wd"},
        {"role": "ubnd-xa", "name": "Xác nhận hiện trạng", "share": "25%"}])])
    s1, s2 = cat.get("1.000001").steps
    assert s1.role == "co-quan-thue" and s1.share_limit == Limit(5, "wd") and s1.share_pct is None
    assert s2.share_pct == 25 and s2.share_limit is None


# ----------------------------------------------------------------------------- shipped data

FIELD_GROUPS = {
    "land": ("Đất đai",),
    "justice": ("Tư pháp",),
    "construction": ("Xây dựng",),
    "labour": ("Lao động", "Việc làm", "Bảo trợ xã hội", "Người có công"),
    "business": ("doanh nghiệp", "kinh doanh"),
}


def test_shipped_catalog_loads_and_ids_match_event_contract():
    cat = default_catalog()
    assert isinstance(cat, Catalog) and len(cat.version) == 16
    for p in cat:
        for c in p.components:
            for i in c.ids:
                assert COMPONENT_ID.match(i), (p.code, i)
        assert p.source or p.sample


def test_shipped_catalog_has_25_sourced_procedures_in_five_fields():
    cat = default_catalog()
    real = [cat.get(code) for code in cat.codes() if not cat.get(code).sample]
    assert len(real) >= 25, f"only {len(real)} sourced procedures"
    for group, words in FIELD_GROUPS.items():
        n = sum(1 for p in real if any(w.lower() in p.field.lower() for w in words))
        assert n >= 2, f"field group {group}: {n} sourced procedures"


def test_shipped_catalog_versions_and_alternatives():
    cat = default_catalog()
    old = cat.get("2.001610", on=date(2024, 3, 1))
    new = cat.get("2.001610", on=date(2025, 9, 1))
    assert old.effective_to == date(2025, 6, 30) and new.effective_from == date(2025, 7, 1)
    # Decree 168/2025: the copy of the owner's papers is no longer required
    assert "ban-sao-giay-to-phap-ly-chu-dntn" in old.missing_components(["giay-de-nghi-dang-ky-doanh-nghiep"])
    assert new.missing_components(["giay-de-nghi-dang-ky-doanh-nghiep"]) == []
    ks = cat.get("1.001193", on=date(2026, 1, 5))
    assert ks.limit == Limit(0, "same-day")
    assert ks.missing_components(["to-khai-khai-sinh", "giay-cam-doan-viec-sinh"]) == []
    assert ks.missing_components(["to-khai-khai-sinh"]) == ["giay-chung-sinh"]


# ----------------------------------------------------------------------------- issue 11 (10, 11)

def test_an_impossible_unquoted_date_names_entry_and_field(tmp_path):
    text = MINIMAL.replace("effective_from: 2018-06-21", "effective_from: 2026-13-01")
    with pytest.raises(CatalogError) as exc:
        load_catalog(write(tmp_path, text))
    err = exc.value
    assert (err.entry, err.field) == ("#1 (1.001193)", "effective_from")
    assert "2026-13-01" in err.message and "month" in err.message
    assert "catalog.yaml" in str(err)


@pytest.mark.parametrize("value, expected", [
    ("2018-06-21", date(2018, 6, 21)), ('"2018-06-21"', date(2018, 6, 21)), ("2018-6-1", None),
])
def test_unquoted_and_quoted_dates_are_read(tmp_path, value, expected):
    text = MINIMAL.replace("effective_from: 2018-06-21", f"effective_from: {value}")
    if expected is None:
        with pytest.raises(CatalogError, match="YYYY-MM-DD"):
            load_catalog(write(tmp_path, text))
    else:
        assert load_catalog(write(tmp_path, text)).get("1.001193").effective_from == expected


def test_an_unquoted_instant_is_not_a_date(tmp_path):
    text = MINIMAL.replace("effective_from: 2018-06-21", "effective_from: 2018-06-21 08:00:00")
    with pytest.raises(CatalogError) as exc:
        load_catalog(write(tmp_path, text))
    assert exc.value.field == "effective_from" and "not an instant" in exc.value.message


def test_overlaps_are_reported_with_the_other_errors_of_the_entries():
    # the second version of 1.000001 has a bad limit AND overlaps the first: both in one run
    err = error_of([proc(), proc(code="1.000002", warning="x"), proc(limit="1xx")])
    found = {(e.entry, e.field) for e in err.errors}
    assert found == {("#2 (1.000002)", "warning"), ("#3 (1.000001)", "limit"),
                     ("#3 (1.000001)", "effective_from")}
    overlap = [e for e in err.errors if e.field == "effective_from"][0]
    assert "entry #1" in overlap.message
    # sorted by entry
    assert [e.entry for e in err.errors] == ["#2 (1.000002)", "#3 (1.000001)", "#3 (1.000001)"]


def test_dated_overlap_is_reported_even_when_the_earlier_entry_is_invalid():
    err = error_of([proc(name="", effective_from="2020-01-01"), proc(effective_from="2021-01-01")])
    assert {(e.entry, e.field) for e in err.errors} == {("#1 (1.000001)", "name"),
                                                        ("#2 (1.000001)", "effective_from")}
