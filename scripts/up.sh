#!/usr/bin/env bash
# Install ShellWeGo into .venv and start the all-in-one platform (SQLite, no other server).
set -euo pipefail
cd "$(dirname "$0")/.."
# bubblewrap sandboxes every app instance, build step and one-off command; as root on a
# Debian/Ubuntu host it is installed here when missing (elsewhere: install it yourself)
if ! command -v bwrap >/dev/null && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
  echo "Installing bubblewrap (the app sandbox)…"
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq bubblewrap >/dev/null 2>&1 ||
    { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq bubblewrap >/dev/null; }
fi
python3 -m venv .venv
.venv/bin/pip install --quiet --upgrade pip
.venv/bin/pip install --quiet .
exec .venv/bin/shellwego up "$@"
