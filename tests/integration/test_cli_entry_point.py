"""The installed `motcua` console script (pyproject's [project.scripts] and the `motcua.commands`
entry points), run as a process: the one place where the real entry point matters. The
commands themselves are tested in-process in tests/unit (test_refdata_cli.py and others)."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from helpers.net import closed_port

MOTCUA = str(Path(sys.executable).parent / "motcua")
REPO_ROOT = Path(__file__).resolve().parents[2]


def test_console_script_reports_a_bad_catalog_with_exit_2_and_no_traceback(tmp_path):
    f = tmp_path / "my-catalog.yaml"
    f.write_text('- code: "1.000001"\n  name: Thủ tục thử\n  field: Hộ tịch\n  limit: 5wd\n'
                 '  components: []\n  sample: true\n  effective_from: 2026-13-01\n', encoding="utf-8")
    env = dict(os.environ, MONGO_URI=f"mongodb://127.0.0.1:{closed_port()}/", MONGO_TIMEOUT_MS="200")
    r = subprocess.run([MOTCUA, "catalog", "check", str(f)], capture_output=True, text=True,
                       cwd=REPO_ROOT, env=env, timeout=60)
    assert r.returncode == 2, r.stderr
    assert "Traceback" not in r.stderr
    assert r.stderr.startswith(f"motcua: error: invalid procedure catalog: {f}, entry #1 (1.000001), "
                               "field 'effective_from': 2026-13-01 is not a date"), r.stderr


def test_console_script_lists_the_service_commands():
    """`sla` comes from the `motcua.commands` entry point of the installed distribution."""
    r = subprocess.run([MOTCUA, "--help"], capture_output=True, text=True, cwd=REPO_ROOT, timeout=60)
    assert r.returncode == 0, r.stderr
    for command in ("catalog", "directory", "keys", "deadline", "sla"):
        assert command in r.stdout, command
