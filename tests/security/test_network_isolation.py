"""Instance networks keep tenants apart: each claim is an attack that must fail, next to
the same connection made by someone allowed to make it (so the test can fail).

Traffic goes only to loopback or to addresses inside namespaces this test or the module
made. Root only (skipped otherwise, with the reason).
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import uuid
from ipaddress import IPv4Address

import pytest

from shellwego.runtime.network import InstanceNet, NodeNetwork
from support.netns import Networks, PeerServer, attempt, ip

pytestmark = pytest.mark.timeout(120)


def host_primary_address() -> str | None:
    """The host's first global IPv4 address outside ShellWeGo and test interfaces."""
    for link in json.loads(ip("-j", "-4", "addr", "show")):
        if link["ifname"].startswith(("swg", "lo")):
            continue
        for info in link.get("addr_info", []):
            if info.get("scope") == "global":
                return str(info["local"])
    return None


async def serve_in(networks: Networks, net: InstanceNet) -> PeerServer:
    """A server inside the instance's namespace, listening on all its addresses."""
    return networks.server(net.netns_path, "0.0.0.0")


async def reach(net: InstanceNet | None, address: object, port: int, **kw: object) -> str:
    path = net.netns_path if net is not None else None
    return await asyncio.to_thread(attempt, path, str(address), port, **kw)  # type: ignore[arg-type]


@pytest.fixture
async def pair(networks: Networks) -> tuple[NodeNetwork, InstanceNet, InstanceNet]:
    network = await networks.make()
    return network, await network.attach("tenant-a"), await network.attach("tenant-b")


async def test_an_instance_cannot_connect_to_another_instance(
    networks: Networks, pair: tuple[NodeNetwork, InstanceNet, InstanceNet]
) -> None:
    _, a, b = pair
    server_b = await serve_in(networks, b)
    server_a = await serve_in(networks, a)
    # the host (the edge, health checks) reaches both
    assert await reach(None, b.address, server_b.port) == f"ok {b.gateway}"
    assert await reach(None, a.address, server_a.port) == f"ok {a.gateway}"
    # same bridge, same subnet: the bridge port is isolated, so not even ARP gets through
    assert not (await reach(a, b.address, server_b.port)).startswith("ok")
    assert not (await reach(b, a.address, server_a.port)).startswith("ok")
    assert server_b.peers == [str(b.gateway)]


async def test_routing_through_the_gateway_does_not_reach_another_instance(
    networks: Networks, pair: tuple[NodeNetwork, InstanceNet, InstanceNet]
) -> None:
    """Root inside A (stronger than any app) routes B's address via the gateway."""
    _, a, b = pair
    server_b = await serve_in(networks, b)
    ip("-n", a.netns, "route", "add", f"{b.address}/32", "via", str(a.gateway))
    assert await reach(a, b.address, server_b.port) == "ConnectionRefusedError"  # rejected
    assert server_b.peers == []


async def test_a_port_forward_on_the_host_does_not_reach_another_instance(
    networks: Networks, pair: tuple[NodeNetwork, InstanceNet, InstanceNet]
) -> None:
    """Someone forwards a host port to B (DNAT); A tries it on every host address."""
    _, a, b = pair
    server_b = await serve_in(networks, b)
    table = f"swgtest_{uuid.uuid4().hex[:8]}"
    targets = [str(a.gateway), *filter(None, [host_primary_address()])]
    forwarded = 18000 + int(uuid.uuid4().hex[:3], 16)
    rules = (
        f"table ip {table} {{\n chain pre {{\n  type nat hook prerouting priority dstnat;\n"
        f"  tcp dport {forwarded} counter dnat to {b.address}:{server_b.port}\n }}\n}}\n"
    )
    subprocess.run(["nft", "-f", "-"], input=rules, text=True, check=True)
    try:
        for target in targets:
            assert not (await reach(a, target, forwarded)).startswith("ok")
        listed = subprocess.run(
            ["nft", "-j", "list", "table", "ip", table], capture_output=True, text=True, check=True
        ).stdout
        counters = [item["counter"] for item in _rule_exprs(listed) if "counter" in item]
        assert counters and counters[0]["packets"] >= len(targets)  # the DNAT did apply
    finally:
        subprocess.run(["nft", "delete", "table", "ip", table], check=False)
    assert server_b.peers == []


def _rule_exprs(listed: str) -> list[dict[str, dict[str, int]]]:
    exprs: list[dict[str, dict[str, int]]] = []
    for item in json.loads(listed)["nftables"]:
        if "rule" in item:
            exprs += item["rule"]["expr"]
    return exprs


async def test_an_instance_cannot_reach_the_hosts_services(
    networks: Networks, pair: tuple[NodeNetwork, InstanceNet, InstanceNet]
) -> None:
    _, a, _ = pair
    everywhere = networks.server(None, "0.0.0.0")
    loopback = networks.server(None, "127.0.0.1")
    host_address = host_primary_address()
    addresses = [str(a.gateway), *filter(None, [host_address])]
    # the host's own processes reach them
    for address in addresses:
        assert (await reach(None, address, everywhere.port)).startswith("ok")
    assert (await reach(None, "127.0.0.1", loopback.port)).startswith("ok")
    seen = len(everywhere.peers)
    for server in (everywhere, loopback):
        for address in addresses:
            assert await reach(a, address, server.port) == "ConnectionRefusedError"
        # 127.0.0.1 inside the namespace is the namespace's own loopback, not the host's
        assert await reach(a, "127.0.0.1", server.port) == "ConnectionRefusedError"
    assert len(everywhere.peers) == seen and len(loopback.peers) == 1


async def test_an_instance_has_no_ipv6_path_to_the_host(
    pair: tuple[NodeNetwork, InstanceNet, InstanceNet],
) -> None:
    network, a, _ = pair
    for args in (
        ["-n", a.netns, "-6", "-j", "addr", "show", "dev", "eth0"],
        ["-6", "-j", "addr", "show", "dev", network.names.bridge],
        ["-6", "-j", "addr", "show", "dev", a.host_veth],
    ):
        shown = json.loads(ip(*args) or "[]")
        assert [info for link in shown for info in link.get("addr_info", [])] == []


async def test_egress_reaches_the_outside_through_nat(
    networks: Networks, pair: tuple[NodeNetwork, InstanceNet, InstanceNet]
) -> None:
    _, a, _ = pair
    outside = networks.outside()
    server = networks.server(outside.path, outside.address)
    # the server sees the host's address on its link, never the instance's
    assert await reach(a, outside.address, server.port) == f"ok {outside.host_address}"
    assert server.peers == [outside.host_address]
    assert IPv4Address(server.peers[0]) != a.address


async def test_a_spoofed_source_does_not_leave(
    networks: Networks, pair: tuple[NodeNetwork, InstanceNet, InstanceNet]
) -> None:
    """Root inside A gives itself an address outside its subnet and sends from it."""
    _, a, _ = pair
    outside = networks.outside()
    server = networks.server(outside.path, outside.address)
    spoofed = "198.51.100.77"
    ip("-n", a.netns, "addr", "add", f"{spoofed}/32", "dev", "eth0")
    assert await reach(a, outside.address, server.port, source=spoofed) == "TimeoutError"
    assert (await reach(a, outside.address, server.port)).startswith("ok")
    assert server.peers == [outside.host_address]


async def test_nothing_outside_connects_to_an_instance(
    networks: Networks, pair: tuple[NodeNetwork, InstanceNet, InstanceNet]
) -> None:
    """The outside routes the node's subnet via the host: still no way in."""
    network, a, _ = pair
    server_a = await serve_in(networks, a)
    outside = networks.outside()
    ip("-n", outside.netns, "route", "add", str(network.subnet), "via", outside.host_address)
    assert await reach(None, a.address, server_a.port) == f"ok {a.gateway}"
    assert not (await reach_from(outside.path, a.address, server_a.port)).startswith("ok")
    assert server_a.peers == [str(a.gateway)]


async def reach_from(path: object, address: object, port: int) -> str:
    return await asyncio.to_thread(attempt, path, str(address), port)  # type: ignore[arg-type]


async def test_instances_of_two_node_networks_cannot_reach_each_other(
    networks: Networks,
) -> None:
    first = await networks.make("first")
    second = await networks.make("second")
    assert first.names.bridge != second.names.bridge
    assert first.names.table != second.names.table
    assert not first.subnet.overlaps(second.subnet)
    a = await first.attach("tenant-a")
    c = await second.attach("tenant-c")
    server_a = await serve_in(networks, a)
    server_c = await serve_in(networks, c)
    assert (await reach(None, a.address, server_a.port)).startswith("ok")
    assert (await reach(None, c.address, server_c.port)).startswith("ok")
    assert await reach(a, c.address, server_c.port) == "ConnectionRefusedError"
    assert await reach(c, a.address, server_a.port) == "ConnectionRefusedError"
    # nor through the other network's gateway (a host address)
    assert await reach(a, c.gateway, server_c.port) == "ConnectionRefusedError"
    assert len(server_a.peers) == len(server_c.peers) == 1
