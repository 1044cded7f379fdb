"""DNS for instances: the resolv.conf they see, and the forwarder on the gateway.

Instances cannot reach the host's loopback or its own addresses, so they use:

1. the ``dns_servers`` setting, when given;
2. otherwise the host's nameservers, when they are IPv4 addresses reachable from a
   namespace (not loopback, not one of the host's own addresses);
3. otherwise (or when ``dns_forwarder`` is set) :class:`DnsForwarder`, which the agent
   runs on the gateway address (port 53, UDP and TCP) and which passes each query on to
   the host's resolvers (``dns_upstreams``, default the host's nameservers, loopback
   ones included: the forwarder runs on the host).

The forwarder copies messages, parses nothing but the header it needs, checks that an
answer carries the query's id, and logs no query.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import struct
from collections.abc import Coroutine, Sequence
from dataclasses import dataclass
from ipaddress import IPv4Address, ip_address
from typing import Any, cast

from shellwego.errors import RuntimeFailure

from .config import DNS_PORT, NetworkSettings, parse_endpoint

log = logging.getLogger(__name__)

MAX_NAMESERVERS = 3  # glibc reads no more
HEADER = 12
TCP_IDLE_SECONDS = 10.0


@dataclass(frozen=True, slots=True)
class ResolvConf:
    nameservers: tuple[str, ...] = ()
    search: tuple[str, ...] = ()
    options: tuple[str, ...] = ()

    @classmethod
    def parse(cls, text: str) -> ResolvConf:
        servers: list[str] = []
        search: list[str] = []
        options: list[str] = []
        for raw in text.splitlines():
            words = raw.split("#", 1)[0].split(";", 1)[0].split()
            if len(words) < 2:
                continue
            if words[0] == "nameserver":
                servers.append(words[1].split("%", 1)[0])
            elif words[0] in ("search", "domain"):
                search = words[1:]
            elif words[0] == "options":
                options += words[1:]
        return cls(tuple(servers), tuple(search), tuple(options))


@dataclass(frozen=True, slots=True)
class DnsPlan:
    """Which nameservers instances use and, when it is the forwarder, where it asks."""

    nameservers: tuple[IPv4Address, ...]
    forwarder: bool
    upstreams: tuple[tuple[str, int], ...] = ()
    search: tuple[str, ...] = ()
    options: tuple[str, ...] = ()
    source: str = ""

    def resolv_conf(self) -> str:
        lines = [f"# written by ShellWeGo: {self.source}"]
        lines += [f"nameserver {server}" for server in self.nameservers]
        if self.search:
            lines.append("search " + " ".join(self.search))
        if self.options:
            lines.append("options " + " ".join(self.options))
        return "\n".join(lines) + "\n"


def plan_dns(
    settings: NetworkSettings,
    gateway: IPv4Address,
    host: ResolvConf,
    host_addresses: set[IPv4Address],
) -> DnsPlan:
    """Decide what instances use for DNS (see the module docstring)."""
    if settings.dns_servers:
        return DnsPlan(
            settings.dns_servers[:MAX_NAMESERVERS],
            False,
            search=host.search,
            options=host.options,
            source="the configured DNS servers",
        )
    usable = [
        address
        for address in ipv4_addresses(host.nameservers)
        if not address.is_loopback and address not in host_addresses
    ]
    if usable and not settings.dns_forwarder:
        return DnsPlan(
            tuple(usable[:MAX_NAMESERVERS]),
            False,
            search=host.search,
            options=host.options,
            source="the host's nameservers",
        )
    upstreams = tuple(parse_endpoint(u) for u in settings.dns_upstreams) or tuple(
        (server, DNS_PORT) for server in host.nameservers if _is_ip(server)
    )
    return DnsPlan(
        (gateway,),
        True,
        upstreams=upstreams,
        search=host.search,
        options=host.options,
        source="the forwarder on the gateway",
    )


def _is_ip(text: str) -> bool:
    try:
        ip_address(text)
    except ValueError:
        return False
    return True


def ipv4_addresses(texts: Sequence[str]) -> list[IPv4Address]:
    found = []
    for text in texts:
        with contextlib.suppress(ValueError):
            found.append(IPv4Address(text))
    return found


def servfail(query: bytes) -> bytes | None:
    """A SERVFAIL answer to ``query`` (its id, opcode, RD and question), or None when the
    query is too broken to answer."""
    if len(query) < HEADER:
        return None
    qid, flags, qdcount = struct.unpack("!HHH", query[:6])
    if flags & 0x8000 or qdcount != 1:
        return None
    end = HEADER
    while end < len(query):
        length = query[end]
        if length == 0:
            break
        if length & 0xC0:
            return None
        end += 1 + length
    end += 1 + 4  # the root label, QTYPE, QCLASS
    if end > len(query):
        return None
    answer_flags = 0x8000 | (flags & 0x7900) | 0x0080 | 2  # QR, opcode+RD, RA, SERVFAIL
    return struct.pack("!HHHHHH", qid, answer_flags, 1, 0, 0, 0) + query[HEADER:end]


class _OneAnswer(asyncio.DatagramProtocol):
    def __init__(self, qid: bytes, future: asyncio.Future[bytes]) -> None:
        self.qid = qid
        self.future = future

    def datagram_received(self, data: bytes, addr: tuple[str | int, ...]) -> None:
        answer = len(data) >= HEADER and data[:2] == self.qid and data[2] & 0x80
        if answer and not self.future.done():
            self.future.set_result(data)

    def error_received(self, exc: Exception) -> None:
        if not self.future.done():
            self.future.set_exception(exc)


class _UdpFront(asyncio.DatagramProtocol):
    def __init__(self, forwarder: DnsForwarder) -> None:
        self.forwarder = forwarder
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: tuple[str | int, ...]) -> None:
        self.forwarder._spawn(self._answer(data, addr))

    async def _answer(self, query: bytes, addr: tuple[str | int, ...]) -> None:
        answer = await self.forwarder.resolve(query, tcp=False)
        if answer is not None and self.transport is not None:
            self.transport.sendto(answer, addr)


class DnsForwarder:
    """Answers DNS queries on ``listen``:``port`` (UDP and TCP) by asking ``upstreams``
    in turn, each within ``timeout`` seconds; SERVFAIL when none answers.

    At most ``max_pending`` queries are in flight; past that, UDP queries are dropped
    (the client retries) and TCP connections wait.
    """

    def __init__(
        self,
        listen: IPv4Address,
        upstreams: Sequence[tuple[str, int]],
        *,
        port: int = DNS_PORT,
        timeout: float = 3.0,
        max_pending: int = 256,
    ) -> None:
        self.listen = listen
        self.port = port
        self.upstreams = tuple(upstreams)
        self.timeout = timeout
        self.max_pending = max_pending
        self._slots = asyncio.Semaphore(max_pending)
        self._tasks: set[asyncio.Task[None]] = set()
        self._udp: asyncio.DatagramTransport | None = None
        self._tcp: asyncio.Server | None = None

    @property
    def address(self) -> str:
        return f"{self.listen}:{self.port}"

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        try:
            self._udp, _ = await loop.create_datagram_endpoint(
                lambda: _UdpFront(self), local_addr=(str(self.listen), self.port)
            )
            self._tcp = await asyncio.start_server(
                self._serve_tcp, str(self.listen), self.port, reuse_address=True
            )
        except OSError as exc:
            await self.close()
            raise RuntimeFailure(
                f"cannot run the DNS forwarder on {self.address}: {exc.strerror or exc}"
            ) from exc
        if not self.upstreams:
            log.warning("the DNS forwarder on %s has no upstream: SERVFAIL only", self.address)

    async def close(self) -> None:
        if self._udp is not None:
            self._udp.close()
            self._udp = None
        if self._tcp is not None:
            self._tcp.close()
            await self._tcp.wait_closed()
            self._tcp = None
        for task in list(self._tasks):
            task.cancel()
        for task in list(self._tasks):
            with contextlib.suppress(asyncio.CancelledError):
                await task

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        if len(self._tasks) >= self.max_pending:
            coro.close()
            return
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def resolve(self, query: bytes, *, tcp: bool) -> bytes | None:
        """The first upstream's answer to ``query``, a SERVFAIL, or None (not a query)."""
        if len(query) < HEADER or query[2] & 0x80:
            return None
        async with self._slots:
            for upstream in self.upstreams:
                try:
                    ask = self._ask_tcp if tcp else self._ask_udp
                    answer = await asyncio.wait_for(ask(upstream, query), self.timeout)
                except (OSError, TimeoutError, asyncio.IncompleteReadError):
                    continue
                if answer is not None:
                    return answer
        return servfail(query)

    async def _ask_udp(self, upstream: tuple[str, int], query: bytes) -> bytes | None:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[bytes] = loop.create_future()
        transport, _ = await loop.create_datagram_endpoint(
            lambda: _OneAnswer(query[:2], future), remote_addr=upstream
        )
        try:
            transport.sendto(query)
            return await future
        finally:
            transport.close()

    @staticmethod
    async def _ask_tcp(upstream: tuple[str, int], query: bytes) -> bytes | None:
        reader, writer = await asyncio.open_connection(*upstream)
        try:
            writer.write(struct.pack("!H", len(query)) + query)
            await writer.drain()
            (length,) = struct.unpack("!H", await reader.readexactly(2))
            answer = await reader.readexactly(length)
        finally:
            writer.close()
        return answer if answer[:2] == query[:2] else None

    async def _serve_tcp(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = await asyncio.wait_for(reader.readexactly(2), TCP_IDLE_SECONDS)
                (length,) = struct.unpack("!H", head)
                query = await asyncio.wait_for(reader.readexactly(length), TCP_IDLE_SECONDS)
                answer = await self.resolve(query, tcp=True)
                if answer is None:
                    break
                writer.write(struct.pack("!H", len(answer)) + answer)
                await writer.drain()
        except (OSError, TimeoutError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()
