"""Health checks of the instances on this node.

- ``http``: ``GET http://<address>:<port><path>``; healthy on any status below 500.
- ``tcp``: a TCP connection to ``<address>:<port>`` is accepted.
- ``process``: the driver reports the instance running.

``<address>`` is the instance's own network address, or ``127.0.0.1`` for an instance
sharing the node's network; then the listening socket must also be the instance's own
(``Driver.owns_listener``): another program holding the port never makes it healthy.
An http or tcp check also needs the driver to report the instance starting or running. Until an
instance is healthy it is checked every ``fast`` seconds (so a rolling deploy learns about
a new instance within a few hundred milliseconds of it listening), then every ``slow``
seconds. Every change of health calls ``on_change`` (the daemon sends a heartbeat).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import httpx

from shellwego.errors import ShellWeGoError
from shellwego.runtime.driver import Driver, InstanceState

from .reconcile import HealthCheck

log = logging.getLogger(__name__)

HOST = "127.0.0.1"


@dataclass(frozen=True, slots=True)
class Target:
    instance_id: str
    port: int
    check: HealthCheck


async def probe_http(
    host: str, port: int, path: str, timeout: float, client: httpx.AsyncClient
) -> bool:
    try:
        response = await client.get(f"http://{host}:{port}{path}", timeout=timeout)
    except httpx.HTTPError:
        return False
    return response.status_code < 500


async def probe_tcp(host: str, port: int, timeout: float) -> bool:
    try:
        _, writer = await asyncio.wait_for(asyncio.open_connection(host, port), timeout)
    except (OSError, TimeoutError):
        return False
    writer.close()
    with contextlib.suppress(OSError):
        await writer.wait_closed()
    return True


class HealthMonitor:
    def __init__(
        self,
        driver: Driver,
        on_change: Callable[[], None],
        *,
        fast: float = 0.15,
        slow: float = 2.0,
        probe_timeout: float = 1.0,
    ) -> None:
        self.driver = driver
        self.on_change = on_change
        self.fast = fast
        self.slow = slow
        self.probe_timeout = probe_timeout
        self._health: dict[str, bool] = {}
        self._tasks: dict[str, tuple[Target, asyncio.Task[None]]] = {}
        self._foreign: set[str] = set()  # instances whose port another program answered
        self._http: httpx.AsyncClient | None = None

    def healthy(self, instance_id: str) -> bool:
        return self._health.get(instance_id, False)

    def sync(self, targets: Mapping[str, Target]) -> None:
        """Check exactly ``targets`` from now on (start new checkers, cancel old ones)."""
        for iid in list(self._tasks):
            current, task = self._tasks[iid]
            if targets.get(iid) != current or task.done():
                task.cancel()
                del self._tasks[iid]
                if iid not in targets:
                    self._health.pop(iid, None)
                    self._foreign.discard(iid)
        for iid, target in targets.items():
            if iid not in self._tasks:
                task = asyncio.create_task(self._watch(target), name=f"health-{iid}")
                self._tasks[iid] = (target, task)

    async def close(self) -> None:
        tasks = [task for _, task in self._tasks.values()]
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks.clear()
        if self._http is not None:
            await self._http.aclose()
            self._http = None

    async def check(self, target: Target) -> bool:
        """One probe of ``target`` now."""
        try:
            status = await self.driver.inspect(target.instance_id)
        except ShellWeGoError:
            return False
        kind = target.check.type
        if kind == "process":
            return status.state == InstanceState.RUNNING
        if status.state not in (InstanceState.STARTING, InstanceState.RUNNING):
            return False
        host = status.address or HOST
        if kind == "tcp":
            answered = await probe_tcp(host, target.port, self.probe_timeout)
        else:
            if self._http is None:
                self._http = httpx.AsyncClient(follow_redirects=False, trust_env=False)
            answered = await probe_http(
                host, target.port, target.check.path, self.probe_timeout, self._http
            )
        if not answered or status.address is not None:
            return answered
        owned = await self.driver.owns_listener(target.instance_id, target.port)
        if not owned and target.instance_id not in self._foreign:
            self._foreign.add(target.instance_id)
            log.warning(
                "instance %s: port %d answers, but not from the instance's own processes",
                target.instance_id,
                target.port,
            )
        return owned

    async def _watch(self, target: Target) -> None:
        iid = target.instance_id
        while True:
            healthy = await self.check(target)
            previous = self._health.get(iid)
            self._health[iid] = healthy
            if healthy != bool(previous):
                log.info("instance %s is %s", iid, "healthy" if healthy else "unhealthy")
                self.on_change()
            await asyncio.sleep(self.slow if healthy else self.fast)
