"""`motcua catalog check|import` / `motcua directory check|import`: every problem of a file in one
run, exit 2 with file, entry and field, never a traceback. Run in-process through the CLI's
`main(argv)`; tests/integration/test_cli_entry_point.py runs the installed console script."""
from __future__ import annotations

import pytest

from shared.cli import main

from helpers.net import closed_port

CATALOG = """\
- code: "1.000001"
  name: Thủ tục thử
  field: Hộ tịch
  limit: 5wd
  components: []
  sample: true
  effective_from: {date}
- code: "1.000002"
  name: Thủ tục khác
  field: Hộ tịch
  limit: 5wd
  components: []
  sample: true
- code: "1.000002"
  name: Thủ tục khác, bản trùng
  field: Hộ tịch
  limit: 5xx
  components: []
  sample: true
"""

DIRECTORY = """\
- {code: A, name: UBND tỉnh, office: default}
- {code: B, name: Sở, parent: A, office: defualt}
- {code: C, name: Phòng, parent: GHOST, head: {name: X, email: not-an-email}}
- {code: B, name: Sở (trùng), parent: A}
"""


class Result:
    def __init__(self, returncode: int, stdout: str, stderr: str):
        self.returncode, self.stdout, self.stderr = returncode, stdout, stderr


@pytest.fixture
def motcua(monkeypatch, capsys):
    """`motcua ARGS…` in this process, with no MongoDB reachable: (exit code, stdout, stderr)."""
    monkeypatch.setenv("MONGO_URI", f"mongodb://127.0.0.1:{closed_port()}/")
    monkeypatch.setenv("MONGO_TIMEOUT_MS", "200")

    def run(*args: str) -> Result:
        capsys.readouterr()
        try:
            code = main(list(args))
        except SystemExit as exc:          # argparse's own errors
            code = exc.code
        out = capsys.readouterr()
        return Result(code, out.out, out.err)
    return run


@pytest.mark.parametrize("action", ["check", "import"])
def test_catalog_with_an_impossible_date_exits_2_listing_every_problem(tmp_path, action, motcua):
    f = tmp_path / "my-catalog.yaml"
    f.write_text(CATALOG.format(date="2026-13-01"), encoding="utf-8")
    r = motcua("catalog", action, str(f))
    assert r.returncode == 2, r.stderr
    assert "Traceback" not in r.stderr
    lines = r.stderr.splitlines()
    assert lines[0] == "motcua: error: invalid procedure catalog: 3 errors:"
    assert f"{f}, entry #1 (1.000001), field 'effective_from': 2026-13-01 is not a date" in lines[1]
    assert f"{f}, entry #3 (1.000002), field 'limit'" in lines[2]
    assert f"{f}, entry #3 (1.000002), field 'effective_from'" in lines[3] and "entry #2" in lines[3]


@pytest.mark.parametrize("action", ["check", "import"])
def test_directory_with_a_mistyped_office_exits_2_listing_every_problem(tmp_path, action, motcua):
    f = tmp_path / "my-directory.yaml"
    f.write_text(DIRECTORY, encoding="utf-8")
    r = motcua("directory", action, str(f))
    assert r.returncode == 2, r.stderr
    assert "Traceback" not in r.stderr
    body = r.stderr
    assert "invalid agency directory: 4 errors:" in body
    assert f"{f}, entry #2 (B), field 'office': unknown office 'defualt'" in body
    assert f"{f}, entry #3 (C), field 'head.email'" in body
    assert f"{f}, entry #3 (C), field 'parent': unknown parent agency 'GHOST'" in body
    assert f"{f}, entry #4 (B), field 'code': duplicate agency code" in body
