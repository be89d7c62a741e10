"""Package metadata: the build must not print setuptools' deprecation warnings (deploy/run.sh's
first screen is ours)."""
import re
import tomllib
from pathlib import Path

PYPROJECT = tomllib.loads((Path(__file__).resolve().parents[2] / "pyproject.toml").read_text())


def test_license_is_an_spdx_string():
    # a TOML table (`{text = ...}`) is deprecated since setuptools 77 and warns on every build
    assert PYPROJECT["project"]["license"] == "Apache-2.0"
    assert not any(c.lower().startswith("license ::") for c in PYPROJECT["project"].get("classifiers", ()))


def test_build_requires_a_setuptools_that_knows_spdx_licenses():
    reqs = [r for r in PYPROJECT["build-system"]["requires"] if r.startswith("setuptools")]
    assert reqs, "setuptools missing from build-system.requires"
    m = re.fullmatch(r"setuptools\s*>=\s*(\d+)(?:\.\d+)*", reqs[0].replace(" ", ""))
    assert m and int(m.group(1)) >= 77, reqs[0]
