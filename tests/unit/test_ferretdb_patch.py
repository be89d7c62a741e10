"""The FerretDB source patch of the local build (shared/dev/provision.py, docs/ferretdb.md)."""
from __future__ import annotations

import pytest

from shared.dev.provision import FERRETDB_PATCHES, patch_ferretdb
from shared.dev.stackconfig import StackError


def _module(tmp_path, text: str):
    rel = FERRETDB_PATCHES[0][0]
    (tmp_path / rel).parent.mkdir(parents=True)
    (tmp_path / rel).write_text(text)
    return tmp_path / rel


def test_the_id_lookup_is_spelled_as_the_id_index_is():
    _rel, old, new, _times = FERRETDB_PATCHES[0]
    assert "'$._id'" in old
    # Registry.indexesCreate creates `_id_` on _ferretdb_sjson->"_id": the lookup must read the same
    assert new.endswith('`->"_id"`')


def _fitting_source(tmp_path):
    """A module tree each patch fits: its text the number of times it expects."""
    for rel, old, _new, times in FERRETDB_PATCHES:
        if old is not None:
            (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
            (tmp_path / rel).write_text("package x\n\n" + "\n".join([f"\t{old}"] * times) + "\n")


def test_every_patch_applies_as_many_times_as_it_says(tmp_path):
    _fitting_source(tmp_path)
    patch_ferretdb(tmp_path)
    for rel, old, new, times in FERRETDB_PATCHES:
        text = (tmp_path / rel).read_text()
        assert text.count(new) == times and (old is None or old not in text)


def test_the_id_pushdown_no_longer_requires_a_filter_of_one_key():
    _rel, old, new, times = FERRETDB_PATCHES[1]
    assert "Filter.Len() == 1" in old and "Len()" not in new and times == 2    # Query and Explain
    helper = FERRETDB_PATCHES[2]
    assert helper[1] is None and "func motcuaIDPushdown" in helper[2]


def test_a_patch_that_would_overwrite_a_file_is_a_clear_error(tmp_path):
    _fitting_source(tmp_path)
    rel = FERRETDB_PATCHES[2][0]
    (tmp_path / rel).write_text("package sqlite\n")
    with pytest.raises(StackError, match="already exists"):
        patch_ferretdb(tmp_path)


def test_a_source_the_patch_does_not_fit_is_a_clear_error(tmp_path):
    _module(tmp_path, "package metadata\n\nconst IDColumn = DefaultColumn\n")
    with pytest.raises(StackError, match="does not fit this version"):
        patch_ferretdb(tmp_path)
