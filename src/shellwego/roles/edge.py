"""`shellwego edge`: an edge node. A local Caddy serves every app's hostnames; the route
table comes from the control plane through a blocking query.

- ``GET /v1/agent/edge/routes?version=V&wait=30`` (join or node token) returns as soon as
  the control plane's table differs from version ``V``; the node loads it into Caddy
  through the admin API (no restart, no dropped connection).
- Caddy's on-demand TLS "ask" goes to an endpoint of this process on 127.0.0.1, which asks
  the control plane (``GET /v1/agent/edge/ask``).
- While the control plane is unreachable, Caddy keeps serving the last table (also across
  a restart of this process: the table is kept on disk), and the ask is answered from that
  table: a name it routes is a name the control plane allowed.
- With several replicas (``--server URL1,URL2``), a failed request moves to the next one
  at once. While a blocking query waits, the replica it waits on is probed (``GET
  /health``) every 3 s and its connections carry TCP keepalives: a replica that died,
  froze or vanished is left within 5 s, and the next one answers at once with its
  table (which differs from the one served when anything changed meanwhile), so stale
  routes go as soon as any replica is reachable.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Sequence
from dataclasses import replace
from typing import Any

import httpx

from shellwego import replicas
from shellwego.edge.ask import AskServer
from shellwego.edge.process import CaddyProcess
from shellwego.edge.routes import EdgeSettings, RouteTable
from shellwego.edge.tables import table_from_dict
from shellwego.errors import EdgeError, Unauthenticated, Unavailable
from shellwego.services.edges import table_version
from shellwego.settings import Settings

from .server import edge_settings

log = logging.getLogger(__name__)

WAIT_SECONDS = 30.0  # how long one blocking query may wait on the control plane
WAIT_MARGIN = 10.0
ASK_TIMEOUT = 5.0
RETRY_MIN, RETRY_MAX = 0.5, 5.0  # backoff while the control plane is unreachable


def edge_node_settings(settings: Settings) -> EdgeSettings:
    """Caddy's settings on an edge node: its own directory (``<data dir>/edge``), so an edge
    node and a control plane on one machine never share a Caddy. The ask URL is the local
    endpoint's, known once it listens."""
    data = settings.data_dir / "edge"
    base: EdgeSettings = edge_settings(settings)
    return replace(base, admin_socket=data / "admin.sock", data_dir=data, ask_url="")


class EdgeNode:
    """``server_url``: the control plane's URL, its replicas' URLs separated by commas, or
    a list of them."""

    def __init__(
        self,
        server_url: str | Sequence[str],
        token: str,
        settings: EdgeSettings,
        *,
        wait: float = WAIT_SECONDS,
        probe_interval: float = replicas.PROBE_INTERVAL,
    ) -> None:
        self.replicas = replicas.Replicas(server_url, who="edge")
        self.wait = wait
        self.probe_interval = probe_interval
        self.http = httpx.AsyncClient(
            headers={"Authorization": f"Bearer {token}", "User-Agent": "shellwego-edge"},
            timeout=replicas.timeout(),
            transport=replicas.transport(),
        )
        self.ask = AskServer(self.allowed)
        self.settings = settings
        self.caddy: CaddyProcess | None = None
        self.version = ""  # of the table Caddy serves
        self.synced = asyncio.Event()  # set once a table came from the control plane
        self._task: asyncio.Task[None] | None = None

    @property
    def server_url(self) -> str:
        """The replica in use."""
        return self.replicas.current

    async def start(self) -> None:
        """Serve the last table at once, then follow the control plane's."""
        await self.ask.start()
        self.caddy = CaddyProcess(replace(self.settings, ask_url=self.ask.url))
        await self.caddy.start()
        self.version = table_version(self.caddy.table)
        self._task = asyncio.create_task(self._follow(), name="edge-follow")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self.caddy is not None:
            await self.caddy.stop()
        await self.ask.stop()
        await self.http.aclose()

    @property
    def table(self) -> RouteTable:
        return self.caddy.table if self.caddy is not None else RouteTable()

    async def _fetch(self) -> tuple[str, RouteTable]:
        base = self.replicas.current
        request = self.http.get(
            f"{base}/v1/agent/edge/routes",
            params={"version": self.version, "wait": self.wait},
            timeout=replicas.timeout(self.wait + WAIT_MARGIN),
        )
        try:
            r = await self.replicas.unless_moved(
                base,
                request,
                "route table",
                probe=lambda: replicas.health(self.http, base),
                probe_interval=self.probe_interval,
            )
        except httpx.HTTPError as exc:
            self.replicas.failed(base, type(exc).__name__)
            raise Unavailable(f"cannot reach the control plane at {base}: {exc!r}") from exc
        if r.status_code >= 500:
            self.replicas.failed(base, f"HTTP {r.status_code}")
        else:
            self.replicas.answered(base)
        if r.status_code in (401, 403):
            raise Unauthenticated("the control plane refused this edge node's token")
        if r.status_code != 200:
            raise Unavailable(f"the control plane at {base} answered {r.status_code}")
        try:
            body: Any = r.json()
            return str(body["version"]), table_from_dict(body["table"])
        except (ValueError, KeyError, TypeError) as exc:
            raise Unavailable(f"the control plane sent a malformed route table: {exc!r}") from exc

    async def _follow(self) -> None:
        assert self.caddy is not None
        delay = RETRY_MIN
        while True:
            try:
                version, table = await self._fetch()
                if version != self.version:
                    await self.caddy.apply(table)
                    self.version = version
                    log.info(
                        "route table %s loaded from %s (%d apps)",
                        version[:12],
                        self.replicas.current,
                        len(table.routes),
                    )
                self.synced.set()
                delay = RETRY_MIN
                continue
            except Unauthenticated as exc:
                log.error("%s; still serving the last table", exc.detail)
                delay = RETRY_MAX
            except (Unavailable, EdgeError) as exc:
                log.warning("%s; still serving the last table", exc.detail)
            await asyncio.sleep(delay)
            delay = min(delay * 2, RETRY_MAX)

    async def allowed(self, domain: str) -> bool:
        """Caddy's ask: the control plane's answer; the last table's when it is down."""
        name = domain.lower().rstrip(".")
        base = self.replicas.current
        try:
            r = await self.http.get(
                f"{base}/v1/agent/edge/ask",
                params={"domain": name},
                timeout=replicas.timeout(ASK_TIMEOUT),
            )
        except httpx.HTTPError as exc:
            self.replicas.failed(base, type(exc).__name__)
            return name in self.table.app_ids_by_host()
        if r.status_code >= 500:
            self.replicas.failed(base, f"HTTP {r.status_code}")
            return name in self.table.app_ids_by_host()
        return r.status_code == 200
