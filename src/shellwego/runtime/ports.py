"""Host ports, for instances that share the host's network (no network of their own).

Such an instance listens on a port of the host, so two things can go wrong that the
runtime must catch rather than report success:

* the port is already taken by another program (another tenant's process, another
  platform, anything): :func:`port_in_use` tells before the instance starts, and the start
  fails with :class:`PortInUse`, which the control plane turns into an event and a new
  port;
* something else answers on the port the instance was meant to take: a health check must
  then fail, so :func:`listener_pids` says which processes hold the listening sockets of a
  port, and the runtime checks they are the instance's own.
"""

from __future__ import annotations

import contextlib
import errno
import os
import socket
from collections.abc import Iterable
from pathlib import Path

_LISTEN = "0A"  # TCP_LISTEN in /proc/net/tcp{,6}
_TABLES = ("/proc/net/tcp", "/proc/net/tcp6")


def port_in_use(port: int, *, lingering: bool = False) -> bool:
    """Whether a TCP socket listens on ``port`` on any address of the host (``lingering``:
    or a connection on it lingers, e.g. in TIME_WAIT).

    A bind to the wildcard address fails while anything listens on that port, on any
    address; SO_REUSEADDR keeps lingering connections from counting.
    """
    families = [(socket.AF_INET, "0.0.0.0")]
    if socket.has_ipv6:
        families.append((socket.AF_INET6, "::"))
    for family, host in families:
        try:
            sock = socket.socket(family, socket.SOCK_STREAM)
        except OSError:  # no IPv6 on this host
            continue
        with sock:
            if not lingering:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if family == socket.AF_INET6:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            try:
                sock.bind((host, port))
            except OSError as exc:
                if exc.errno == errno.EADDRINUSE:
                    return True
                if exc.errno != errno.EADDRNOTAVAIL:
                    raise
    return False


def listening_inodes(port: int, tables: Iterable[str] = _TABLES) -> set[int]:
    """Inodes of the TCP sockets listening on ``port`` (any address) in this network
    namespace."""
    inodes: set[int] = set()
    for table in tables:
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            if len(fields) < 10 or fields[3] != _LISTEN:
                continue
            _, _, local_port = fields[1].rpartition(":")
            with contextlib.suppress(ValueError):
                if int(local_port, 16) == port:
                    inodes.add(int(fields[9]))
    return inodes


def socket_inodes(pid: int) -> set[int]:
    """Inodes of the sockets process ``pid`` has open (empty when it cannot be read)."""
    found: set[int] = set()
    try:
        entries = os.listdir(f"/proc/{pid}/fd")
    except OSError:
        return found
    for entry in entries:
        try:
            target = os.readlink(f"/proc/{pid}/fd/{entry}")
        except OSError:
            continue
        if target.startswith("socket:[") and target.endswith("]"):
            with contextlib.suppress(ValueError):
                found.add(int(target[8:-1]))
    return found


def held_by(port: int, pids: Iterable[int]) -> bool | None:
    """Whether every socket listening on ``port`` belongs to one of ``pids``: True when they
    all do, False when one belongs to another process, None when nothing listens."""
    listening = listening_inodes(port)
    if not listening:
        return None
    owned: set[int] = set()
    for pid in pids:
        owned |= socket_inodes(pid)
        if listening <= owned:
            return True
    return False
