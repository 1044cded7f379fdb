"""Sockets inside network namespaces, small servers, and an "outside" network.

A socket belongs to the network namespace it was created in, whatever thread uses it
later: :func:`netns_socket` creates one in a short-lived thread that first enters the
namespace (network namespaces are per thread), so a test talks from inside an instance's
namespace without running a process there.
"""

from __future__ import annotations

import contextlib
import ctypes
import ipaddress
import os
import shutil
import socket
import subprocess
import threading
import uuid
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import TypeVar

import pytest

from shellwego.runtime.network import NetworkSettings, NodeNetwork
from shellwego.runtime.network.subnet import host_networks

T = TypeVar("T")

CLONE_NEWNET = 0x40000000
_libc = ctypes.CDLL(None, use_errno=True)


def network_tools_missing() -> str | None:
    """Why the network tests cannot run here (None: they can)."""
    if os.geteuid() != 0:
        return "instance networks need root"
    missing = [tool for tool in ("ip", "nft", "nsenter") if shutil.which(tool) is None]
    if missing:
        return f"{', '.join(missing)} not installed (apt-get install iproute2 nftables)"
    return None


def in_netns(path: Path, action: Callable[[], T]) -> T:
    """``action()`` run in a thread inside the network namespace at ``path``."""
    result: list[T] = []
    error: list[BaseException] = []

    def run() -> None:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        try:
            if _libc.setns(fd, CLONE_NEWNET) != 0:
                err = ctypes.get_errno()
                raise OSError(err, os.strerror(err))
            result.append(action())
        except BaseException as exc:
            error.append(exc)
        finally:
            os.close(fd)

    thread = threading.Thread(target=run)
    thread.start()
    thread.join()
    if error:
        raise error[0]
    return result[0]


def netns_socket(path: Path | None, kind: socket.SocketKind = socket.SOCK_STREAM) -> socket.socket:
    """A new IPv4 socket in the namespace at ``path`` (None: the host's)."""
    if path is None:
        return socket.socket(socket.AF_INET, kind)
    return in_netns(path, lambda: socket.socket(socket.AF_INET, kind))


def attempt(
    netns: Path | None,
    address: str,
    port: int,
    *,
    timeout: float = 1.0,
    source: str | None = None,
) -> str:
    """Connect from ``netns`` to ``address:port``: ``"ok <what the server said>"`` or
    the error's name (``ConnectionRefusedError``, ``TimeoutError``...)."""
    sock = netns_socket(netns)
    sock.settimeout(timeout)
    try:
        if source is not None:
            sock.bind((source, 0))
        sock.connect((address, port))
        return "ok " + sock.recv(256).decode().strip()
    except OSError as exc:
        return type(exc).__name__
    finally:
        sock.close()


class PeerServer:
    """A TCP server on ``sock`` (bound by the caller) that tells each client the address
    it saw it connect from, and records it."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.sock.listen(16)
        self.sock.settimeout(0.1)
        self.port = int(sock.getsockname()[1])
        self.peers: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    @classmethod
    def bind(cls, netns: Path | None, address: str, port: int = 0) -> PeerServer:
        sock = netns_socket(netns)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((address, port))
        return cls(sock)

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                conn, peer = self.sock.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            with conn:
                self.peers.append(peer[0])
                with contextlib.suppress(OSError):
                    conn.sendall(f"{peer[0]}\n".encode())

    def close(self) -> None:
        self._stop.set()
        self._thread.join(2)
        self.sock.close()


def ip(*args: str) -> str:
    return subprocess.run(["ip", *args], check=True, capture_output=True, text=True).stdout


def free_block(taken: list[ipaddress.IPv4Network]) -> ipaddress.IPv4Network:
    """A /30 of the benchmarking range 198.18.0.0/15 that the host does not use."""
    for _ in range(200):
        candidate = ipaddress.IPv4Network(
            (int(ipaddress.IPv4Address("198.18.0.0")) + 4 * int.from_bytes(os.urandom(2)), 30)
        )
        if not any(candidate.overlaps(net) for net in taken):
            return candidate
    raise AssertionError("no free /30 in 198.18.0.0/15")


class Outside:
    """A network namespace standing for the internet: a veth pair to the host, a /30 of
    its own, routed (the host side is ``host_address``, the namespace's ``address``)."""

    def __init__(self, taken: list[ipaddress.IPv4Network]) -> None:
        tag = uuid.uuid4().hex[:8]
        self.netns = f"swgtest-out-{tag}"
        self.path = Path("/run/netns") / self.netns
        self.host_veth = f"swgto{tag}"
        block = free_block(taken)
        self.host_address = str(block.network_address + 1)
        self.address = str(block.network_address + 2)
        ip("netns", "add", self.netns)
        try:
            ip("link", "add", self.host_veth, "type", "veth", "peer", "name", "eth0",
               "netns", self.netns)  # fmt: skip
            ip("addr", "add", f"{self.host_address}/30", "dev", self.host_veth)
            ip("link", "set", self.host_veth, "up")
            ip("-n", self.netns, "addr", "add", f"{self.address}/30", "dev", "eth0")
            ip("-n", self.netns, "link", "set", "eth0", "up")
            ip("-n", self.netns, "link", "set", "lo", "up")
        except BaseException:
            self.close()
            raise

    def close(self) -> None:
        subprocess.run(["ip", "link", "del", self.host_veth], capture_output=True, check=False)
        subprocess.run(["ip", "netns", "del", self.netns], capture_output=True, check=False)


class Networks:
    """Node networks made for one test, each over a state directory of its own under
    ``base``; :meth:`close` tears every one down, and whatever else was registered."""

    def __init__(self, base: Path) -> None:
        self.base = base
        self.made: list[NodeNetwork] = []
        self.cleanups: list[Callable[[], object]] = []

    async def make(
        self, name: str = "node", settings: NetworkSettings | None = None
    ) -> NodeNetwork:
        network = NodeNetwork(self.base / name / "network", settings)
        self.made.append(network)
        await network.setup()
        return network

    def server(self, netns: Path | None, address: str, port: int = 0) -> PeerServer:
        server = PeerServer.bind(netns, address, port)
        self.cleanups.append(server.close)
        return server

    def outside(self) -> Outside:
        outside = Outside(host_networks())
        self.cleanups.append(outside.close)
        return outside

    async def close(self) -> None:
        for cleanup in reversed(self.cleanups):
            with contextlib.suppress(Exception):
                cleanup()
        for network in self.made:
            await NodeNetwork(network.state_dir, network.settings).teardown()


@pytest.fixture
async def networks(tmp_path: Path) -> AsyncIterator[Networks]:
    """Root only: skips with the reason elsewhere. Tests that use it import it."""
    reason = network_tools_missing()
    if reason is not None:
        pytest.skip(reason)
    made = Networks(tmp_path)
    try:
        yield made
    finally:
        await made.close()
