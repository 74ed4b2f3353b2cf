#!/usr/bin/env bash
# Debian's Chromium for the dashboard's end-to-end tests (Playwright drives it; it never
# downloads a browser of its own). Needs apt and root, as on the CI machine.
set -euo pipefail
if command -v chromium >/dev/null 2>&1; then
  exit 0
fi
if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null 2>&1; then
  echo "install-browser: Chromium is missing; install Debian's 'chromium' package (root and apt needed)" >&2
  exit 1
fi
echo "install-browser: installing Debian's chromium (a few minutes)" >&2
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq >/dev/null
apt-get install -y -qq chromium >/dev/null
