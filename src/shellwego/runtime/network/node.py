"""A node network and the instance networks attached to it (see the package docstring)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import shlex
from collections.abc import AsyncIterator
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv4Interface, IPv4Network
from pathlib import Path

from shellwego.errors import RuntimeFailure, RuntimeUnavailable

from . import firewall
from .config import NetworkSettings
from .dns import DnsForwarder, DnsPlan, ResolvConf, ipv4_addresses, plan_dns
from .leases import NetState, StateFile
from .names import NETNS_DIR, NetNames, check_instance_id
from .subnet import choose_subnet, host_addresses, host_lock, host_networks, uplink_mtu
from .tools import binary, ip_batch, missing_tools, run_ip

log = logging.getLogger(__name__)

RESOLV_CONF = "resolv.conf"
INSTANCE_IFNAME = "eth0"
SYS_NET = Path("/sys/class/net")
IP_FORWARD = Path("/proc/sys/net/ipv4/ip_forward")


def network_unavailable() -> str | None:
    """Why instance networks cannot be made here (None: they can)."""
    if os.geteuid() != 0:
        return "instance networks need root: instances share the host's network"
    missing = missing_tools()
    if missing:
        return (
            f"instance networks need {', '.join(missing)} (Debian packages iproute2, nftables, "
            f"util-linux): instances share the host's network"
        )
    if not IP_FORWARD.exists():
        return "this kernel has no IPv4 forwarding: instances share the host's network"
    return None


@dataclass(frozen=True, slots=True)
class InstanceNet:
    """An instance's network: what the runtime needs to run it there, and what the caller
    keeps in the instance's state (:meth:`to_json`)."""

    instance_id: str
    netns: str  # its name under /run/netns
    address: IPv4Address
    gateway: IPv4Address
    prefix: int
    host_veth: str
    resolv_conf: Path

    @property
    def netns_path(self) -> Path:
        return NETNS_DIR / self.netns

    @property
    def interface(self) -> IPv4Interface:
        return IPv4Interface(f"{self.address}/{self.prefix}")

    def enter_argv(self) -> list[str]:
        """The argv prefix that runs a command in this network namespace (nothing else of
        the caller changes: mounts, user, cgroups stay as they are)."""
        return [binary("nsenter"), f"--net={self.netns_path}", "--"]

    def mount_script(self) -> str:
        """Shell lines to run as root in the instance's own (private) mount namespace:
        the node's resolv.conf over /etc/resolv.conf, and the other namespaces' handles
        under /run/netns let go of (they would otherwise stay alive as long as this
        instance runs)."""
        mount = shlex.quote(binary("mount"))
        umount = shlex.quote(binary("umount"))
        source = shlex.quote(str(self.resolv_conf))
        return (
            f"{mount} --bind -- {source} /etc/resolv.conf || exit 125\n"
            f"{umount} --recursive --lazy {NETNS_DIR} 2>/dev/null || :\n"
        )

    def to_json(self) -> dict[str, str | int]:
        return {
            "instance_id": self.instance_id,
            "netns": self.netns,
            "address": str(self.address),
            "gateway": str(self.gateway),
            "prefix": self.prefix,
            "host_veth": self.host_veth,
            "resolv_conf": str(self.resolv_conf),
        }

    @classmethod
    def from_json(cls, data: dict[str, str | int]) -> InstanceNet:
        return cls(
            instance_id=str(data["instance_id"]),
            netns=str(data["netns"]),
            address=IPv4Address(str(data["address"])),
            gateway=IPv4Address(str(data["gateway"])),
            prefix=int(data["prefix"]),
            host_veth=str(data["host_veth"]),
            resolv_conf=Path(str(data["resolv_conf"])),
        )


class NodeNetwork:
    """The node network kept in ``state_dir``: a bridge, a subnet, an nftables table and a
    resolv.conf; instances attach to it one network namespace each.

    Call :meth:`setup` first (it also adopts what an earlier agent made). Every method is
    safe to call again: ``attach`` of an attached instance returns its network as it is
    (or repairs it, same address), ``detach`` of a detached one does nothing.
    """

    def __init__(
        self, state_dir: Path, settings: NetworkSettings | None = None, *, ephemeral: bool = False
    ) -> None:
        """``ephemeral``: the network exists only while a :meth:`session` is open (set up
        by the first, removed after the last): for short-lived commands (builds, one-off
        runs), so nothing of it is left on the host between them."""
        self.state_dir = Path(state_dir).resolve()
        self.settings = settings or NetworkSettings()
        self.ephemeral = ephemeral
        self._sessions = 0
        self._sessions_lock = asyncio.Lock()
        self.names = NetNames.for_state_dir(self.state_dir)
        self._file = StateFile(self.state_dir)
        self._subnet: IPv4Network | None = None
        self._mtu = 1500
        self._dns: DnsPlan | None = None
        self._lock = asyncio.Lock()
        self._ready = False
        self._ready_lock = asyncio.Lock()
        self._forwarder: DnsForwarder | None = None

    # ---- the node network ----------------------------------------------------------------

    @property
    def subnet(self) -> IPv4Network:
        if self._subnet is None:
            raise RuntimeFailure("the node network is not set up (call setup() first)")
        return self._subnet

    @property
    def gateway(self) -> IPv4Address:
        return self.subnet.network_address + 1

    @property
    def dns(self) -> DnsPlan:
        if self._dns is None:
            raise RuntimeFailure("the node network is not set up (call setup() first)")
        return self._dns

    @property
    def resolv_conf(self) -> Path:
        return self.state_dir / RESOLV_CONF

    def forwarder(self) -> DnsForwarder | None:
        """The DNS forwarder the agent must run on the gateway (``await f.start()``), or
        None when instances use other nameservers."""
        if not self.dns.forwarder:
            return None
        return DnsForwarder(self.gateway, self.dns.upstreams, timeout=self.settings.dns_timeout)

    async def setup(self) -> None:
        """Make (or adopt) the bridge, subnet, rules and resolv.conf; raises
        RuntimeUnavailable when this host cannot have instance networks."""
        async with self._lock:
            await asyncio.to_thread(self._setup)

    async def teardown(self) -> None:
        """Remove every instance network, the bridge, the rules and the state files."""
        await self.close()
        async with self._lock:
            await asyncio.to_thread(self._teardown)

    async def ready(self) -> None:
        """Set up once for this object (what its users call before each use), with the DNS
        forwarder running when instances need it; raises like :meth:`setup`."""
        if self._ready:
            return
        async with self._ready_lock:
            if self._ready:
                return
            await self.setup()
            forwarder = self.forwarder()
            if forwarder is not None:
                await forwarder.start()
                self._forwarder = forwarder
            self._ready = True

    async def close(self) -> None:
        """Stop the DNS forwarder this object runs, if any (the network stays)."""
        forwarder, self._forwarder = self._forwarder, None
        self._ready = False
        if forwarder is not None:
            await forwarder.close()

    # ---- instances -----------------------------------------------------------------------

    async def attach(self, instance_id: str) -> InstanceNet:
        """The instance's network namespace, on the bridge, with its address."""
        check_instance_id(instance_id)
        async with self._lock:
            return await asyncio.to_thread(self._attach, instance_id)

    async def detach(self, instance_id: str) -> None:
        """Remove the instance's namespace and veth and release its address."""
        check_instance_id(instance_id)
        async with self._lock:
            await asyncio.to_thread(self._detach, instance_id)

    async def adopt(self, instance_id: str) -> InstanceNet | None:
        """The instance's network if it is in place (after an agent restart), else None."""
        check_instance_id(instance_id)
        state = await asyncio.to_thread(self._file.read)
        index = state.leases.get(instance_id)
        if index is None or state.subnet != self.subnet:
            return None
        net = self._net(instance_id, index)
        return net if self._complete(net) else None

    def exists(self, instance_id: str) -> bool:
        """Whether the instance's namespace and its veth on the bridge are in place."""
        index = self._file.read().leases.get(check_instance_id(instance_id))
        if index is None or self._subnet is None:
            return False
        return self._complete(self._net(instance_id, index))

    async def instances(self) -> list[InstanceNet]:
        """Every instance holding an address (attached, or left by a crash)."""
        state = await asyncio.to_thread(self._file.read)
        if state.subnet != self._subnet:
            return []
        return [self._net(iid, index) for iid, index in sorted(state.leases.items())]

    @contextlib.asynccontextmanager
    async def session(self, name: str) -> AsyncIterator[InstanceNet]:
        """A network for a short-lived command (a build step, a one-off run), detached
        when the block ends, whatever happens in it. An ephemeral node network is set up
        for the first session open and removed when the last one ends."""
        await self._opened()
        try:
            net = await self.attach(name)
            try:
                yield net
            finally:
                await asyncio.shield(self.detach(name))
        finally:
            await asyncio.shield(self._closed())

    async def _opened(self) -> None:
        async with self._sessions_lock:
            await self.ready()
            self._sessions += 1

    async def _closed(self) -> None:
        async with self._sessions_lock:
            self._sessions -= 1
            if self.ephemeral and self._sessions == 0:
                await self.teardown()

    # ---- the work, in a thread -----------------------------------------------------------

    def _setup(self) -> None:
        reason = network_unavailable()
        if reason is not None:
            raise RuntimeUnavailable(reason)
        self.state_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        try:
            host_conf = ResolvConf.parse(self.settings.host_resolv_conf.read_text())
        except OSError:
            host_conf = ResolvConf()
        with host_lock(self.settings.host_lock), self._file.change() as state:
            self._register()
            subnet = self._bridge_subnet()
            if subnet is None:
                subnet = self._pick_subnet(state, host_conf)
                self._make_bridge(subnet)
            else:
                run_ip(["link", "set", self.names.bridge, "up"])
            if state.subnet not in (None, subnet) and state.leases:
                log.warning(
                    "node network %s moved from %s to %s: its %d leases are void",
                    self.names.bridge, state.subnet, subnet, len(state.leases),
                )  # fmt: skip
                state.leases.clear()
            state.subnet = subnet
            self._enable_forwarding(state)
        _write_sysctl(f"/proc/sys/net/ipv6/conf/{self.names.bridge}/disable_ipv6", "1")
        self._subnet = subnet
        self._mtu = uplink_mtu()
        self._dns = plan_dns(self.settings, self.gateway, host_conf, host_addresses())
        script = firewall.ruleset(
            self.names,
            subnet,
            self.gateway,
            self.settings.pool,
            dns_on_gateway=self._dns.forwarder,
        )
        firewall.install(self.names, script)
        tmp = self.resolv_conf.with_name(f".{RESOLV_CONF}.tmp")
        tmp.write_text(self._dns.resolv_conf())
        tmp.chmod(0o644)
        os.replace(tmp, self.resolv_conf)

    def _bridge_subnet(self) -> IPv4Network | None:
        """The subnet of this network's bridge when it exists already (an earlier agent's)."""
        bridge = SYS_NET / self.names.bridge
        if not bridge.exists():
            return None
        alias = _read(bridge / "ifalias")
        if alias != self.names.alias:
            raise RuntimeUnavailable(
                f"a bridge named {self.names.bridge} exists but belongs to something else "
                f"(alias {alias!r}); remove it or use another state directory"
            )
        shown = json.loads(run_ip(["-j", "-4", "addr", "show", "dev", self.names.bridge]) or "[]")
        for link in shown:
            for info in link.get("addr_info", []):
                return IPv4Interface(f"{info['local']}/{info['prefixlen']}").network
        run_ip(["link", "del", self.names.bridge])  # ours, half made
        return None

    def _pick_subnet(self, state: NetState, host_conf: ResolvConf) -> IPv4Network:
        taken = host_networks()
        for server in (*self.settings.dns_servers, *ipv4_addresses(host_conf.nameservers)):
            taken.append(IPv4Network(f"{server}/32"))
        pool, prefix = self.settings.pool, self.settings.prefix
        kept = state.subnet
        if (
            kept is not None
            and kept.subnet_of(pool)
            and kept.prefixlen == prefix
            and not any(kept.overlaps(net) for net in taken)
        ):
            return kept
        subnet = choose_subnet(pool, prefix, taken)
        if subnet is None:
            raise RuntimeUnavailable(
                f"no /{prefix} of the network pool {pool} is free on this host: every one "
                f"overlaps a route or address; configure another pool"
            )
        return subnet

    def _make_bridge(self, subnet: IPv4Network) -> None:
        bridge = self.names.bridge
        ip_batch(
            [
                f"link add {bridge} type bridge",
                f"link set {bridge} alias {self.names.alias}",
                f"link set {bridge} addrgenmode none",
                f"addr add {subnet.network_address + 1}/{subnet.prefixlen} dev {bridge}",
                f"link set {bridge} up",
            ],
            what=f"creating the bridge {bridge}",
        )

    def _enable_forwarding(self, state: NetState) -> None:
        before = _read(IP_FORWARD)
        if before != "1":
            _write_sysctl(str(IP_FORWARD), "1")
            if state.ip_forward_was is None:
                state.ip_forward_was = before
            log.info("enabled IPv4 forwarding (net.ipv4.ip_forward was %s)", before)

    def _net(self, instance_id: str, index: int) -> InstanceNet:
        subnet = self.subnet
        return InstanceNet(
            instance_id=instance_id,
            netns=self.names.netns(instance_id),
            address=subnet.network_address + index,
            gateway=self.gateway,
            prefix=subnet.prefixlen,
            host_veth=self.names.veth(index),
            resolv_conf=self.resolv_conf,
        )

    def _complete(self, net: InstanceNet) -> bool:
        master = SYS_NET / net.host_veth / "master"
        return (
            net.netns_path.exists()
            and master.exists()
            and os.path.basename(os.readlink(master)) == self.names.bridge
        )

    def _veth_lingers(self, index: int) -> bool:
        return (SYS_NET / self.names.veth(index)).exists()

    def _attach(self, instance_id: str) -> InstanceNet:
        with self._file.change() as state:
            if state.subnet != self.subnet:
                raise RuntimeFailure("the node network changed under this agent; set it up again")
            fresh = instance_id not in state.leases
            index = state.allocate(instance_id, self._veth_lingers)
        net = self._net(instance_id, index)
        if not fresh and self._complete(net):
            return net
        try:
            self._unplumb(net)
            self._plumb(net)
        except RuntimeFailure:
            with contextlib.suppress(RuntimeFailure):
                self._unplumb(net)
            if fresh:
                with self._file.change() as state:
                    state.leases.pop(instance_id, None)
            raise
        return net

    def _plumb(self, net: InstanceNet) -> None:
        veth, mtu = net.host_veth, self._mtu
        ip_batch(
            [
                f"netns add {net.netns}",
                f"link add {veth} mtu {mtu} type veth peer name {INSTANCE_IFNAME} mtu {mtu} "
                f"netns {net.netns}",
                f"link set {veth} master {self.names.bridge} addrgenmode none up",
                f"link set dev {veth} type bridge_slave isolated on",
            ],
            what=f"making the network of {net.instance_id}",
        )
        ip_batch(
            [
                "link set lo up",
                f"link set {INSTANCE_IFNAME} addrgenmode none up",
                f"addr add {net.interface} dev {INSTANCE_IFNAME}",
                f"route add default via {net.gateway}",
            ],
            netns=net.netns,
            what=f"configuring the network of {net.instance_id}",
        )

    def _unplumb(self, net: InstanceNet) -> None:
        self._remove(links=[net.host_veth], namespaces=[net.netns])

    @staticmethod
    def _remove(links: list[str], namespaces: list[str]) -> None:
        links = [name for name in links if (SYS_NET / name).exists()]
        namespaces = [name for name in namespaces if (NETNS_DIR / name).exists()]
        if not links and not namespaces:
            return
        commands = [f"link del {name}" for name in links]
        commands += [f"netns del {name}" for name in namespaces]
        ip_batch(commands, force=True)
        left = [name for name in links if (SYS_NET / name).exists()]
        left += [name for name in namespaces if (NETNS_DIR / name).exists()]
        if left:
            raise RuntimeFailure(f"cannot remove {', '.join(left)}")

    def _detach(self, instance_id: str) -> None:
        """Delete the namespace only: the kernel then destroys the veth pair with it, in
        the background. Deleting the veth itself would wait for an RCU grace period
        (25-35 ms here); its address is not handed out again while it lingers."""
        index = self._file.read().leases.get(instance_id)
        netns = self.names.netns(instance_id)
        links = []
        if index is not None and not (NETNS_DIR / netns).exists():
            links.append(self.names.veth(index))  # a veth without its namespace: stray
        self._remove(links, [netns])
        if index is not None:
            with self._file.change() as state:
                state.leases.pop(instance_id, None)

    @property
    def _registry(self) -> Path:
        """Where every node network of the host records its state directory (by owner), so
        that one whose state directory is gone can be found and removed."""
        return self.settings.host_lock.with_name("shellwego-networks")

    def _register(self) -> None:
        """Record this network's state directory; remove the networks of state directories
        that no longer exist (a platform whose data directory was deleted without its
        networks being torn down leaves nothing behind for long). Under the host lock."""
        self._registry.mkdir(mode=0o700, exist_ok=True)
        for entry in _listdir(self._registry):
            path = self._registry / entry
            try:
                owner_dir = Path(path.read_text())
            except OSError:
                continue
            if entry != self.names.owner and not owner_dir.exists():
                log.info("removing the node network of %s (its directory is gone)", owner_dir)
                with contextlib.suppress(RuntimeFailure, OSError):
                    NodeNetwork(owner_dir, self.settings)._teardown()
        (self._registry / self.names.owner).write_text(str(self.state_dir))

    def _teardown(self) -> None:
        namespaces = [
            name for name in _listdir(NETNS_DIR) if name.startswith(self.names.netns_prefix)
        ]
        veth_prefix = self.names.veth(0)[:-1]
        links = [name for name in _listdir(SYS_NET) if name.startswith(veth_prefix)]
        bridge = SYS_NET / self.names.bridge
        if bridge.exists() and _read(bridge / "ifalias") == self.names.alias:
            links.append(self.names.bridge)
        self._remove(links, namespaces)
        if missing_tools() == []:
            firewall.remove(self.names)
        self._file.remove()
        with contextlib.suppress(FileNotFoundError):
            self.resolv_conf.unlink()
        with contextlib.suppress(FileNotFoundError):
            (self._registry / self.names.owner).unlink()
        self._subnet = None
        self._dns = None


def _read(path: Path) -> str | None:
    try:
        return path.read_text().strip()
    except OSError:
        return None


def _write_sysctl(path: str, value: str) -> None:
    with contextlib.suppress(FileNotFoundError):
        Path(path).write_text(value)


def _listdir(path: Path) -> list[str]:
    try:
        return sorted(os.listdir(path))
    except OSError:
        return []
