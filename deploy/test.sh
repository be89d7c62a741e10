#!/usr/bin/env bash
# The README's test command: install everything from the registries (Python venv from PyPI,
# Kafka jars from Maven Central, FerretDB from the Go module proxy) and run the test suite.
#   bash deploy/test.sh [pytest args…]
# Integration tests use KAFKA_BOOTSTRAP_SERVERS/MONGO_URI when set (e.g. `source .local/dev.env`),
# else a Docker engine (testcontainers), else a private local stack started for the session.
# Benchmarks (tests/perf) are skipped; run them with `.venv/bin/python -m pytest tests/perf -m perf -s`.
set -euo pipefail
cd "$(dirname "$0")/.."

PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  command -v "$PY" >/dev/null || { echo "test.sh: $PY not found (Python 3.11+ is required)" >&2; exit 1; }
  "$PY" -c 'import sys; sys.exit(sys.version_info < (3, 11))' \
    || { echo "test.sh: $PY is $("$PY" -V 2>&1); Python 3.11+ is required (set PYTHON=…)" >&2; exit 1; }
  echo "== creating .venv"
  "$PY" -m venv .venv
fi
echo "== installing the project and its test dependencies"
.venv/bin/python -m pip install -q -U pip
.venv/bin/python -m pip install -q -e '.[test]'

if [ -z "${KAFKA_BOOTSTRAP_SERVERS:-}" ] || [ -z "${MONGO_URI:-}" ]; then
  echo "== provisioning the local infrastructure (Kafka jars, FerretDB build; cached in deploy/local/.cache)"
  .venv/bin/python -m shared.dev.localstack provision
fi

echo "== Debian's chromium for the dashboard's browser test (apt, when missing)"
bash deploy/ci/browser-setup.sh

echo "== running the tests"
set +e
# a skipped test fails the run (tests/conftest.py): missing infrastructure must not pass as green
MOTCUA_FAIL_ON_SKIP=${MOTCUA_FAIL_ON_SKIP:-1} .venv/bin/python -m pytest -m "not perf" -rs "$@"
rc=$?
set -e
if [ "$rc" -eq 5 ]; then
  echo "test.sh: pytest collected no tests: that is a failure" >&2
  exit 1
fi
if [ "$rc" -ne 0 ]; then
  echo "test.sh: tests FAILED (pytest exit code $rc)" >&2
fi
exit "$rc"
