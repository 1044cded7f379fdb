"""Cost of an instance network: attach + detach, and a bare ``true`` run inside.

Sets up a real node network (root only) on a scratch state directory and times, over N
rounds, each way of making an instance's namespace side by side (interleaved, so drift on
a shared machine hits every way alike):

* ``module``: :meth:`NodeNetwork.attach` / :meth:`NodeNetwork.detach` as the runtime calls
  them (``ip -batch`` on the host, ``ip -n NS -batch`` inside; detach deletes the
  namespace and lets the kernel remove the veth pair), leases included;
* ``ip-calls``: the same steps with one ``ip`` process each (8 to attach, 1 to detach);
* ``pyroute2``: the same over netlink with pyroute2 (when installed: ``pip install
  pyroute2``), one host socket kept open, one socket made inside each new namespace;

and ``nsenter --net=... -- true`` against a bare ``true`` (what entering costs a start).

Run: sudo .venv/bin/python bench/netns_bench.py [--runs 50]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from shellwego.runtime.network import InstanceNet, NodeNetwork, network_unavailable

SYS_NET = Path("/sys/class/net")
FIRST_INDEX = 200  # the other ways use addresses from here on (the module's start at .2)


def ms(seconds: list[float]) -> str:
    values = sorted(s * 1000 for s in seconds)
    p95 = values[min(len(values) - 1, int(len(values) * 0.95))]
    return f"p50 {statistics.median(values):6.2f} ms  p95 {p95:6.2f} ms"


def net_for(network: NodeNetwork, name: str, index: int) -> InstanceNet:
    return InstanceNet(
        instance_id=name,
        netns=network.names.netns(name),
        address=network.subnet.network_address + index,
        gateway=network.gateway,
        prefix=network.subnet.prefixlen,
        host_veth=network.names.veth(index),
        resolv_conf=network.resolv_conf,
    )


def run(*argv: str) -> None:
    subprocess.run(argv, check=True, stdin=subprocess.DEVNULL)


def ip_calls_attach(network: NodeNetwork, net: InstanceNet) -> None:
    veth, ns = net.host_veth, net.netns
    run("ip", "netns", "add", ns)
    run("ip", "link", "add", veth, "type", "veth", "peer", "name", "eth0", "netns", ns)
    run("ip", "link", "set", veth, "master", network.names.bridge, "addrgenmode", "none", "up")
    run("ip", "link", "set", "dev", veth, "type", "bridge_slave", "isolated", "on")
    run("ip", "-n", ns, "link", "set", "lo", "up")
    run("ip", "-n", ns, "link", "set", "eth0", "addrgenmode", "none", "up")
    run("ip", "-n", ns, "addr", "add", str(net.interface), "dev", "eth0")
    run("ip", "-n", ns, "route", "add", "default", "via", str(net.gateway))


def ip_calls_detach(net: InstanceNet) -> None:
    run("ip", "netns", "del", net.netns)


class Pyroute2Way:
    """pyroute2's synchronous API, which wants a thread without an event loop: every
    call goes to one worker thread (and is timed there)."""

    def __init__(self, network: NodeNetwork) -> None:
        from pyroute2 import IPRoute

        self.IPRoute = IPRoute
        self.worker = ThreadPoolExecutor(max_workers=1)
        self.host = self.worker.submit(IPRoute).result()
        self.bridge = self.in_worker(lambda: self.host.link_lookup(ifname=network.names.bridge))[0]

    def in_worker(self, action: Callable[[], Any]) -> Any:
        return self.worker.submit(action).result()

    def timed(self, action: Callable[..., Any], *args: Any) -> float:
        return float(self.worker.submit(timed, action, *args).result())

    def attach(self, net: InstanceNet) -> None:
        from pyroute2 import netns

        with self.IPRoute(netns=net.netns, flags=os.O_CREAT) as inside:
            self.host.link(
                "add", ifname=net.host_veth, kind="veth",
                peer={"ifname": "eth0", "net_ns_fd": net.netns},
            )  # fmt: skip
            index = self.host.link_lookup(ifname=net.host_veth)[0]
            self.host.link("set", index=index, master=self.bridge, state="up")
            self.host.brport("set", index=index, isolated=1)
            inside.link("set", index=inside.link_lookup(ifname="lo")[0], state="up")
            eth0 = inside.link_lookup(ifname="eth0")[0]
            inside.link("set", index=eth0, state="up")
            inside.addr("add", index=eth0, address=str(net.address), prefixlen=net.prefix)
            inside.route("add", dst="default", gateway=str(net.gateway))
        del netns

    @staticmethod
    def detach(net: InstanceNet) -> None:
        from pyroute2 import netns

        netns.remove(net.netns)

    def close(self) -> None:
        self.in_worker(self.host.close)
        self.worker.shutdown()


def wait_gone(net: InstanceNet) -> None:
    """The kernel removes a deleted namespace's veth in the background: wait for it
    (untimed) before the name is used again."""
    deadline = time.monotonic() + 5
    while (SYS_NET / net.host_veth).exists() and time.monotonic() < deadline:
        time.sleep(0.005)


def timed(action: Callable[..., Any], *args: Any) -> float:
    start = time.perf_counter()
    action(*args)
    return time.perf_counter() - start


async def bench(runs: int) -> None:
    state = Path(tempfile.mkdtemp(prefix="shellwego-netns-bench-"))
    network = NodeNetwork(state / "network")
    await network.setup()
    ways: dict[str, tuple[list[float], list[float]]] = {"module": ([], []), "ip-calls": ([], [])}
    pyroute2: Pyroute2Way | None = None
    enter: list[float] = []
    bare: list[float] = []
    try:
        try:
            pyroute2 = Pyroute2Way(network)
            ways["pyroute2"] = ([], [])
        except ImportError:
            print("pyroute2: not installed (pip install pyroute2), skipped")
        for i in range(runs):
            name = f"bench-{i}"
            start = time.perf_counter()
            net = await network.attach(name)
            ways["module"][0].append(time.perf_counter() - start)
            enter.append(timed(run, *net.enter_argv(), "true"))
            bare.append(timed(run, "true"))
            start = time.perf_counter()
            await network.detach(name)
            ways["module"][1].append(time.perf_counter() - start)

            other = net_for(network, f"bench-ip-{i}", FIRST_INDEX + i % 20)
            wait_gone(other)
            ways["ip-calls"][0].append(timed(ip_calls_attach, network, other))
            ways["ip-calls"][1].append(timed(ip_calls_detach, other))

            if pyroute2 is not None:
                other = net_for(network, f"bench-pr-{i}", FIRST_INDEX + 20 + i % 20)
                wait_gone(other)
                ways["pyroute2"][0].append(pyroute2.timed(pyroute2.attach, other))
                ways["pyroute2"][1].append(pyroute2.timed(pyroute2.detach, other))
    finally:
        if pyroute2 is not None:
            pyroute2.close()
        await network.teardown()
        shutil.rmtree(state, ignore_errors=True)
    print(f"instance network attach/detach, n={runs}, kernel {os.uname().release}")
    for way, (attach, detach) in ways.items():
        total = [a + d for a, d in zip(attach, detach, strict=True)]
        print(f"  {way:9} attach {ms(attach)} | detach {ms(detach)} | both {ms(total)}")
    print(f"  nsenter --net=... -- true  {ms(enter)}")
    print(f"  true (no namespace)        {ms(bare)}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=50)
    args = parser.parse_args()
    reason = network_unavailable()
    if reason is not None:
        sys.exit(f"cannot measure: {reason}")
    asyncio.run(bench(args.runs))


if __name__ == "__main__":
    main()
