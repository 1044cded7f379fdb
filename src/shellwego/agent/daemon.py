"""The node agent daemon: identity, then concurrent loops until stopped.

Loops: heartbeat (every interval, and at once on any observed change), the blocking
assignments watch, reconcile (on change, on a due retry, and every ``resync_interval``
anyway), observation of the driver (crashes, restarts), log shipping, health checks.

The agent never stops instances on its own exit: they keep running across an agent
restart (the next agent re-adopts them through ``driver.recover()``) and while the
control plane is unreachable.

With several control-plane replicas (``--server URL1,URL2``), a failed request moves the
client to the next replica at once; the heartbeat (every few seconds, short timeouts)
notices a dead replica first, and the blocking assignments query still waiting on it
gives up then. Once a replica answers again, the assignments it returns are
authoritative: whatever runs here and is not in them (stopped while this node was cut
off, or moved elsewhere after the node was declared down) is stopped and removed by the
next reconcile pass.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Coroutine, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from shellwego import __version__
from shellwego.errors import (
    ConfigError,
    ShellWeGoError,
    Unauthenticated,
    Unavailable,
)
from shellwego.models.agentprotocol import RUNTIMES, Assignment, Heartbeat, ObservedInstance
from shellwego.models.values import NodeCapacity
from shellwego.runtime.driver import Driver, InstanceState, InstanceStatus
from shellwego.runtime.drivers import DriverSet
from shellwego.runtime.host import host_capacity
from shellwego.runtime.layer import slug_dir_name
from shellwego.runtime.offer import Offer, runtime_offer

from . import facts
from . import identity as identities
from .client import ControlPlaneClient
from .health import HealthMonitor, Target
from .identity import Identity
from .logship import LogShipper, utc
from .reconcile import ACTIVE, Executor
from .settings import AgentSettings
from .slugs import SlugCache

log = logging.getLogger(__name__)

RETRY_BASE = 0.2
RETRY_CAP = 5.0
WATCH_WAIT = 30.0
OBSERVE_INTERVAL = 0.25
ERROR_MAX = 2000


def retry_delay(failures: int, cap: float = RETRY_CAP) -> float:
    """Exponential backoff: 0.2 s, 0.4 s, 0.8 s … at most ``cap``."""
    return float(min(cap, RETRY_BASE * 2 ** max(failures - 1, 0)))


def _rejected(what: str, state_dir: Path) -> Unauthenticated:
    return Unauthenticated(
        f"the control plane rejected this node's token ({what}): the node was removed or its "
        f"token revoked. To join again, remove {identities.path_of(state_dir)} and start the "
        "agent with a new join token (shellwego nodes join-token)."
    )


def drivers_by_runtime(drivers: Driver | Mapping[str, Driver]) -> dict[str, Driver]:
    """The node's drivers keyed by runtime; a lone driver not named after a runtime of the
    protocol (the fake one of tests) serves the process runtime."""
    if isinstance(drivers, Mapping):
        return dict(drivers)
    return {drivers.name if drivers.name in RUNTIMES else "process": drivers}


class Agent:
    """``drivers``: the runtimes this node runs, keyed by runtime (one driver alone serves
    its own runtime, see :func:`drivers_by_runtime`)."""

    def __init__(
        self,
        settings: AgentSettings,
        drivers: Driver | Mapping[str, Driver],
        *,
        client: ControlPlaneClient | None = None,
        observe_interval: float = OBSERVE_INTERVAL,
        watch_wait: float = WATCH_WAIT,
    ) -> None:
        self.settings = settings
        self.client = client or ControlPlaneClient(settings.server_url)
        self.identity: Identity | None = None
        self.observe_interval = observe_interval
        self.watch_wait = watch_wait
        self.slugs = SlugCache(settings.state_dir / "slugs", self.client.download_artifact)
        self.drivers = DriverSet(drivers_by_runtime(drivers), slugs=self.slugs.ensure)
        driver: Driver = self.drivers
        self.driver = driver
        self.offer: Offer | None = None  # what this node offers, measured at start
        self.executor = Executor(driver)
        self.heartbeats = 0  # successful heartbeats since start
        self._stopping = asyncio.Event()
        self._finished = asyncio.Event()
        self._beat_now = asyncio.Event()
        self._reconcile_now = asyncio.Event()
        self.health = HealthMonitor(driver, self._beat_now.set)
        self._desired: list[Assignment] | None = None
        self._index = 0
        self._capacity: NodeCapacity | None = None
        self._machine: dict[str, Any] = {}  # kernel and capabilities (agent/facts.py)
        self._tasks: list[asyncio.Task[None]] = []
        self.logs = LogShipper(driver, self.client.ship_logs, retry_delay=retry_delay)
        self._cpu_samples: dict[str, tuple[int, float]] = {}
        self._observed_key: tuple[tuple[Any, ...], ...] | None = None
        self._running = False

    # ---- public ----------------------------------------------------------------------------

    @property
    def node_id(self) -> str | None:
        return self.identity.node_id if self.identity else None

    @property
    def desired(self) -> list[Assignment] | None:
        """The last assignment set received, or None before the first one."""
        return self._desired

    async def run(self) -> None:
        """Join (or load the identity), re-adopt instances, then run until :meth:`stop`.

        Raises :class:`Unauthenticated` when the control plane rejects the node token and
        :class:`ConfigError` when the node cannot join.
        """
        self._running = True
        try:
            self._capacity = await asyncio.to_thread(self._measure_capacity)
            self._machine = await asyncio.to_thread(facts.machine)
            self.offer = await asyncio.to_thread(runtime_offer, self.drivers.drivers)
            self.drivers.missing = dict(self.offer.reasons)
            self.identity = await self._identify()
            if self.identity is None:  # stopped while joining
                return
            self.client.node_token = self.identity.node_token
            adopted = await self.driver.recover()
            self.logs.adopt((s.instance_id for s in adopted), datetime.now(UTC))
            log.info(
                "agent for node %s (%s) started; re-adopted %d instance(s); runtimes %s",
                self.identity.node_id,
                self.settings.hostname,
                len(adopted),
                ", ".join(self.offer.runtimes) or "none",
            )
            for runtime, why in self.offer.reasons.items():
                log.info("runtime %s not offered: %s", runtime, why)
            loops: list[Callable[[], Coroutine[Any, Any, None]]] = [
                self._heartbeat_loop,
                self._watch_loop,
                self._reconcile_loop,
                self._observe_loop,
                self._ship_loop,
            ]
            self._tasks = [asyncio.create_task(f(), name=f"agent{f.__name__}") for f in loops]
            stopper = asyncio.create_task(self._stopping.wait(), name="agent-stop")
            done, _ = await asyncio.wait(
                [*self._tasks, stopper], return_when=asyncio.FIRST_COMPLETED
            )
            stopper.cancel()
            for task in done:
                if task is not stopper and not task.cancelled() and task.exception():
                    raise task.exception()  # type: ignore[misc]
        finally:
            await self._shutdown()
            self._running = False
            self._finished.set()

    async def stop(self) -> None:
        """Stop the agent's loops; the instances keep running."""
        self._stopping.set()
        if self._running:
            await self._finished.wait()
        else:
            await self._shutdown()

    # ---- identity --------------------------------------------------------------------------

    def _measure_capacity(self) -> NodeCapacity:
        cpu = self.settings.capacity_cpu_millis
        memory = self.settings.capacity_memory_bytes
        if cpu is None or memory is None:
            host_cpu, host_memory = host_capacity()
            cpu = int(host_cpu * self.settings.cpu_overcommit) if cpu is None else cpu
            memory = host_memory if memory is None else memory
        return NodeCapacity(cpu_millis=cpu, memory_bytes=memory)

    async def _identify(self) -> Identity | None:
        state_dir = self.settings.state_dir
        saved = await asyncio.to_thread(identities.load, state_dir)
        if saved is not None:
            joined = {u.strip().rstrip("/") for u in saved.server_url.split(",")}
            if not joined & set(self.settings.server_urls):
                log.warning(
                    "node %s joined through %s; now using %s",
                    saved.node_id,
                    saved.server_url,
                    self.settings.server_url,
                )
            return saved
        token = self.settings.join_token
        if not token:
            raise ConfigError(
                f"this node has not joined a control plane yet ({identities.path_of(state_dir)} "
                "does not exist): start the agent with --join-token-file FILE or "
                "SHELLWEGO_JOIN_TOKEN"
            )
        failures = 0
        while not self._stopping.is_set():
            try:
                offer = self.offer or Offer(runtimes=list(self.drivers.runtimes))
                reg = await self.client.register(
                    token,
                    hostname=self.settings.hostname,
                    capacity=(self._capacity or self._measure_capacity()).model_dump(),
                    runtimes=offer.runtimes,
                    runtime_reasons=offer.reasons,
                    labels=self.settings.labels,
                    agent_version=__version__,
                    machine=self._machine,
                    address=self.settings.address,
                )
            except Unavailable as exc:
                failures += 1
                log.warning("cannot register yet: %s", exc.detail)
                await self._pause(retry_delay(failures))
                continue
            except Unauthenticated as exc:
                raise Unauthenticated(
                    "the control plane refused the join token: it is wrong or was revoked; "
                    "create a new one and start the agent with it"
                ) from exc
            identity = Identity(
                node_id=reg.node_id,
                node_token=reg.node_token,
                server_url=self.settings.server_url,
            )
            await asyncio.to_thread(identities.save, state_dir, identity)
            log.info("registered as node %s", identity.node_id)
            return identity
        return None

    # ---- loops -----------------------------------------------------------------------------

    async def _pause(self, seconds: float, wake: asyncio.Event | None = None) -> None:
        """Sleep ``seconds``, or less when stopping (or ``wake`` is set)."""
        events = [self._stopping] if wake is None else [self._stopping, wake]
        waiters = [asyncio.create_task(e.wait()) for e in events]
        try:
            await asyncio.wait(waiters, timeout=max(seconds, 0.0), return_when="FIRST_COMPLETED")
        finally:
            for w in waiters:
                w.cancel()

    async def _heartbeat_loop(self) -> None:
        failures = 0
        interval = self.settings.heartbeat_interval
        while not self._stopping.is_set():
            self._beat_now.clear()
            try:
                answer = await self.client.heartbeat(await self.heartbeat_body())
            except ValidationError as exc:  # a driver's report the protocol cannot carry
                failures += 1
                log.error("heartbeat not sent: %s", exc.errors(include_input=False)[0]["msg"])
                await self._pause(retry_delay(failures))
                continue
            except Unauthenticated as exc:
                raise _rejected("heartbeat", self.settings.state_dir) from exc
            except Unavailable as exc:
                failures += 1
                if failures == 1 or failures % 20 == 0:
                    log.warning("heartbeat failed (%d in a row): %s", failures, exc.detail)
                await self._pause(retry_delay(failures))
                continue
            except ShellWeGoError as exc:
                failures += 1
                log.error("heartbeat refused: %s", exc.detail)
                await self._pause(retry_delay(failures))
                continue
            if failures:
                log.info("control plane reachable again")
            failures = 0
            self.heartbeats += 1
            if answer.heartbeat_interval > 0:
                interval = min(self.settings.heartbeat_interval, answer.heartbeat_interval)
            await self._pause(interval, self._beat_now)

    async def _watch_loop(self) -> None:
        failures = 0
        while not self._stopping.is_set():
            try:
                result = await self.client.assignments(self._index, self.watch_wait)
            except Unauthenticated as exc:
                raise _rejected("assignments", self.settings.state_dir) from exc
            except ShellWeGoError as exc:
                failures += 1
                if failures == 1 or failures % 20 == 0:
                    log.warning("cannot fetch assignments (%d in a row): %s", failures, exc.detail)
                await self._pause(retry_delay(failures))
                continue
            failures = 0
            if self._desired is None or result.index != self._index:
                for error in result.errors:
                    log.error("ignoring %s", error)
                self._desired = result.instances
                self._index = result.index
                log.info(
                    "assignments index %d: %d instance(s)", result.index, len(result.instances)
                )
                self._reconcile_now.set()

    async def _reconcile_loop(self) -> None:
        failures = 0
        while not self._stopping.is_set():
            timeout = self.settings.resync_interval
            retry = self.executor.next_retry_in()
            if retry is not None:
                timeout = min(timeout, retry)
            if failures:
                timeout = min(timeout, retry_delay(failures))
            await self._pause(timeout, self._reconcile_now)
            self._reconcile_now.clear()
            desired = self._desired
            if desired is None or self._stopping.is_set():
                continue  # nothing is stopped before the first assignments arrive
            try:
                actions = await self.executor.apply(desired)
                observed = await self.driver.list()
            except Exception:
                failures += 1
                log.exception("reconcile pass failed")
                continue
            failures = 0
            if actions:
                self._beat_now.set()
            self._sync_watchers(observed)
            in_use = {slug_dir_name(a.slug_digest, a.uid) for a in desired if a.slug_digest}
            try:
                await asyncio.to_thread(self.slugs.gc, in_use)
            except OSError as exc:
                log.warning("slug cleanup failed: %s", exc)

    async def _observe_loop(self) -> None:
        """Notice what the runtime did on its own (crash, restart, give up)."""
        while not self._stopping.is_set():
            try:
                observed = await self.driver.list()
            except Exception:
                log.exception("cannot list instances")
                await self._pause(retry_delay(3))
                continue
            key = tuple(
                sorted(
                    (s.instance_id, str(s.state), s.restarts, s.exit_code, s.pid) for s in observed
                )
            )
            if key != self._observed_key:
                if self._observed_key is not None:
                    self._beat_now.set()
                    self._reconcile_now.set()
                self._observed_key = key
            self._sync_watchers(observed)
            await self._pause(self.observe_interval)

    # ---- health and log watchers -----------------------------------------------------------

    def _sync_watchers(self, observed: list[InstanceStatus]) -> None:
        states = {s.instance_id: s.state for s in observed}
        desired = self._desired or []
        self.health.sync(
            {
                a.instance_id: Target(a.instance_id, a.port, a.health_check)
                for a in desired
                if a.desired_state == "running" and states.get(a.instance_id) in ACTIVE
            }
        )
        self.logs.sync(states)

    async def _ship_loop(self) -> None:
        try:
            await self.logs.run()
        except Unauthenticated as exc:
            raise _rejected("logs", self.settings.state_dir) from exc

    # ---- heartbeat body --------------------------------------------------------------------

    async def heartbeat_body(self) -> Heartbeat:
        observed = await self.driver.list()
        instances: list[ObservedInstance] = []
        known = set()
        for status in observed:
            known.add(status.instance_id)
            cpu, memory = await self._usage(status)
            instances.append(
                ObservedInstance(
                    instance_id=status.instance_id,
                    state=str(status.state),
                    healthy=self.health.healthy(status.instance_id),
                    pid=status.pid,
                    port=status.port,
                    address=status.address,
                    restarts=status.restarts + self.executor.restarts(status.instance_id),
                    exit_code=status.exit_code,
                    last_error=(status.last_error or "")[:ERROR_MAX] or None,
                    error_code=status.error_code,
                    cpu_millis_used=cpu,
                    memory_bytes=memory,
                )
            )
        for iid, (failures, error, code) in self.executor.failures().items():
            if iid not in known:
                instances.append(
                    ObservedInstance(
                        instance_id=iid,
                        state=str(InstanceState.BACKOFF),
                        healthy=False,
                        restarts=failures,
                        last_error=error[:ERROR_MAX],
                        error_code=code,
                    )
                )
        for iid in list(self._cpu_samples):
            if iid not in known:
                del self._cpu_samples[iid]
        if self.heartbeats:
            return Heartbeat(capacity=self._capacity, instances=instances)
        # what the machine is (kernel, CPU flags, runtimes): sent at registration and on the
        # first heartbeat after a start, so a reboot into a new kernel or a runtime installed
        # since shows; left out of the others, where the control plane keeps what it has
        offer = self.offer or Offer(runtimes=list(self.drivers.runtimes))
        body = Heartbeat.model_validate(
            {
                **self._machine,
                "runtimes": offer.runtimes,
                "runtime_reasons": offer.reasons,
            }
        )
        return body.model_copy(update={"capacity": self._capacity, "instances": instances})

    async def _usage(self, status: InstanceStatus) -> tuple[float | None, int | None]:
        """CPU (milli-cores since the last sample) and memory in use, when known."""
        if status.state not in ACTIVE:
            return None, None
        try:
            stats = await self.driver.stats(status.instance_id)
        except ShellWeGoError:
            return None, None
        now = time.monotonic()
        previous = self._cpu_samples.get(status.instance_id)
        self._cpu_samples[status.instance_id] = (stats.cpu_usage_ns, now)
        cpu: float | None = None
        if previous is not None and now > previous[1] and stats.cpu_usage_ns >= previous[0]:
            cpu = (stats.cpu_usage_ns - previous[0]) / (now - previous[1]) / 1e6
        elif status.started_at is not None:
            age = (datetime.now(UTC) - utc(status.started_at)).total_seconds()
            cpu = stats.cpu_usage_ns / max(age, 1e-3) / 1e6
        if cpu is None:
            return None, None
        return round(cpu, 3), stats.memory_bytes

    # ---- helpers ---------------------------------------------------------------------------

    async def _shutdown(self) -> None:
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        self._tasks.clear()
        await self.logs.close()
        await self.health.close()
        await self.client.aclose()


async def run_until_stopped(agent: Agent, stop: Awaitable[object]) -> None:
    """Run ``agent`` until ``stop`` completes (e.g. a signal), then stop it."""
    runner = asyncio.create_task(agent.run(), name="agent")
    waiter = asyncio.ensure_future(stop)
    done, _ = await asyncio.wait([runner, waiter], return_when=asyncio.FIRST_COMPLETED)
    if runner in done:
        waiter.cancel()
        runner.result()
        return
    await agent.stop()
    await runner
