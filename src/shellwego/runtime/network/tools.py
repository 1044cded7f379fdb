"""The two host tools node networks drive: ``ip`` (iproute2) and ``nft`` (nftables).

Both are run as argv lists; ``ip -batch -`` and ``nft -f -`` read their commands from
standard input, so one process does many changes.
"""

from __future__ import annotations

import functools
import os
import shutil
import subprocess
from collections.abc import Sequence

from shellwego.errors import RuntimeFailure

TIMEOUT_SECONDS = 20.0
REQUIRED = ("ip", "nft", "nsenter")


@functools.cache
def _binary(name: str) -> str | None:
    for candidate in (shutil.which(name), f"/usr/sbin/{name}", f"/sbin/{name}"):
        if candidate and os.access(candidate, os.X_OK):
            return candidate
    return None


def binary(name: str) -> str:
    path = _binary(name)
    if path is None:
        raise RuntimeFailure(f"{name} is not installed")
    return path


def missing_tools() -> list[str]:
    """Which of ``ip``, ``nft`` and ``nsenter`` this host lacks."""
    return [name for name in REQUIRED if _binary(name) is None]


def _run(argv: Sequence[str], stdin: str | None, what: str, check: bool) -> tuple[int, str]:
    try:
        done = subprocess.run(
            list(argv),
            input=stdin.encode() if stdin is not None else None,
            stdin=None if stdin is not None else subprocess.DEVNULL,
            capture_output=True,
            timeout=TIMEOUT_SECONDS,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise RuntimeFailure(f"{what} failed: {exc}") from exc
    if check and done.returncode != 0:
        lines = done.stderr.decode(errors="replace").strip().splitlines()
        detail = "; ".join(lines[-3:]) or f"exit code {done.returncode}"
        raise RuntimeFailure(f"{what} failed: {detail}")
    return done.returncode, done.stdout.decode(errors="replace")


def run_ip(args: Sequence[str], *, check: bool = True) -> str:
    """``ip ARGS``; its standard output."""
    return _run([binary("ip"), *args], None, f"ip {' '.join(args[:3])}", check)[1]


def ip_batch(
    commands: Sequence[str], *, netns: str | None = None, force: bool = False, what: str = ""
) -> bool:
    """Run ``commands`` (one ``ip`` command each, without the ``ip``) in one ``ip -batch``,
    inside the named network namespace when given. ``force``: go on past failing commands
    and report whether all succeeded instead of raising."""
    argv = [binary("ip")]
    if netns is not None:
        argv += ["-n", netns]
    if force:
        argv.append("-force")
    argv += ["-batch", "-"]
    code, _ = _run(argv, "\n".join(commands) + "\n", what or "ip -batch", not force)
    return code == 0


def run_nft(script: str, *, check: bool = True, what: str = "nft") -> bool:
    """Load ``script`` with ``nft -f -`` (one atomic transaction)."""
    code, _ = _run([binary("nft"), "-f", "-"], script, what, check)
    return code == 0


def nft_has_table(family: str, table: str) -> bool:
    code, _ = _run([binary("nft"), "list", "table", family, table], None, "nft list", False)
    return code == 0
