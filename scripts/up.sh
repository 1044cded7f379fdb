#!/usr/bin/env bash
# Install ShellWeGo into .venv and start the all-in-one platform (SQLite, no other server).
set -euo pipefail
cd "$(dirname "$0")/.."
# bubblewrap sandboxes every app instance, build step and one-off command, and nftables
# (with iproute2) gives each its own network; as root on a Debian/Ubuntu host they are
# installed here when missing (elsewhere: install them yourself)
need=()
command -v bwrap >/dev/null || need+=(bubblewrap)
command -v nft >/dev/null || need+=(nftables)
command -v ip >/dev/null || need+=(iproute2)
if [ ${#need[@]} -gt 0 ] && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
  echo "Installing ${need[*]} (the app sandbox and instance networks)…"
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null 2>&1 ||
    { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null; }
fi
echo "Creating .venv and installing ShellWeGo into it (under a minute the first time)…"
python3 -m venv .venv
.venv/bin/pip install --quiet --upgrade pip
.venv/bin/pip install --quiet --progress-bar off .
echo "Starting the platform…"
exec .venv/bin/shellwego up "$@"
