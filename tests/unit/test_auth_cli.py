"""`motcua keys …` on a mongomock database (the real-Mongo path is in tests/integration)."""
import mongomock
import pytest
import yaml

import shared.cli.keys as cli_keys
from shared.platform.auth import KeyStore
from shared.cli import main


@pytest.fixture
def db(monkeypatch, tmp_path):
    d = mongomock.MongoClient()["cli"]
    monkeypatch.setattr(cli_keys, "_db", lambda settings: d)
    f = tmp_path / "dir.yaml"
    f.write_text(yaml.safe_dump([{"code": "000.00.17.H56", "name": "Sở Tư pháp", "parent": None}],
                                allow_unicode=True), encoding="utf-8")
    monkeypatch.setenv("DIRECTORY_FILE", str(f))
    return d


def test_create_prints_key_alone_on_last_line(db, capsys):
    assert main(["keys", "create", "--agency", "000.00.17.H56", "--role", "counter"]) == 0
    last = capsys.readouterr().out.rstrip("\n").splitlines()[-1]
    principal = KeyStore(db).verify(last)
    assert principal is not None and principal.agency_code == "000.00.17.H56"
    assert principal.role == "counter"


def test_create_rejects_unknown_agency_and_role(db, capsys):
    assert main(["keys", "create", "--agency", "999", "--role", "counter"]) == 2
    assert "not in the agency directory" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["keys", "create", "--agency", "000.00.17.H56", "--role", "boss"])
    assert db["api_keys"].count_documents({}) == 0


def test_list_and_revoke(db, capsys):
    main(["keys", "create", "--agency", "000.00.17.H56", "--role", "admin", "--label", "cổng DVC"])
    secret = capsys.readouterr().out.splitlines()[-1]
    key_id = KeyStore(db).verify(secret).key_id
    assert main(["keys", "list"]) == 0
    out = capsys.readouterr().out
    assert key_id in out and secret not in out and "cổng DVC" in out
    assert main(["keys", "revoke", key_id]) == 0
    assert KeyStore(db).verify(secret) is None
    assert main(["keys", "revoke", key_id]) == 2
    assert "no active key" in capsys.readouterr().err
