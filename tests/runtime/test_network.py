"""Instance networks (runtime.network): the pieces on their own, then the real thing as
root (skipped otherwise, with the reason). The isolation claims are attacked in
tests/security/test_network_isolation.py."""

from __future__ import annotations

import asyncio
import json
import os
import socket
import subprocess
import sys
from ipaddress import IPv4Address, IPv4Network
from pathlib import Path

import dns.exception
import dns.message
import dns.query
import dns.rcode
import pytest

from shellwego.errors import ConfigError, RuntimeUnavailable
from shellwego.runtime.network import (
    InstanceNet,
    NetNames,
    NetworkSettings,
    NodeNetwork,
    network_unavailable,
)
from shellwego.runtime.network.dns import ResolvConf, plan_dns, servfail
from shellwego.runtime.network.firewall import ruleset
from shellwego.runtime.network.subnet import choose_subnet, host_networks
from support.dns_server import DnsServer
from support.netns import Networks, attempt, ip, netns_socket, network_tools_missing

pytestmark = pytest.mark.timeout(120)

GATEWAY = IPv4Address("10.213.0.1")

# ---- the pieces ------------------------------------------------------------------------


def test_the_first_block_of_the_pool_that_nothing_overlaps_is_chosen() -> None:
    pool = IPv4Network("10.213.0.0/16")
    taken = [IPv4Network("10.213.0.0/24"), IPv4Network("10.213.1.128/25")]
    assert choose_subnet(pool, 24, taken[:2]) == IPv4Network("10.213.2.0/24")
    assert choose_subnet(pool, 24, [IPv4Network("192.0.2.0/24")]) == IPv4Network("10.213.0.0/24")
    assert choose_subnet(pool, 24, [IPv4Network("10.0.0.0/8")]) is None  # covers the pool


def test_names_fit_interface_names_and_differ_per_state_directory(tmp_path: Path) -> None:
    one = NetNames.for_state_dir(tmp_path / "one")
    two = NetNames.for_state_dir(tmp_path / "two")
    assert one.bridge != two.bridge and one.table != two.table and one.veth(2) != two.veth(2)
    assert NetNames.for_state_dir(tmp_path / "one" / ".." / "one") == one
    for name in (one.bridge, one.veth(2), one.veth(65534)):
        assert len(name) <= 15
    assert one.bridge.startswith("swgbr") and not one.veth(2).startswith("swgbr")
    assert one.netns("01HZX5") == f"swg-{one.tag}-01HZX5"
    with pytest.raises(Exception, match="invalid instance id"):
        one.netns("../etc")


def test_settings_refuse_what_cannot_work() -> None:
    with pytest.raises(ConfigError, match="prefix"):
        NetworkSettings(prefix=8)
    with pytest.raises(ConfigError, match="IPv4"):
        NetworkSettings.parse(pool="fd00::/64")
    with pytest.raises(ConfigError, match="not an IPv4 address"):
        NetworkSettings.parse(dns_servers="1.1.1.1, resolver.example")
    with pytest.raises(ConfigError, match="bad port"):
        NetworkSettings.parse(dns_upstreams="127.0.0.1:99999")
    parsed = NetworkSettings.parse(pool="10.99.0.0/16", prefix=26, dns_servers="9.9.9.9,1.1.1.1")
    assert parsed.pool == IPv4Network("10.99.0.0/16") and parsed.prefix == 26
    assert parsed.dns_servers == (IPv4Address("9.9.9.9"), IPv4Address("1.1.1.1"))


def test_instances_use_the_hosts_nameservers_when_a_namespace_can_reach_them() -> None:
    host = ResolvConf.parse(
        "# comment\nnameserver 127.0.0.53\nnameserver 192.0.2.53\nnameserver fd00::53\n"
        "search corp.example\noptions edns0 trust-ad\n"
    )
    plan = plan_dns(NetworkSettings(), GATEWAY, host, set())
    assert plan.nameservers == (IPv4Address("192.0.2.53"),) and not plan.forwarder
    text = plan.resolv_conf()
    assert "nameserver 192.0.2.53\n" in text and "127.0.0.53" not in text
    assert "search corp.example\n" in text and "options edns0 trust-ad\n" in text


def test_loopback_or_host_nameservers_make_instances_use_the_forwarder() -> None:
    host = ResolvConf.parse("nameserver 127.0.0.53\nnameserver 192.0.2.2\n")
    plan = plan_dns(NetworkSettings(), GATEWAY, host, {IPv4Address("192.0.2.2")})
    assert plan.forwarder and plan.nameservers == (GATEWAY,)
    assert plan.upstreams == (("127.0.0.53", 53), ("192.0.2.2", 53))
    assert plan.resolv_conf().splitlines()[1:] == [f"nameserver {GATEWAY}"]
    forced = NetworkSettings(dns_forwarder=True, dns_upstreams=("[::1]:5353",))
    plan = plan_dns(forced, GATEWAY, ResolvConf.parse("nameserver 192.0.2.53\n"), set())
    assert plan.forwarder and plan.upstreams == (("::1", 5353),)


def test_configured_dns_servers_override_everything() -> None:
    settings = NetworkSettings(dns_servers=(IPv4Address("9.9.9.9"),), dns_forwarder=True)
    plan = plan_dns(settings, GATEWAY, ResolvConf.parse("nameserver 127.0.0.1\n"), set())
    assert plan.nameservers == (IPv4Address("9.9.9.9"),) and not plan.forwarder


def test_servfail_answers_the_question_it_was_asked() -> None:
    query = dns.message.make_query("app.example", "A", use_edns=True)
    answer = dns.message.from_wire(servfail(query.to_wire()) or b"")
    assert answer.id == query.id and answer.rcode() == dns.rcode.SERVFAIL
    assert answer.question == query.question
    assert servfail(b"\x00" * 5) is None


def test_the_ruleset_only_concerns_its_own_bridge(tmp_path: Path) -> None:
    names = NetNames.for_state_dir(tmp_path)
    subnet = IPv4Network("10.213.4.0/24")
    text = ruleset(names, subnet, subnet.network_address + 1, IPv4Network("10.213.0.0/16"),
                   dns_on_gateway=False)  # fmt: skip
    rules = [line.strip() for line in text.splitlines() if "comment" in line]
    assert text.startswith(f"table inet {names.table} {{")
    assert all(names.bridge in rule for rule in rules)
    assert "policy drop" not in text and "flush" not in text and "dport 53" not in text
    with_dns = ruleset(names, subnet, subnet.network_address + 1, IPv4Network("10.213.0.0/16"),
                       dns_on_gateway=True)  # fmt: skip
    assert "ip daddr 10.213.4.1 meta l4proto { tcp, udp } th dport 53 accept" in with_dns


def test_an_instance_network_is_kept_as_json() -> None:
    net = InstanceNet("i-1", "swg-abc123-i-1", IPv4Address("10.213.0.7"), GATEWAY, 24,
                      "swgvabc123i7", Path("/x/resolv.conf"))  # fmt: skip
    assert InstanceNet.from_json(json.loads(json.dumps(net.to_json()))) == net


async def test_without_root_the_module_says_so(tmp_path: Path) -> None:
    probe = (
        "import asyncio, sys\n"
        "from shellwego.errors import RuntimeUnavailable\n"
        "from shellwego.runtime.network import NodeNetwork, network_unavailable\n"
        "print(network_unavailable())\n"
        "try:\n"
        "    asyncio.run(NodeNetwork(__import__('pathlib').Path(sys.argv[1])).setup())\n"
        "except RuntimeUnavailable as exc:\n"
        "    print('refused:', exc.detail)\n"
    )
    why = "instance networks need root: instances share the host's network"
    if os.geteuid() != 0:
        assert network_unavailable() == why
        with pytest.raises(RuntimeUnavailable, match=why):
            await NodeNetwork(tmp_path / "net").setup()
        return
    argv = ["setpriv", "--reuid", "65534", "--regid", "65534", "--clear-groups"]
    argv += [sys.executable, "-c", probe, str(tmp_path / "net")]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=60, cwd="/")
    assert done.stdout.splitlines() == [why, f"refused: {why}"], done.stderr


# ---- the real thing (root) -------------------------------------------------------------


def json_ip(*args: str) -> list[dict[str, object]]:
    return list(json.loads(ip("-j", *args) or "[]"))


async def test_an_instance_gets_a_namespace_with_its_address_route_and_isolated_port(
    networks: Networks,
) -> None:
    network = await networks.make()
    net = await network.attach("web-1")
    assert net.address in network.subnet and net.address != network.gateway
    assert net.netns_path.exists() and network.exists("web-1")
    (eth0,) = json_ip("-n", net.netns, "-4", "addr", "show", "dev", "eth0")
    assert [a["local"] for a in eth0["addr_info"]] == [str(net.address)]  # type: ignore[attr-defined]
    (lo,) = json_ip("-n", net.netns, "link", "show", "dev", "lo")
    assert "UP" in lo["flags"]  # type: ignore[operator]
    routes = json_ip("-n", net.netns, "-4", "route", "show", "default")
    assert routes[0]["gateway"] == str(network.gateway)
    (port,) = json.loads(
        subprocess.run(["bridge", "-j", "-d", "link", "show", "dev", net.host_veth],
                       capture_output=True, text=True, check=True).stdout)  # fmt: skip
    assert port["master"] == network.names.bridge and port["isolated"] is True


async def test_the_enter_argv_runs_a_command_in_the_namespace(networks: Networks) -> None:
    network = await networks.make()
    net = await network.attach("web-1")
    done = subprocess.run(
        [*net.enter_argv(), "ip", "-j", "-4", "addr", "show", "dev", "eth0"],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    assert json.loads(done.stdout)[0]["addr_info"][0]["local"] == str(net.address)


async def test_the_host_reaches_a_server_in_the_instance(networks: Networks) -> None:
    network = await networks.make()
    net = await network.attach("web-1")
    server = networks.server(net.netns_path, "0.0.0.0")
    answer = await asyncio.to_thread(attempt, None, str(net.address), server.port)
    assert answer == f"ok {network.gateway}"


async def test_attach_is_idempotent_and_addresses_are_never_shared(networks: Networks) -> None:
    network = await networks.make()
    a = await network.attach("a")
    assert await network.attach("a") == a
    b, c = await network.attach("b"), await network.attach("c")
    assert len({a.address, b.address, c.address}) == 3
    await network.detach("b")
    await network.detach("b")  # again: nothing to do
    assert not b.netns_path.exists() and not network.exists("b")
    d = await network.attach("d")
    assert d.address not in (a.address, c.address)
    assert {n.instance_id for n in await network.instances()} == {"a", "c", "d"}


async def test_an_agent_restart_readopts_instances_with_their_addresses(
    networks: Networks,
) -> None:
    network = await networks.make()
    a = await network.attach("a")
    server = networks.server(a.netns_path, "0.0.0.0")
    restarted = NodeNetwork(network.state_dir, network.settings)
    await restarted.setup()
    assert restarted.subnet == network.subnet
    assert await restarted.adopt("a") == a and restarted.exists("a")
    assert await restarted.adopt("never-attached") is None
    assert await restarted.attach("a") == a
    assert await asyncio.to_thread(attempt, None, str(a.address), server.port) == (
        f"ok {a.gateway}"
    )
    other = await restarted.attach("b")
    assert other.address != a.address


async def test_attach_repairs_a_broken_network_keeping_its_address(networks: Networks) -> None:
    network = await networks.make()
    a = await network.attach("a")
    ip("netns", "del", a.netns)
    assert not network.exists("a") and await network.adopt("a") is None
    repaired = await network.attach("a")
    assert repaired == a and network.exists("a")
    server = networks.server(a.netns_path, "0.0.0.0")
    assert (await asyncio.to_thread(attempt, None, str(a.address), server.port)).startswith("ok")


async def test_a_build_session_has_egress_only_and_is_removed_even_on_failure(
    networks: Networks,
) -> None:
    network = await networks.make()
    outside = networks.outside()
    internet = networks.server(outside.path, outside.address)
    host_service = networks.server(None, "0.0.0.0")
    with pytest.raises(RuntimeError, match="build step failed"):
        async with network.session("build-01") as net:
            seen = await asyncio.to_thread(attempt, net.netns_path, outside.address, internet.port)
            assert seen == f"ok {outside.host_address}"
            blocked = await asyncio.to_thread(
                attempt, net.netns_path, str(net.gateway), host_service.port
            )
            assert blocked == "ConnectionRefusedError"
            raise RuntimeError("build step failed")
    assert not net.netns_path.exists() and await network.instances() == []


def free_test_pool() -> IPv4Network:
    """A /20 of 10.214.0.0/16 that the host does not use yet."""
    taken = host_networks()
    for _ in range(100):
        pool = IPv4Network((int(IPv4Address("10.214.0.0")) + (os.urandom(1)[0] % 16) * 4096, 20))
        if not any(pool.overlaps(net) for net in taken):
            return pool
    pytest.skip("no free /20 in 10.214.0.0/16 for the test pool")


async def test_the_subnet_skips_what_the_host_routes_and_is_kept(networks: Networks) -> None:
    pool = free_test_pool()
    first = next(pool.subnets(new_prefix=24))
    subprocess.run(["ip", "route", "add", "blackhole", str(first)], check=True)
    try:
        network = await networks.make(settings=NetworkSettings(pool=pool))
    finally:
        subprocess.run(["ip", "route", "del", "blackhole", str(first)], check=True)
    assert network.subnet == list(pool.subnets(new_prefix=24))[1]
    # the bridge goes away (a reboot): the subnet is taken again, though the first is free
    ip("link", "del", network.names.bridge)
    again = NodeNetwork(network.state_dir, network.settings)
    await again.setup()
    assert again.subnet == network.subnet


async def test_a_foreign_bridge_with_the_same_name_is_left_alone(tmp_path: Path) -> None:
    if (reason := network_tools_missing()) is not None:
        pytest.skip(reason)
    network = NodeNetwork(tmp_path / "network")
    ip("link", "add", network.names.bridge, "type", "bridge")
    try:
        with pytest.raises(RuntimeUnavailable, match="belongs to something else"):
            await network.setup()
        await network.teardown()
        assert Path(f"/sys/class/net/{network.names.bridge}").exists()
    finally:
        ip("link", "del", network.names.bridge)


async def test_teardown_leaves_nothing_behind(networks: Networks) -> None:
    network = await networks.make()
    names = network.names
    for iid in ("a", "b", "c"):
        await network.attach(iid)
    await network.detach("b")
    await network.teardown()
    assert not Path(f"/sys/class/net/{names.bridge}").exists()
    assert [n for n in os.listdir("/run/netns") if n.startswith(names.netns_prefix)] == []
    assert [n for n in os.listdir("/sys/class/net") if n.startswith(f"swgv{names.tag}")] == []
    listed = subprocess.run(["nft", "list", "tables"], capture_output=True, text=True, check=True)
    assert names.table not in listed.stdout
    assert sorted(os.listdir(network.state_dir)) == []


def _left(names: NetNames) -> list[str]:
    """What of a node network is on the host: its bridge, namespaces and nft table."""
    found = [names.bridge] if Path(f"/sys/class/net/{names.bridge}").exists() else []
    found += [n for n in os.listdir("/run/netns") if n.startswith(names.netns_prefix)]
    listed = subprocess.run(["nft", "list", "tables"], capture_output=True, text=True, check=True)
    return found + ([names.table] if names.table in listed.stdout.split() else [])


async def test_an_ephemeral_network_exists_only_while_a_session_is_open(
    networks: Networks, tmp_path: Path
) -> None:
    network = NodeNetwork(tmp_path / "builds" / "network", ephemeral=True)
    networks.made.append(network)
    assert _left(network.names) == []
    async with network.session("build-1") as first:
        async with network.session("build-2") as second:
            assert first.address != second.address
            assert network.names.bridge in _left(network.names)
        assert network.names.bridge in _left(network.names)  # one session still open
    assert _left(network.names) == []
    async with network.session("build-3"):  # made again when needed
        assert network.names.bridge in _left(network.names)
    assert _left(network.names) == []


async def test_a_network_whose_state_directory_is_gone_is_removed_by_the_next_setup(
    networks: Networks, tmp_path: Path
) -> None:
    gone = await networks.make("deleted")
    await gone.attach("left-behind")
    names = gone.names
    assert _left(names)
    subprocess.run(["rm", "-rf", str(gone.state_dir.parent)], check=True)  # a data dir deleted
    await networks.make("next")
    assert _left(names) == []


# ---- DNS -------------------------------------------------------------------------------


async def lookup_inside(net: InstanceNet, name: str) -> str:
    """``getent ahostsv4 NAME`` in the instance's namespace, with the node's resolv.conf
    mounted the way the runtime mounts it."""
    script = net.mount_script() + 'exec getent ahostsv4 "$1"\n'
    proc = await asyncio.create_subprocess_exec(
        *net.enter_argv(), "unshare", "--mount", "--propagation", "private", "--",
        "/bin/sh", "-c", script, "sh", name,
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
    )  # fmt: skip
    out, _ = await asyncio.wait_for(proc.communicate(), 60)
    return out.decode()


def query_inside(net: InstanceNet, name: str, *, tcp: bool) -> dns.message.Message:
    query = dns.message.make_query(name, "A")
    kind = socket.SOCK_STREAM if tcp else socket.SOCK_DGRAM
    sock = netns_socket(net.netns_path, kind)
    try:
        if tcp:
            sock.settimeout(5)
            sock.connect((str(net.gateway), 53))
        sock.setblocking(False)  # dnspython wants that of a socket it is given
        if tcp:
            return dns.query.tcp(query, str(net.gateway), timeout=5, sock=sock)
        return dns.query.udp(query, str(net.gateway), timeout=5, sock=sock)
    finally:
        sock.close()


def query_from(netns: Path, server: str) -> dns.message.Message:
    sock = netns_socket(netns, socket.SOCK_DGRAM)
    sock.setblocking(False)  # dnspython wants that of a socket it is given
    try:
        return dns.query.udp(dns.message.make_query("db.swg-test.example", "A"), server,
                             timeout=1, sock=sock)  # fmt: skip
    finally:
        sock.close()


async def test_instances_resolve_through_the_configured_dns_server(networks: Networks) -> None:
    outside = networks.outside()
    udp = netns_socket(outside.path, socket.SOCK_DGRAM)
    udp.bind((outside.address, 53))
    server = DnsServer(udp)
    networks.cleanups.append(server.close)
    server.publish("A", "api.swg-test.example", "203.0.113.7")
    settings = NetworkSettings(dns_servers=(IPv4Address(outside.address),))
    network = await networks.make(settings=settings)
    assert network.forwarder() is None
    assert f"nameserver {outside.address}\n" in network.resolv_conf.read_text()
    net = await network.attach("web-1")
    assert "203.0.113.7" in await lookup_inside(net, "api.swg-test.example")
    assert ("A", "api.swg-test.example") in server.questions


async def test_the_forwarder_answers_instances_from_a_loopback_resolver(
    networks: Networks,
) -> None:
    for _ in range(20):  # a UDP and a TCP socket on one loopback port
        udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        udp.bind(("127.0.0.1", 0))
        tcp = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            tcp.bind(("127.0.0.1", udp.getsockname()[1]))
            break
        except OSError:
            udp.close()
            tcp.close()
    server = DnsServer(udp, tcp)
    networks.cleanups.append(server.close)
    server.publish("A", "db.swg-test.example", "203.0.113.9")
    settings = NetworkSettings(dns_forwarder=True, dns_upstreams=(server.address,), dns_timeout=1.0)
    network = await networks.make(settings=settings)
    assert f"nameserver {network.gateway}\n" in network.resolv_conf.read_text()
    net = await network.attach("web-1")
    forwarder = network.forwarder()
    assert forwarder is not None
    await forwarder.start()
    try:
        assert "203.0.113.9" in await lookup_inside(net, "db.swg-test.example")
        for tcp_query in (False, True):
            answer = await asyncio.to_thread(
                query_inside, net, "db.swg-test.example", tcp=tcp_query
            )
            assert [rr.to_text() for rr in answer.answer[0]] == ["203.0.113.9"]
        missing = await asyncio.to_thread(query_inside, net, "nope.swg-test.example", tcp=False)
        assert missing.rcode() == dns.rcode.NXDOMAIN
        # port 53 is all an instance reaches on the gateway
        host_service = networks.server(None, "0.0.0.0")
        blocked = await asyncio.to_thread(
            attempt, net.netns_path, str(net.gateway), host_service.port
        )
        assert blocked == "ConnectionRefusedError"
        # nobody else gets an open resolver: not even a LAN that routes the subnet here
        outside = networks.outside()
        ip("-n", outside.netns, "route", "add", str(network.subnet), "via", outside.host_address)
        with pytest.raises(dns.exception.Timeout):
            await asyncio.to_thread(query_from, outside.path, str(net.gateway))
        assert len(server.questions) == 4
        server.silent = True  # the upstream stops answering: SERVFAIL, not silence
        failed = await asyncio.to_thread(query_inside, net, "db.swg-test.example", tcp=False)
        assert failed.rcode() == dns.rcode.SERVFAIL
    finally:
        await forwarder.close()
