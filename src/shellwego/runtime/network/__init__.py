"""Instance networks: each instance, one-off command and build step in a network
namespace of its own, on a per-node bridge, reachable only from the host.

Topology (root only; :func:`network_unavailable` says why not, and the runtime then keeps
host networking)::

    host ── swgbr<tag>: bridge, gateway 10.213.N.1/24 ─┬─ swgv<tag>i2 ═ eth0 10.213.N.2
            nft table inet shellwego_<tag>             │    [netns swg-<tag>-<instance id>]
            egress: forward + masquerade               └─ swgv<tag>i3 ═ eth0 10.213.N.3 ...

* **Node network** (:class:`NodeNetwork`, one per state directory): a Linux bridge with
  the gateway address ``.1`` of a subnet taken from ``NetworkSettings.pool`` (default
  ``10.213.0.0/16``, one ``/24`` per node network): the first block no route or address
  of the host overlaps, chosen under a host-wide lock so that several platforms sharing a
  host never pick the same one, and kept in ``<state_dir>/network.json`` so restarts keep
  it. Names carry ``<tag>``, a short hash of the state directory. ``setup()`` turns IPv4
  forwarding on (``net.ipv4.ip_forward=1``, left on by ``teardown()``: other networks of
  the host may rely on it by then) and loads the firewall table.
* **Instance network** (:class:`InstanceNet`, from ``attach(instance_id)``): a network
  namespace ``/run/netns/swg-<tag>-<instance id>``, a veth pair (host end on the bridge,
  bridge port ``isolated on``; ``eth0`` inside), an address leased from the subnet
  (persisted: a new :class:`NodeNetwork` over the same state directory finds it again),
  ``lo`` up, the default route via the gateway, no IPv6. Instances listen on their own
  address (``0.0.0.0:$PORT`` inside); the edge and health checks on the host reach
  ``address:PORT``.
* **Firewall** (:mod:`.firewall`, nftables table ``inet shellwego_<tag>``, touching nothing
  else): instances accept connections only from the host; they reach neither each other
  (nor instances of other ShellWeGo bridges or of the pool) nor any service of the host
  (but the DNS forwarder, when there is one), and reach the outside through NAT.
* **DNS** (:mod:`.dns`): ``<state_dir>/resolv.conf`` for instances: ``dns_servers`` when
  configured, else the host's nameservers when a namespace can reach them, else the
  :class:`DnsForwarder` the agent runs on the gateway (:meth:`NodeNetwork.forwarder`).

Use::

    network = NodeNetwork(data_dir / "network", NetworkSettings())
    await network.setup()                     # at agent start: makes or adopts
    forwarder = network.forwarder()           # None unless instances need it
    if forwarder: await forwarder.start()
    net = await network.adopt(iid) or await network.attach(iid)   # keep net.to_json()
    argv = [*net.enter_argv(), *launcher]     # nsenter --net=/run/netns/... --
    script = net.mount_script()               # in the instance's private mount namespace
    ... instance reachable at net.address:PORT ...
    await network.detach(iid)                 # when the instance is removed
    async with network.session(f"build-{id}") as net: ...   # builds, one-off commands
    await network.teardown()                  # when the node leaves: removes everything

Errors: :class:`~shellwego.errors.RuntimeUnavailable` when the host cannot have instance
networks (not root, tools missing, no free subnet, a foreign bridge with our name),
:class:`~shellwego.errors.RuntimeFailure` when a step fails.
"""

from .config import DEFAULT_POOL, DEFAULT_PREFIX, NetworkSettings
from .dns import DnsForwarder, DnsPlan
from .names import NetNames
from .node import InstanceNet, NodeNetwork, network_unavailable

__all__ = [
    "DEFAULT_POOL",
    "DEFAULT_PREFIX",
    "DnsForwarder",
    "DnsPlan",
    "InstanceNet",
    "NetNames",
    "NetworkSettings",
    "NodeNetwork",
    "network_unavailable",
]
