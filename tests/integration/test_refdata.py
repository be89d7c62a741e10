"""One source of reference data (issue 11, items 2, 3, 10): every command and service reads the
catalog and directory imported into MongoDB, else the files; imports check every cross-reference.
Real FerretDB, the real `motcua` console script."""
from __future__ import annotations

import os
import subprocess
import sys
from datetime import datetime, timezone
from pathlib import Path

import yaml

from shared.platform.auth import KeyStore
from shared.platform.refdata import CatalogStore
from shared.domain.catalog import default_catalog
from shared.domain import PACKAGE_DATA
from shared.platform.config import Settings
from shared.platform.refdata import DirectoryStore

MOTCUA = str(Path(sys.executable).parent / "motcua")
REPO_ROOT = Path(__file__).resolve().parents[2]
T0 = datetime(2024, 11, 5, 2, 0, tzinfo=timezone.utc)

MY_DIRECTORY = [
    {"code": "999.00.00.X01", "name": "UBND tỉnh Thử nghiệm", "office": "default",
     "head": {"name": "Chủ tịch tỉnh", "email": "ct@example.org"}},
    {"code": "999.00.01.X01", "name": "Sở Tư pháp tỉnh Thử nghiệm", "parent": "999.00.00.X01",
     "head": {"name": "Giám đốc Sở", "email": "gd-stp@example.org"}},
]


def run(mongo_db, tmp_path, *args: str) -> subprocess.CompletedProcess:
    host, port = mongo_db.client.address
    clock = tmp_path / "clock"
    clock.write_text(T0.isoformat(), encoding="utf-8")
    env = dict(os.environ, MONGO_URI=f"mongodb://{host}:{port}/", MONGO_DB=mongo_db.name,
               MOTCUA_CLOCK_FILE=str(clock), DIRECTORY_FILE=str(PACKAGE_DATA / "directory.yaml"),
               CATALOG_FILE=str(PACKAGE_DATA / "catalog.yaml"))
    return subprocess.run([MOTCUA, *args], capture_output=True, text=True, cwd=REPO_ROOT, env=env,
                          timeout=120)


def test_keys_create_checks_the_agency_against_the_imported_directory(mongo_db, tmp_path):
    f = tmp_path / "my-directory.yaml"
    f.write_text(yaml.safe_dump(MY_DIRECTORY, allow_unicode=True), encoding="utf-8")
    r = run(mongo_db, tmp_path, "directory", "import", str(f))
    assert r.returncode == 0, r.stderr

    r = run(mongo_db, tmp_path, "keys", "create", "--agency", "999.00.01.X01", "--role", "counter")
    assert r.returncode == 0, r.stderr
    principal = KeyStore(mongo_db).verify(r.stdout.rstrip("\n").splitlines()[-1])
    assert principal.agency_code == "999.00.01.X01" and principal.role == "counter"

    # an agency of the shipped file only: not in the directory in force
    r = run(mongo_db, tmp_path, "keys", "create", "--agency", "000.00.00.H56", "--role", "counter")
    assert r.returncode == 2
    version = DirectoryStore(mongo_db).current_version()
    assert f"not in the agency directory (version {version} imported into MongoDB" in r.stderr
    assert mongo_db["api_keys"].count_documents({}) == 1


def test_keys_create_without_an_import_uses_the_file(mongo_db, tmp_path):
    r = run(mongo_db, tmp_path, "keys", "create", "--agency", "999.00.01.X01", "--role", "counter")
    assert r.returncode == 2 and "directory.yaml" in r.stderr
    r = run(mongo_db, tmp_path, "keys", "create", "--agency", "000.00.00.H56", "--role", "admin")
    assert r.returncode == 0, r.stderr


def test_directory_import_with_a_mistyped_office_stores_nothing(mongo_db, tmp_path):
    records = [dict(MY_DIRECTORY[0]), dict(MY_DIRECTORY[1], office="defualt")]
    f = tmp_path / "my-directory.yaml"
    f.write_text(yaml.safe_dump(records, allow_unicode=True), encoding="utf-8")
    r = run(mongo_db, tmp_path, "directory", "import", str(f))
    assert r.returncode == 2
    assert f"{f}, entry #2 (999.00.01.X01), field 'office': unknown office 'defualt'" in r.stderr
    assert DirectoryStore(mongo_db).current_version() is None
    assert mongo_db[DirectoryStore.VERSIONS].count_documents({}) == 0


def test_notify_uses_the_imported_catalog(mongo_db):
    from shared.platform.clock import VirtualClock
    from services.notify.policy import load_policy
    from services.notify.worker import build_service

    shipped = default_catalog()
    records = [dict(r, name="Đăng ký khai sinh (tên của tỉnh)") if r["code"] == "1.001193" else r
               for r in shipped.records]
    from shared.domain.catalog import catalog_from_records
    CatalogStore(mongo_db).import_catalog(catalog_from_records(records, "mine.yaml"), T0, "mine.yaml")
    settings = Settings.from_env(catalog_file=str(PACKAGE_DATA / "catalog.yaml"),
                                 directory_file=str(PACKAGE_DATA / "directory.yaml"))
    service = build_service(settings, VirtualClock(T0), mongo_db, policy=load_policy(None), channels={},
                            environ={})
    assert service.procedure_name("1.001193") == "Đăng ký khai sinh (tên của tỉnh)"
    assert service.requirement(None, "OVERDUE") is not None
