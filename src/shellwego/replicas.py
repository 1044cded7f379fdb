"""The control plane's replicas as agents and edge nodes see them: a list of base URLs,
one of them in use, and the switch to the next one after a failure.

Every replica serves the whole agent protocol from the shared database, so an agent or an
edge node may talk to any of them. A client uses :attr:`Replicas.current` until a request
to it fails (refused or cut connection, timeout, 5xx): :meth:`Replicas.failed` then moves
to the next URL at once, and requests still waiting on the failed replica (a blocking
query) are told through :meth:`Replicas.moved_from` so that they give up instead of
holding a dead connection.

Connections are made with a short connect timeout and TCP keepalive probes
(:func:`transport`): a replica whose host vanished is noticed within seconds even on a
connection that is idle while a blocking query waits. A blocking query also probes its
replica (``GET /health``) every PROBE_INTERVAL seconds when there is another to move to,
which catches a replica that froze or lost its database.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from collections.abc import Awaitable, Callable, Sequence
from typing import TypeVar
from urllib.parse import urlsplit

import httpx

from shellwego.errors import ConfigError, Unavailable

log = logging.getLogger(__name__)

ENV_VAR = "SHELLWEGO_SERVER_URLS"
CONNECT_TIMEOUT = 2.0  # a replica that does not accept within this is taken as down
REQUEST_TIMEOUT = 5.0  # a short request (heartbeat, ask, log batch) that takes longer failed
# while a blocking query waits on a replica, the replica is probed this often, and must
# answer the probe within PROBE_TIMEOUT: a frozen replica is left within 5 s
PROBE_INTERVAL = 3.0
PROBE_TIMEOUT = 2.0
# TCP keepalive on every connection: a silent peer is dropped after about
# KEEPALIVE_IDLE + KEEPALIVE_INTERVAL * KEEPALIVE_COUNT seconds of silence
KEEPALIVE_IDLE = 2
KEEPALIVE_INTERVAL = 1
KEEPALIVE_COUNT = 2

T = TypeVar("T")


def parse_urls(raw: str | Sequence[str]) -> tuple[str, ...]:
    """``"http://a:8000, http://b:8000/"`` (or a list of such strings) → the distinct base
    URLs in order, without trailing slashes. Raises :class:`ConfigError` when none is
    given or one is not an http(s) URL."""
    parts = [raw] if isinstance(raw, str) else list(raw)
    urls: list[str] = []
    for part in parts:
        for item in part.split(","):
            url = item.strip().rstrip("/")
            if not url:
                continue
            split = urlsplit(url)
            if split.scheme not in ("http", "https") or not split.netloc:
                raise ConfigError(
                    f"control plane URL {url[:200]!r} is not an http:// or https:// URL"
                )
            if url not in urls:
                urls.append(url)
    if not urls:
        raise ConfigError("no control plane URL given (--server URL[,URL…])")
    return tuple(urls)


def socket_options() -> list[tuple[int, int, int]]:
    options = [(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)]
    for name, value in (
        ("TCP_KEEPIDLE", KEEPALIVE_IDLE),
        ("TCP_KEEPINTVL", KEEPALIVE_INTERVAL),
        ("TCP_KEEPCNT", KEEPALIVE_COUNT),
    ):
        if hasattr(socket, name):  # Linux; other systems keep their defaults
            options.append((socket.IPPROTO_TCP, getattr(socket, name), value))
    return options


def transport() -> httpx.AsyncHTTPTransport:
    """A connection pool whose connections notice a vanished peer (TCP keepalive)."""
    return httpx.AsyncHTTPTransport(socket_options=socket_options())


def timeout(read: float = REQUEST_TIMEOUT) -> httpx.Timeout:
    return httpx.Timeout(read, connect=CONNECT_TIMEOUT)


class Replicas:
    """The URLs of the control plane's replicas and the one in use."""

    def __init__(self, urls: str | Sequence[str], *, who: str = "client") -> None:
        self.urls = parse_urls(urls)
        self.who = who
        self._at = 0
        self.switches = 0  # how many times a failure moved to another replica
        self._moved = asyncio.Event()  # set (and replaced) whenever the current URL changes
        self._left: set[str] = set()  # replicas left since they last answered (said once)

    @property
    def current(self) -> str:
        return self.urls[self._at]

    def failed(self, url: str, why: str = "") -> bool:
        """A request to ``url`` failed: when it is the replica in use and there is another,
        move to the next one (True). A failure reported for a replica already left (a
        second request that failed on it) moves nothing, so concurrent failures never
        skip a working replica."""
        if url != self.current or len(self.urls) == 1:
            return False
        self._at = (self._at + 1) % len(self.urls)
        self.switches += 1
        # said once per replica until it answers again: with every replica down, the
        # retries go round without a line each
        log.log(
            logging.DEBUG if url in self._left else logging.WARNING,
            "%s: control plane at %s failed%s; switching to %s",
            self.who,
            url,
            f" ({why})" if why else "",
            self.current,
        )
        self._left.add(url)
        moved, self._moved = self._moved, asyncio.Event()
        moved.set()
        return True

    def answered(self, url: str) -> None:
        """A request to ``url`` got an answer (any but a 5xx)."""
        if url in self._left:
            self._left.discard(url)
            log.info("%s: control plane at %s answers", self.who, url)

    async def moved_from(self, url: str) -> None:
        """Returns once ``url`` is no longer the replica in use (at once if it is not)."""
        while self.current == url:
            await self._moved.wait()

    async def unless_moved(
        self,
        url: str,
        work: Awaitable[T],
        what: str,
        *,
        probe: Callable[[], Awaitable[str | None]] | None = None,
        probe_interval: float = PROBE_INTERVAL,
    ) -> T:
        """Await ``work`` (a request to ``url``), or raise :class:`Unavailable` as soon as
        the client moved away from ``url`` (another request found it dead).

        ``probe`` (for a blocking query, which may wait long on a replica that froze or
        lost its database): called every ``probe_interval`` seconds while ``work`` waits,
        when there is another replica to move to; a reason it returns counts as a
        failure of ``url``."""
        task = asyncio.ensure_future(work)
        watchers = [asyncio.ensure_future(self.moved_from(url))]
        if probe is not None and len(self.urls) > 1:
            watchers.append(asyncio.ensure_future(self._probe(url, probe, probe_interval)))
        try:
            await asyncio.wait([task, watchers[0]], return_when=asyncio.FIRST_COMPLETED)
        except BaseException:
            task.cancel()
            raise
        finally:
            for watcher in watchers:
                watcher.cancel()
            for watcher in watchers:
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await watcher
        if not task.done():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
            raise Unavailable(f"{what}: control plane at {url} failed; now using {self.current}")
        return task.result()

    async def _probe(
        self, url: str, probe: Callable[[], Awaitable[str | None]], interval: float
    ) -> None:
        while True:
            await asyncio.sleep(interval)
            why = await probe()
            if why and self.failed(url, why):
                return


async def health(http: httpx.AsyncClient, base: str) -> str | None:
    """Why the replica at ``base`` cannot serve (``GET /health``, which reads the
    database), or None when it answers in time."""
    try:
        r = await http.get(f"{base}/health", timeout=timeout(PROBE_TIMEOUT))
    except httpx.HTTPError as exc:
        return f"health probe: {type(exc).__name__}"
    return f"health probe answered {r.status_code}" if r.status_code >= 500 else None
