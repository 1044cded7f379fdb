"""DNS lookups for domain verification, with dnspython (no external tool needed).

The resolver is the system's (``/etc/resolv.conf``) unless ``SHELLWEGO_DNS_RESOLVER``
names one (``host`` or ``host:port``). A lookup returns the published records, an empty
list when the name exists without records of that type; it raises
:class:`DnsNameNotFound` when the name does not exist (NXDOMAIN) and
:class:`DnsLookupFailed` when no resolver answers in time.
"""

from __future__ import annotations

import dns.exception
import dns.inet
import dns.resolver

from shellwego.errors import ConfigError, DnsLookupFailed, DnsNameNotFound

DEFAULT_TIMEOUT = 3.0


def parse_nameserver(text: str) -> tuple[str, int]:
    """``"10.0.0.2"`` → ("10.0.0.2", 53); ``"127.0.0.1:5353"`` and ``"[::1]:5353"`` too."""
    host, port = text.strip(), "53"
    if host.startswith("["):
        host, _, rest = host[1:].partition("]")
        port = rest.removeprefix(":") or "53"
    elif host.count(":") == 1:
        host, port = host.split(":")
    try:
        number = int(port)
        dns.inet.af_for_address(host)
    except ValueError:
        number = 0
    if not host or not 0 < number < 65536:
        raise ConfigError(
            f"SHELLWEGO_DNS_RESOLVER must be an IP address with an optional port "
            f"(like 127.0.0.1:5353), got {text!r}"
        )
    return host, number


class DnsResolver:
    """``resolver(kind, name)`` → the TXT strings or CNAME targets published for ``name``."""

    def __init__(self, nameserver: str | None = None, timeout: float = DEFAULT_TIMEOUT) -> None:
        self.nameserver = parse_nameserver(nameserver) if nameserver else None
        self.timeout = timeout

    @property
    def where(self) -> str:
        if self.nameserver is None:
            return "the system's DNS resolver"
        host, port = self.nameserver
        return f"the DNS resolver {host}:{port}"

    def _resolver(self) -> dns.resolver.Resolver:
        if self.nameserver is None:
            try:
                resolver = dns.resolver.Resolver(configure=True)
            except dns.resolver.NoResolverConfiguration as exc:
                raise DnsLookupFailed(
                    "this machine has no DNS resolver configured (/etc/resolv.conf); "
                    "set SHELLWEGO_DNS_RESOLVER"
                ) from exc
        else:
            resolver = dns.resolver.Resolver(configure=False)
            resolver.nameservers = [self.nameserver[0]]
            resolver.port = self.nameserver[1]
        resolver.lifetime = self.timeout
        resolver.timeout = self.timeout
        return resolver

    def __call__(self, kind: str, name: str) -> list[str]:
        if kind not in ("TXT", "CNAME"):
            raise ValueError(f"unsupported record type {kind}")
        try:
            answer = self._resolver().resolve(name, kind, search=False)
        except dns.resolver.NXDOMAIN as exc:
            raise DnsNameNotFound(f"{name} does not exist (NXDOMAIN)") from exc
        except dns.resolver.NoAnswer:
            return []
        except dns.resolver.LifetimeTimeout as exc:
            raise DnsLookupFailed(
                f"{self.where} did not answer within {self.timeout:g} s"
            ) from exc
        except dns.resolver.NoNameservers as exc:
            raise DnsLookupFailed(f"{self.where} could not look up {name} (SERVFAIL)") from exc
        except dns.exception.DNSException as exc:
            raise DnsLookupFailed(f"looking up {kind} {name} failed: {exc}") from exc
        if kind == "TXT":
            return [b"".join(r.strings).decode(errors="replace") for r in answer]
        return [r.target.to_text(omit_final_dot=True) for r in answer]
