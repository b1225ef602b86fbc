#!/usr/bin/env bash
# Debian's headless browser for tests/test_review_browser.py: chromium + chromedriver at fixed paths
# (/usr/bin), so Selenium never downloads a browser or driver. Idempotent: does nothing when both exist.
set -euo pipefail
if [ -x /usr/bin/chromium ] && [ -x /usr/bin/chromedriver ]; then
  exit 0
fi
SUDO=""
if [ "$(id -u)" != 0 ]; then
  SUDO=sudo  # developers' machines; CI and these machines run as root
fi
$SUDO apt-get update -qq
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends chromium chromium-driver
/usr/bin/chromium --version
