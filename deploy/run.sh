#!/usr/bin/env bash
# Run the whole system on this machine (no Docker): install, start Kafka + FerretDB + SMTP catcher
# + the three services, post a sample of dossier events, and show where the alert e-mails land.
#   bash deploy/run.sh          stop with: .venv/bin/motcua local down
set -euo pipefail
cd "$(dirname "$0")/.."

PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PY" -c 'import sys; sys.exit(sys.version_info < (3, 11))' \
    || { echo "run.sh: Python 3.11+ is required (set PYTHON=…)" >&2; exit 1; }
  "$PY" -m venv .venv
fi
.venv/bin/python -m pip install -q -U pip
.venv/bin/python -m pip install -q -e .

.venv/bin/motcua local up
eval "$(.venv/bin/motcua local env)"
.venv/bin/motcua demo --wait 90

echo
echo "Alert e-mails (one .eml file per message): $MAIL_DIR"
ls -1 "$MAIL_DIR" 2>/dev/null | head -20 || true
echo
echo "Logs: $(dirname "$MAIL_DIR")/logs    Status: .venv/bin/motcua local status    Stop: .venv/bin/motcua local down"
