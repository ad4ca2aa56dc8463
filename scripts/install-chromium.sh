#!/usr/bin/env bash
# Headless Chromium (Debian's package) for static figure export (PNG, SVG, PDF) and for checking
# that HTML reports render offline, and chromium-driver (chromedriver) for the explorer's Selenium
# test (scripts/explorer_browser_test.py). Idempotent: says what it skipped.
#   NOTEBOOK_CHROMIUM=0   do not install (figures are then written as HTML only, with a note)
set -euo pipefail
if command -v chromium >/dev/null 2>&1 && command -v chromedriver >/dev/null 2>&1; then
  echo "skipped: $(chromium --version 2>/dev/null | head -1) and chromedriver already installed"
elif [ "${NOTEBOOK_CHROMIUM:-1}" = "0" ]; then
  echo "skipped: NOTEBOOK_CHROMIUM=0"
elif [ "$(id -u)" = "0" ] && command -v apt-get >/dev/null 2>&1; then
  echo "installing Debian's chromium (apt-get)"
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver >/dev/null
  echo "installed: $(chromium --version | head -1)"
elif command -v sudo >/dev/null 2>&1 && command -v apt-get >/dev/null 2>&1; then
  echo "installing Debian's chromium (sudo apt-get)"
  sudo apt-get update -qq && sudo DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver >/dev/null
  echo "installed: $(chromium --version | head -1)"
else
  echo "warning: chromium absent and apt-get unusable here: figures will be HTML only" >&2
  echo "         (install Debian's chromium, or set CHROMIUM to a Chromium binary)" >&2
fi
