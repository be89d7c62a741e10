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
    _rel, old, new = FERRETDB_PATCHES[0]
    assert "'$._id'" in old
    # Registry.indexesCreate creates `_id_` on _ferretdb_sjson->"_id": the lookup must read the same
    assert new.endswith('`->"_id"`')


def test_patch_applies_once(tmp_path):
    _rel, old, new = FERRETDB_PATCHES[0]
    path = _module(tmp_path, f"package metadata\n\nconst (\n\t{old}\n)\n")
    patch_ferretdb(tmp_path)
    assert new in path.read_text() and old not in path.read_text()


def test_a_source_the_patch_does_not_fit_is_a_clear_error(tmp_path):
    _module(tmp_path, "package metadata\n\nconst IDColumn = DefaultColumn\n")
    with pytest.raises(StackError, match="does not fit this version"):
        patch_ferretdb(tmp_path)
