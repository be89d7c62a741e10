#!/usr/bin/env bash
# Debian's chromium for the browser tests (tests/e2e/test_dashboard_browser.py, driven by
# Playwright for Python with executable_path=/usr/bin/chromium). Playwright's own browser
# downloads are not reachable from CI: never `playwright install`.
set -euo pipefail
if [ ! -x /usr/bin/chromium ]; then
  SUDO=""
  if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq chromium
fi
/usr/bin/chromium --version
