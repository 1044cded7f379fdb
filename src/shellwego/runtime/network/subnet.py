"""Which subnet a node network takes: the first block of the pool nothing on the host uses.

Several platforms may share a host, each picking from the same default pool: the choice is
made under a host-wide lock (``flock`` on a file under /run) held until the bridge carries
its address, so the next platform sees it as taken. Taken means overlapping any IPv4 route
(any table; default routes aside) or address of the host, or a nameserver instances use.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
from collections.abc import Iterable, Iterator
from ipaddress import IPv4Address, IPv4Network, ip_network
from pathlib import Path

from shellwego.errors import RuntimeFailure

from .tools import run_ip


def choose_subnet(
    pool: IPv4Network, prefix: int, taken: Iterable[IPv4Network]
) -> IPv4Network | None:
    """The first ``/prefix`` block of ``pool`` that overlaps nothing in ``taken``."""
    busy = sorted({net for net in taken if net.overlaps(pool)})
    for candidate in pool.subnets(new_prefix=prefix):
        if not any(candidate.overlaps(net) for net in busy):
            return candidate
    return None


def host_networks(exclude_device: str | None = None) -> list[IPv4Network]:
    """Every IPv4 network the host routes or has an address in (default routes aside),
    except those on ``exclude_device``."""
    routes = json.loads(run_ip(["-j", "-4", "route", "show", "table", "all"]) or "[]")
    links = json.loads(run_ip(["-j", "-4", "addr", "show"]) or "[]")
    found: list[IPv4Network] = []
    for route in routes:
        dst = route.get("dst", "default")
        if dst == "default" or (exclude_device and route.get("dev") == exclude_device):
            continue
        with contextlib.suppress(ValueError):
            net = ip_network(dst, strict=False)
            if isinstance(net, IPv4Network) and net.prefixlen > 0:
                found.append(net)
    for link in links:
        if exclude_device and link.get("ifname") == exclude_device:
            continue
        for info in link.get("addr_info", []):
            with contextlib.suppress(ValueError, KeyError):
                net = ip_network(f"{info['local']}/{info['prefixlen']}", strict=False)
                if isinstance(net, IPv4Network):
                    found.append(net)
    return found


def host_addresses() -> set[IPv4Address]:
    """The host's own IPv4 addresses."""
    links = json.loads(run_ip(["-j", "-4", "addr", "show"]) or "[]")
    return {
        IPv4Address(info["local"])
        for link in links
        for info in link.get("addr_info", [])
        if "local" in info
    }


def uplink_mtu(default: int = 1500) -> int:
    """The MTU of the device the IPv4 default route leaves by (instances get no more)."""
    routes = json.loads(run_ip(["-j", "-4", "route", "show", "default"]) or "[]")
    for route in routes:
        dev = route.get("dev")
        if dev:
            try:
                return min(default, int(Path(f"/sys/class/net/{dev}/mtu").read_text()))
            except (OSError, ValueError):
                continue
    return default


@contextlib.contextmanager
def host_lock(path: Path) -> Iterator[None]:
    """Hold the host-wide network lock (shared by every platform on the host)."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    except OSError as exc:
        raise RuntimeFailure(f"cannot open the host network lock {path}: {exc.strerror}") from exc
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)
