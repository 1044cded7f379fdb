"""What an operator may set about instance networks: the address pool, DNS."""

from __future__ import annotations

from dataclasses import dataclass
from ipaddress import IPv4Address, IPv4Network, ip_address, ip_network
from pathlib import Path

from shellwego.errors import ConfigError

DEFAULT_POOL = IPv4Network("10.213.0.0/16")
DEFAULT_PREFIX = 24
HOST_LOCK = Path("/run/shellwego-network.lock")
DNS_PORT = 53


def parse_endpoint(text: str, default_port: int = DNS_PORT) -> tuple[str, int]:
    """``"1.2.3.4"``, ``"1.2.3.4:5353"``, ``"::1"`` or ``"[::1]:5353"`` → (address, port)."""
    text = text.strip()
    host, port = text, default_port
    if text.startswith("["):
        host, sep, rest = text[1:].partition("]")
        if not sep or (rest and not rest.startswith(":")):
            raise ConfigError(f"invalid DNS server {text!r}")
        port_text = rest[1:]
        port = int(port_text) if port_text.isdigit() else -1 if port_text else default_port
    elif text.count(":") == 1:
        host, _, port_text = text.partition(":")
        port = int(port_text) if port_text.isdigit() else -1
    try:
        ip_address(host)
    except ValueError:
        raise ConfigError(f"invalid DNS server {text!r}: not an IP address") from None
    if not 0 < port < 65536:
        raise ConfigError(f"invalid DNS server {text!r}: bad port")
    return host, port


@dataclass(frozen=True, slots=True)
class NetworkSettings:
    """Settings of the node networks made from one state directory.

    ``pool``: the range node networks take their subnet from, the first ``prefix``-sized
    block no route or address of the host overlaps. ``dns_servers``: the nameservers
    instances use (overrides everything else). Otherwise instances use the host's
    nameservers when those are reachable from a namespace (not loopback, not the host's
    own addresses), else the DNS forwarder on the gateway; ``dns_forwarder`` forces the
    forwarder. ``dns_upstreams`` (``"host[:port]"``): where the forwarder asks (default:
    the nameservers of ``host_resolv_conf``). ``host_lock``: the host-wide lock file under
    which every platform on the host picks its subnet.
    """

    pool: IPv4Network = DEFAULT_POOL
    prefix: int = DEFAULT_PREFIX
    dns_servers: tuple[IPv4Address, ...] = ()
    dns_forwarder: bool = False
    dns_upstreams: tuple[str, ...] = ()
    host_resolv_conf: Path = Path("/etc/resolv.conf")
    host_lock: Path = HOST_LOCK
    dns_timeout: float = 3.0

    def __post_init__(self) -> None:
        if not isinstance(self.pool, IPv4Network):
            raise ConfigError(f"the network pool must be an IPv4 network, not {self.pool!r}")
        if not 16 <= self.prefix <= 28:
            raise ConfigError(f"a node network's prefix must be /16 to /28, not /{self.prefix}")
        if self.prefix < self.pool.prefixlen:
            raise ConfigError(f"a /{self.prefix} does not fit in the pool {self.pool}")
        for upstream in self.dns_upstreams:
            parse_endpoint(upstream)

    @classmethod
    def parse(
        cls,
        *,
        pool: str | None = None,
        prefix: int | None = None,
        dns_servers: str | None = None,
        dns_forwarder: bool = False,
        dns_upstreams: str | None = None,
    ) -> NetworkSettings:
        """Settings from the strings an operator types (comma-separated lists)."""
        try:
            net = ip_network(pool, strict=True) if pool else DEFAULT_POOL
        except ValueError as exc:
            raise ConfigError(f"invalid network pool {pool!r}: {exc}") from None
        if not isinstance(net, IPv4Network):
            raise ConfigError(f"the network pool must be IPv4, not {pool!r}")
        servers: list[IPv4Address] = []
        for item in _items(dns_servers):
            try:
                servers.append(IPv4Address(item))
            except ValueError:
                raise ConfigError(f"invalid DNS server {item!r}: not an IPv4 address") from None
        return cls(
            pool=net,
            prefix=prefix if prefix is not None else DEFAULT_PREFIX,
            dns_servers=tuple(servers),
            dns_forwarder=dns_forwarder,
            dns_upstreams=tuple(_items(dns_upstreams)),
        )


def _items(text: str | None) -> list[str]:
    return [item.strip() for item in (text or "").split(",") if item.strip()]
