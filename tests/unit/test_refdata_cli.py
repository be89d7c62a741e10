"""`motcua catalog check` / `motcua directory check` through the installed console script:
every problem of a file in one run, exit 2 with file, entry and field, never a traceback."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

MOTCUA = str(Path(sys.executable).parent / "motcua")
REPO_ROOT = Path(__file__).resolve().parents[2]

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


def motcua(*args: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, MONGO_URI="mongodb://127.0.0.1:1/", MONGO_TIMEOUT_MS="200")
    return subprocess.run([MOTCUA, *args], capture_output=True, text=True, cwd=REPO_ROOT, env=env,
                          timeout=60)


@pytest.mark.parametrize("action", ["check", "import"])
def test_catalog_with_an_impossible_date_exits_2_listing_every_problem(tmp_path, action):
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
def test_directory_with_a_mistyped_office_exits_2_listing_every_problem(tmp_path, action):
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
