"""Network helpers for tests that start real servers."""

from __future__ import annotations

import random
import socket

# Ports tests listen on: outside the kernel's ephemeral range (32768-60999 here), which
# every outgoing connection of every process on the host draws from, and outside the
# defaults a ShellWeGo platform running beside the tests takes (8080, 8400, 8443, its
# instance ports 20000-29999).
_RANGES = ((10000, 19999), (30000, 32767))
_handed_out: set[int] = set()


def _ephemeral() -> tuple[int, int]:
    try:
        with open("/proc/sys/net/ipv4/ip_local_port_range") as fh:
            low, high = (int(x) for x in fh.read().split())
            return low, high
    except (OSError, ValueError):
        return 32768, 60999


def _bindable(port: int) -> bool:
    """Nothing listens on ``port`` on any address (nor lingers there: no SO_REUSEADDR)."""
    families = [(socket.AF_INET, "0.0.0.0")]
    if socket.has_ipv6:
        families.append((socket.AF_INET6, "::"))
    for family, host in families:
        try:
            sock = socket.socket(family, socket.SOCK_STREAM)
        except OSError:
            continue
        with sock:
            if family == socket.AF_INET6:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            try:
                sock.bind((host, port))
            except OSError:
                return False
    return True


def free_port() -> int:
    """A TCP port nothing on the host listens on right now, on any address, never one this
    process handed out before, and one no outgoing connection will take meanwhile."""
    low, high = _ephemeral()
    candidates = [
        port
        for first, last in _RANGES
        for port in range(first, last + 1)
        if not low <= port <= high and port not in _handed_out
    ]
    for port in random.sample(candidates, min(len(candidates), 2000)):
        if _bindable(port):
            _handed_out.add(port)
            return port
    raise RuntimeError("no free TCP port found for a test server")
