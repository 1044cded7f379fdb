"""Network helpers for tests that start real servers."""

from __future__ import annotations

import fcntl
import os
import random
import tempfile
from pathlib import Path
from typing import IO

from shellwego.runtime.ports import port_in_use

# Ports tests listen on: outside the kernel's ephemeral range (32768-60999 here), which
# every outgoing connection of every process on the host draws from, and outside the
# defaults a ShellWeGo platform running beside the tests takes (8080, 8400, 8443, its
# instance ports 20000-29999).
_RANGES = ((10000, 19999), (30000, 32767))
_handed_out: set[int] = set()
# one lock file per port handed out, held until this process ends: test processes running
# side by side (pytest-xdist workers, another test run) never hand out the same port
_RESERVATIONS = Path(tempfile.gettempdir()) / "shellwego-test-ports"
_held: list[IO[bytes]] = []


def _reserve(port: int) -> bool:
    """Hold ``port``'s lock file for the rest of this process, unless another holds it."""
    _RESERVATIONS.mkdir(mode=0o700, exist_ok=True)
    fh = open(_RESERVATIONS / str(port), "ab")  # noqa: SIM115 - kept open on purpose
    try:
        fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        fh.close()
        return False
    os.set_inheritable(fh.fileno(), False)
    _held.append(fh)
    return True


def _ephemeral() -> tuple[int, int]:
    try:
        with open("/proc/sys/net/ipv4/ip_local_port_range") as fh:
            low, high = (int(x) for x in fh.read().split())
            return low, high
    except (OSError, ValueError):
        return 32768, 60999


def free_port() -> int:
    """A TCP port nothing on the host listens on right now, on any address, never one this
    or another test process handed out before, and one no outgoing connection will take
    meanwhile."""
    low, high = _ephemeral()
    candidates = [
        port
        for first, last in _RANGES
        for port in range(first, last + 1)
        if not low <= port <= high and port not in _handed_out
    ]
    for port in random.sample(candidates, min(len(candidates), 2000)):
        if port_in_use(port, lingering=True):  # nor lingering there
            continue
        _handed_out.add(port)
        if _reserve(port):
            return port
    raise RuntimeError("no free TCP port found for a test server")
