#!/usr/bin/env bash
# The compose part of CI (issue 14), called by .ci/run:
#   bash deploy/compose/ci.sh setup   a Docker engine and the compose plugin (installed and started
#                                     when missing), every stand-in image (monitoring too) and the
#                                     service image; cached, so a second run takes seconds
#   bash deploy/compose/ci.sh test    tests/compose (pytest -m compose), figures at the end
# Each step prints how long it took.
set -euo pipefail
cd "$(dirname "$0")/../.."
step() {   # name command...
  local name=$1 start rc; shift
  start=$(date +%s)
  set +e; "$@"; rc=$?; set -e
  echo "[compose-ci] $name: $(( $(date +%s) - start )) s (exit $rc)"
  return "$rc"
}
case ${1:-} in
  setup)
    step "engine and compose plugin" bash deploy/compose/engine.sh
    step "stand-in images (with monitoring)" bash deploy/compose/images.sh --monitoring
    # the file's required variables must be set for any compose command; the build reads none.
    # One service: the six share the image, and `build` of them all runs six builds at once
    step "service image" env NOTIFY_SECRET=build-only bash deploy/compose/dc.sh build intake
    ;;
  test)
    [ -x .venv/bin/python ] || { echo "ci.sh: .venv missing (bash deploy/test.sh creates it)" >&2; exit 1; }
    rc=0
    step "tests/compose" .venv/bin/python -m pytest tests/compose -m compose -rs -p no:cacheprovider "${@:2}" || rc=$?
    # 5: pytest collected no test (a wrong path or marker, a collection filter): not a pass
    if [ "$rc" -eq 5 ]; then
      echo "ci.sh: pytest collected no compose test (exit 5): that is a failure" >&2
      exit 1
    fi
    exit "$rc"
    ;;
  *) echo "usage: bash deploy/compose/ci.sh setup|test [pytest args]" >&2; exit 2 ;;
esac
