#!/usr/bin/env bash
# Install ShellWeGo into .venv and start the all-in-one platform (SQLite, no other server).
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -m venv .venv
.venv/bin/pip install --quiet --upgrade pip
.venv/bin/pip install --quiet .
exec .venv/bin/shellwego up "$@"
