"""DirectoryStore / CatalogStore and the `motcua directory|catalog import` commands on the real
MongoDB-wire server (FerretDB in the local stack): versions, pointer flip, old versions kept."""
from __future__ import annotations

from datetime import datetime, timedelta, timezone

from shared.platform.refdata import CatalogStore
from shared.domain.catalog import catalog_from_records, default_catalog
from shared.cli import main
from shared.platform.refdata import DirectoryStore
from shared.domain.directory import default_directory, directory_from_records

T0 = datetime(2024, 11, 5, 2, 0, tzinfo=timezone.utc)


def small_directory(head_name: str):
    return directory_from_records([
        {"code": "000.00.00.H56", "name": "UBND tỉnh Long An",
         "head": {"name": head_name, "email": "ct@example.org"}},
        {"code": "000.00.17.H56", "name": "UBND phường Tân An", "parent": "000.00.00.H56",
         "head": {"name": "Chủ tịch phường", "email": "ct-phuong@example.local"},
         "acting_head": {"name": "Phó Chủ tịch phụ trách", "sms": "+84 900 000 017"}},
    ], "test")


def test_directory_versions_are_kept_and_current_follows_last_import(mongo_db):
    store = DirectoryStore(mongo_db)
    assert store.current() is None and store.current_version() is None

    d1 = small_directory("Nguyễn Văn An")
    v1 = store.import_directory(d1, T0, source="v1.yaml")
    d2 = small_directory("Trần Văn Bình")          # the province chairman changed
    v2 = store.import_directory(d2, T0 + timedelta(days=30), source="v2.yaml")
    assert v1 != v2

    current = store.current()
    assert current.version == v2
    assert current.responsible_head("000.00.00.H56").name == "Trần Văn Bình"
    # an alert raised under v1 still finds who was responsible then
    old = store.at(v1)
    assert old.version == v1
    assert old.responsible_head("000.00.00.H56").name == "Nguyễn Văn An"
    assert old.responsible_head("000.00.17.H56").name == "Phó Chủ tịch phụ trách"
    assert old.ancestors("000.00.17.H56") == ["000.00.00.H56"]
    assert store.at("nope") is None

    # re-importing identical content adds an import record, not a new version document
    store.import_directory(small_directory("Nguyễn Văn An"), T0 + timedelta(days=60), source="v1-again.yaml")
    assert store.current_version() == v1
    assert mongo_db[DirectoryStore.VERSIONS].count_documents({}) == 2
    assert [h["source"] for h in store.history()] == ["v1.yaml", "v2.yaml", "v1-again.yaml"]


def test_shipped_directory_round_trips(mongo_db):
    d = default_directory()
    store = DirectoryStore(mongo_db)
    v = store.import_directory(d, T0)
    back = store.current()
    assert back.version == v == d.version
    assert back.subtree("000.00.12.H56") == d.subtree("000.00.12.H56")
    assert back.responsible_head("000.00.12.H56") == d.responsible_head("000.00.12.H56")


def test_catalog_store_round_trip_keeps_versions(mongo_db):
    store = CatalogStore(mongo_db)
    cat = default_catalog()
    v = store.import_catalog(cat, T0, source="catalog.yaml")
    back = store.current()
    assert back.version == v == cat.version
    assert back.get("2.001610", on=datetime(2024, 1, 1).date()).effective_to.isoformat() == "2025-06-30"
    other = catalog_from_records([{"code": "1.000001", "name": "Thử", "field": "Hộ tịch", "limit": "1wd",
                                   "components": [], "sample": True}], "x")
    store.import_catalog(other, T0 + timedelta(hours=1))
    assert store.current().version == other.version
    assert store.at(v).get("1.001193") is not None


def _cli_env(monkeypatch, mongo_db, tmp_path):
    client = mongo_db.client
    host, port = client.address
    monkeypatch.setenv("MONGO_URI", f"mongodb://{host}:{port}/")
    monkeypatch.setenv("MONGO_DB", mongo_db.name)
    clock_file = tmp_path / "clock"
    clock_file.write_text(T0.isoformat(), encoding="utf-8")
    monkeypatch.setenv("MOTCUA_CLOCK_FILE", str(clock_file))


def test_cli_directory_and_catalog_import(mongo_db, monkeypatch, tmp_path, capsys):
    _cli_env(monkeypatch, mongo_db, tmp_path)
    from shared.domain import PACKAGE_DATA

    assert main(["directory", "import", str(PACKAGE_DATA / "directory.yaml")]) == 0
    out = capsys.readouterr().out
    version = out.strip().splitlines()[-1].split()[-1]
    assert version == default_directory().version
    assert DirectoryStore(mongo_db).current_version() == version
    doc = mongo_db[DirectoryStore.VERSIONS].find_one({"_id": version})
    assert doc["imports"][0]["at"] == T0

    assert main(["catalog", "import", str(PACKAGE_DATA / "catalog.yaml")]) == 0
    out = capsys.readouterr().out
    assert out.strip().splitlines()[-1] == f"catalog version {default_catalog().version}"
    assert CatalogStore(mongo_db).current().version == default_catalog().version


def test_cli_import_of_an_invalid_file_changes_nothing(mongo_db, monkeypatch, tmp_path, capsys):
    _cli_env(monkeypatch, mongo_db, tmp_path)
    bad = tmp_path / "dir.yaml"
    bad.write_text("- {code: A, name: X, parent: B}\n- {code: B, name: Y, parent: A}\n", encoding="utf-8")
    assert main(["directory", "import", str(bad)]) == 2
    err = capsys.readouterr().err
    assert "cycle" in err and "dir.yaml" in err
    assert mongo_db[DirectoryStore.VERSIONS].count_documents({}) == 0
    assert DirectoryStore(mongo_db).current() is None


def test_services_use_the_imported_catalog_and_directory_else_the_files(mongo_db):
    """intake, the sla engine/API and notify read the version imported into MongoDB
    (VersionedStore.current_or_file), else CATALOG_FILE/DIRECTORY_FILE."""
    from shared.domain.catalog import load_catalog
    from shared.domain import PACKAGE_DATA
    from shared.platform.config import Settings
    from shared.platform.refdata import context_from_settings
    from services.intake.bootstrap import Resources
    from services.notify.bootstrap import load_agencies

    settings = Settings.from_env(catalog_file=str(PACKAGE_DATA / "catalog.yaml"),
                                 directory_file=str(PACKAGE_DATA / "directory.yaml"))
    shipped = load_catalog(settings.catalog_file)
    # nothing imported: the files
    assert CatalogStore.current_or_file(settings.catalog_file, mongo_db).version == shipped.version
    assert DirectoryStore.current_or_file(settings.directory_file, mongo_db).version == default_directory().version
    assert context_from_settings(settings, mongo_db).directory.version == default_directory().version

    # a catalog in which 1.001193 takes 2 working days, and a directory with a new chairman
    records = [dict(r, limit="2wd") if r["code"] == "1.001193" else r for r in shipped.records]
    mine = catalog_from_records(records, "mine.yaml")
    CatalogStore(mongo_db).import_catalog(mine, T0, source="mine.yaml")
    d = small_directory("Lê Thị Cúc")
    DirectoryStore(mongo_db).import_directory(d, T0, source="dir.yaml")

    ctx = context_from_settings(settings, mongo_db)                      # sla worker, API, rebuild
    assert ctx.catalog.version == mine.version != shipped.version
    assert str(ctx.catalog.get("1.001193").limit) != str(shipped.get("1.001193").limit)
    assert ctx.directory.version == d.version
    res = Resources(settings, db=mongo_db)                                # intake
    assert res.catalog().version == mine.version and res.directory().version == d.version
    assert load_agencies(settings, mongo_db).get("000.00.00.H56").head.name == "Lê Thị Cúc"  # notify
    # without a store: the files
    assert context_from_settings(settings).catalog.version == shipped.version
