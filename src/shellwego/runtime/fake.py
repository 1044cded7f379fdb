"""An in-memory runtime for tests of the logic above the drivers (agent, reconcile).

:class:`FakeDriver` runs nothing. It keeps the state a real driver would observe, records
every action it is asked to take in :attr:`FakeDriver.actions`, and lets a test inject
what real runtimes do on their own: crashes (:meth:`FakeDriver.crash`), failing starts
(:meth:`FakeDriver.fail_next_start`) and output (:meth:`FakeDriver.emit_log`).

Crash rule: a crash moves a running instance to ``BACKOFF``. It counts against
``max_restarts``; when an instance has crashed more than ``max_restarts`` times since it
was last started by the agent, the driver gives up and the instance is ``EXITED``. An
instance in ``BACKOFF`` "restarts" (back to ``RUNNING``, ``restarts`` + 1, a new pid)
once ``restart_delay`` seconds have passed, the moment it is next observed
(``inspect``/``list``/``stats``). ``start`` of an exited instance starts it afresh with
its crash count reset; ``restarts`` keeps counting.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime

from shellwego.errors import RuntimeFailure

from .driver import (
    Capabilities,
    ExecResult,
    InstanceSpec,
    InstanceState,
    InstanceStats,
    InstanceStatus,
    LogLine,
)

ACTIVE = (InstanceState.STARTING, InstanceState.RUNNING, InstanceState.BACKOFF)


@dataclass
class _Record:
    spec: InstanceSpec
    status: InstanceStatus
    crashes: int = 0
    restart_at: float = 0.0
    cpu_usage_ns: int = 0
    memory_bytes: int = 0
    lines: list[LogLine] = field(default_factory=list)
    followers: set[asyncio.Queue[LogLine | None]] = field(default_factory=set)


class FakeDriver:
    """The Driver protocol in memory; see the module docstring for the crash rule."""

    name = "fake"

    def __init__(
        self,
        *,
        max_restarts: int = 3,
        restart_delay: float = 0.5,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.max_restarts = max_restarts
        self.restart_delay = restart_delay
        self.actions: list[tuple[str, str]] = []
        self._clock = clock
        self._records: dict[str, _Record] = {}
        self._start_failures: list[BaseException] = []
        self._pids = itertools.count(40000)

    # ---- test controls -------------------------------------------------------------------

    def fail_next_start(self, exception: BaseException) -> None:
        """The next call to :meth:`start` (for any instance) raises ``exception``."""
        self._start_failures.append(exception)

    def crash(self, instance_id: str, exit_code: int = 1) -> InstanceStatus:
        """Simulate the instance's process dying with ``exit_code``."""
        rec = self._require(instance_id)
        if rec.status.state not in ACTIVE:
            raise RuntimeFailure(f"instance {instance_id} is not running")
        rec.crashes += 1
        rec.status.exit_code = exit_code
        rec.status.pid = None
        rec.status.last_error = f"exited with code {exit_code}"
        if rec.crashes > self.max_restarts:
            rec.status.state = InstanceState.EXITED
        else:
            rec.status.state = InstanceState.BACKOFF
            rec.restart_at = self._clock() + self.restart_delay
        return replace(rec.status)

    def emit_log(self, instance_id: str, line: str, stream: str = "stdout") -> LogLine:
        """The instance wrote ``line``; followers of :meth:`logs` receive it."""
        rec = self._require(instance_id)
        entry = LogLine(
            instance_id=instance_id, stream=stream, timestamp=datetime.now(UTC), line=line
        )
        rec.lines.append(entry)
        for queue in rec.followers:
            queue.put_nowait(entry)
        return entry

    def set_usage(self, instance_id: str, cpu_usage_ns: int, memory_bytes: int) -> None:
        """What :meth:`stats` reports for the instance from now on."""
        rec = self._require(instance_id)
        rec.cpu_usage_ns = cpu_usage_ns
        rec.memory_bytes = memory_bytes

    def spec_of(self, instance_id: str) -> InstanceSpec:
        """The spec the instance was last prepared or started with."""
        return self._require(instance_id).spec

    def running_ids(self) -> set[str]:
        """Ids of instances that are starting, running or restarting."""
        for rec in self._records.values():
            self._advance(rec)
        return {i for i, r in self._records.items() if r.status.state in ACTIVE}

    # ---- the Driver protocol -------------------------------------------------------------

    def capabilities(self) -> Capabilities:
        return Capabilities(
            runtime="fake",
            available=True,
            isolation=(),
            notes=("runs nothing: an in-memory runtime for tests",),
        )

    async def prepare(self, spec: InstanceSpec) -> None:
        self.actions.append(("prepare", spec.instance_id))
        rec = self._records.get(spec.instance_id)
        if rec is None:
            self._records[spec.instance_id] = _Record(
                spec=spec,
                status=InstanceStatus(
                    instance_id=spec.instance_id, state=InstanceState.PENDING, port=spec.port
                ),
            )
        else:
            rec.spec = spec

    async def start(self, spec: InstanceSpec) -> InstanceStatus:
        self.actions.append(("start", spec.instance_id))
        if self._start_failures:
            raise self._start_failures.pop(0)
        rec = self._records.get(spec.instance_id)
        if rec is None:
            raise RuntimeFailure(f"instance {spec.instance_id} was not prepared")
        self._advance(rec)
        if rec.status.state in ACTIVE:
            return replace(rec.status)
        rec.spec = spec
        rec.crashes = 0
        rec.status.state = InstanceState.RUNNING
        rec.status.pid = next(self._pids)
        rec.status.port = spec.port
        rec.status.exit_code = None
        rec.status.last_error = None
        rec.status.started_at = datetime.now(UTC)
        return replace(rec.status)

    async def stop(self, instance_id: str, grace_seconds: float = 10.0) -> InstanceStatus:
        self.actions.append(("stop", instance_id))
        rec = self._records.get(instance_id)
        if rec is None:
            return InstanceStatus(instance_id=instance_id, state=InstanceState.UNKNOWN)
        if rec.status.state in ACTIVE or rec.status.state == InstanceState.PENDING:
            rec.status.state = InstanceState.STOPPED
            rec.status.pid = None
        return replace(rec.status)

    async def recover(self) -> list[InstanceStatus]:
        return await self.list()

    async def inspect(self, instance_id: str) -> InstanceStatus:
        rec = self._records.get(instance_id)
        if rec is None:
            return InstanceStatus(instance_id=instance_id, state=InstanceState.UNKNOWN)
        self._advance(rec)
        return replace(rec.status)

    async def list(self) -> list[InstanceStatus]:
        out = []
        for rec in self._records.values():
            self._advance(rec)
            out.append(replace(rec.status))
        return out

    async def stats(self, instance_id: str) -> InstanceStats:
        rec = self._require(instance_id)
        self._advance(rec)
        return InstanceStats(
            instance_id=instance_id,
            cpu_usage_ns=rec.cpu_usage_ns,
            memory_bytes=rec.memory_bytes if rec.status.state in ACTIVE else 0,
        )

    async def logs(
        self, instance_id: str, follow: bool = False, tail: int | None = None
    ) -> AsyncIterator[LogLine]:
        rec = self._require(instance_id)
        queue: asyncio.Queue[LogLine | None] = asyncio.Queue()
        if follow:
            rec.followers.add(queue)
        try:
            if tail is None:
                backlog = list(rec.lines)
            else:
                backlog = list(rec.lines[-tail:]) if tail > 0 else []
            for entry in backlog:
                yield entry
            while follow:
                item = await queue.get()
                if item is None:
                    return
                yield item
        finally:
            rec.followers.discard(queue)

    async def exec(
        self, spec: InstanceSpec, argv: Sequence[str], timeout: float = 60.0
    ) -> ExecResult:
        """Runs nothing: echoes the command line back with exit code 0."""
        self.actions.append(("exec", spec.instance_id))
        return ExecResult(exit_code=0, output=" ".join(argv))

    async def owns_listener(self, instance_id: str, port: int) -> bool:
        """The fake runs no processes: whatever a test listens with stands for it."""
        return instance_id in self._records

    async def remove(self, instance_id: str) -> None:
        self.actions.append(("remove", instance_id))
        rec = self._records.get(instance_id)
        if rec is None:
            return
        self._advance(rec)
        if rec.status.state in ACTIVE:
            raise RuntimeFailure(f"instance {instance_id} is still running; stop it first")
        del self._records[instance_id]
        for queue in rec.followers:
            queue.put_nowait(None)

    # ---- internals -----------------------------------------------------------------------

    def _require(self, instance_id: str) -> _Record:
        rec = self._records.get(instance_id)
        if rec is None:
            raise RuntimeFailure(f"no instance {instance_id} on this runtime")
        return rec

    def _advance(self, rec: _Record) -> None:
        if rec.status.state == InstanceState.BACKOFF and self._clock() >= rec.restart_at:
            rec.status.state = InstanceState.RUNNING
            rec.status.restarts += 1
            rec.status.pid = next(self._pids)
            rec.status.started_at = datetime.now(UTC)
