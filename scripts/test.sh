#!/usr/bin/env bash
# Install ShellWeGo with its test tools into .venv and run the whole test suite.
# Needs PostgreSQL reachable at SHELLWEGO_TEST_PG_URL (default: postgres@127.0.0.1:5432).
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -m venv .venv
.venv/bin/pip install --quiet --upgrade pip
.venv/bin/pip install --quiet -e '.[dev]'
.venv/bin/ruff check src tests bench examples
.venv/bin/mypy
# side by side in several processes (pytest-xdist), which take tests from each other as
# they finish (work stealing: the long end-to-end files spread out): most tests wait on
# real processes, servers and builds rather than on the CPU. SHELLWEGO_TEST_WORKERS=0 runs
# them in this process instead
exec .venv/bin/pytest -q -n "${SHELLWEGO_TEST_WORKERS:-4}" --dist worksteal "$@"
