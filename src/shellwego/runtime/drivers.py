"""Several runtimes on one node: :class:`DriverSet` is a :class:`Driver` that hands each
instance to the driver of its runtime (``InstanceSpec.runtime``).

Its ``prepare`` fetches the instance's artifact first: a slug is downloaded (once per
node, see :mod:`shellwego.agent.slugs`) and the spec given to the runtime's driver names
its directory; an image is left to the driver, which pulls it itself. An instance of a
runtime this node does not run fails with :class:`RuntimeUnavailable`, saying why.

Which driver holds an instance is learnt from what each one lists and starts; an
instance id is never held by two.
"""

from __future__ import annotations

import asyncio
import builtins
import dataclasses
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from pathlib import Path

from shellwego.errors import NotFound, RuntimeUnavailable
from shellwego.models.agentprotocol import SlugArtifact

from .driver import (
    Capabilities,
    Driver,
    ExecResult,
    InstanceSpec,
    InstanceState,
    InstanceStats,
    InstanceStatus,
    LogLine,
)

# (slug digest, the uid its instances run as) → the extracted slug's directory
SlugSource = Callable[[str, int | None], Awaitable[Path]]


class DriverSet:
    """The drivers of a node keyed by runtime (``process``, ``oci``, ``microvm``);
    ``missing``: why each runtime without a driver is not offered."""

    name = "drivers"

    def __init__(
        self,
        drivers: Mapping[str, Driver],
        *,
        slugs: SlugSource | None = None,
        missing: Mapping[str, str] | None = None,
    ) -> None:
        self.drivers = dict(drivers)
        self.slugs = slugs
        self.missing = dict(missing or {})
        self._owner: dict[str, str] = {}

    @property
    def runtimes(self) -> list[str]:
        return list(self.drivers)

    def capabilities(self) -> Capabilities:
        caps = [d.capabilities() for d in self.drivers.values()]
        return Capabilities(
            runtime=",".join(self.drivers),
            available=any(c.available for c in caps),
            isolation=tuple(i for c in caps for i in c.isolation),
            memory_limit=all(c.memory_limit for c in caps),
            cpu_limit=all(c.cpu_limit for c in caps),
            notes=tuple(n for c in caps for n in c.notes),
        )

    def driver_for(self, runtime: str) -> Driver:
        """The driver of ``runtime``, or RuntimeUnavailable saying why this node has none."""
        driver = self.drivers.get(runtime)
        if driver is None:
            why = self.missing.get(runtime) or "its agent runs no driver for it"
            raise RuntimeUnavailable(f"this node does not offer the {runtime} runtime: {why}")
        return driver

    async def _holder(self, instance_id: str) -> Driver | None:
        runtime = self._owner.get(instance_id)
        if runtime is not None and runtime in self.drivers:
            return self.drivers[runtime]
        for name, driver in self.drivers.items():
            status = await driver.inspect(instance_id)
            if status.state != InstanceState.UNKNOWN:
                self._owner[instance_id] = name
                return driver
        if len(self.drivers) == 1:
            return next(iter(self.drivers.values()))  # its own answer for an unknown id
        return None

    async def _resolved(self, spec: InstanceSpec) -> InstanceSpec:
        """``spec`` with its slug's directory, the slug fetched first when needed."""
        if spec.app_dir is not None or not isinstance(spec.artifact, SlugArtifact):
            return spec
        if self.slugs is None:
            raise RuntimeUnavailable(
                f"instance {spec.instance_id} runs a slug and this node has no slug store"
            )
        app_dir = await self.slugs(spec.artifact.digest, spec.uid)
        return dataclasses.replace(spec, app_dir=app_dir)

    # ---- the Driver protocol -------------------------------------------------------------

    async def prepare(self, spec: InstanceSpec) -> None:
        driver = self.driver_for(spec.runtime)
        await driver.prepare(await self._resolved(spec))
        self._owner[spec.instance_id] = spec.runtime

    async def start(self, spec: InstanceSpec) -> InstanceStatus:
        driver = self.driver_for(spec.runtime)
        status = await driver.start(await self._resolved(spec))
        self._owner[spec.instance_id] = spec.runtime
        return status

    async def stop(self, instance_id: str, grace_seconds: float = 10.0) -> InstanceStatus:
        driver = await self._holder(instance_id)
        if driver is None:
            return InstanceStatus(instance_id, InstanceState.UNKNOWN)
        return await driver.stop(instance_id, grace_seconds)

    async def recover(self) -> builtins.list[InstanceStatus]:
        found = await asyncio.gather(*(d.recover() for d in self.drivers.values()))
        return self._note(found)

    async def inspect(self, instance_id: str) -> InstanceStatus:
        driver = await self._holder(instance_id)
        if driver is None:
            return InstanceStatus(instance_id, InstanceState.UNKNOWN)
        return await driver.inspect(instance_id)

    async def list(self) -> list[InstanceStatus]:
        found = await asyncio.gather(*(d.list() for d in self.drivers.values()))
        return self._note(found)

    def _note(
        self, found: Sequence[builtins.list[InstanceStatus]]
    ) -> builtins.list[InstanceStatus]:
        out: builtins.list[InstanceStatus] = []
        for name, statuses in zip(self.drivers, found, strict=True):
            for status in statuses:
                self._owner[status.instance_id] = name
            out.extend(statuses)
        return out

    async def stats(self, instance_id: str) -> InstanceStats:
        driver = await self._holder(instance_id)
        if driver is None:
            raise NotFound(f"instance {instance_id} is not on this node")
        return await driver.stats(instance_id)

    async def logs(
        self, instance_id: str, follow: bool = False, tail: int | None = None
    ) -> AsyncIterator[LogLine]:
        driver = await self._holder(instance_id)
        if driver is None:
            raise NotFound(f"instance {instance_id} is not on this node")
        async for line in driver.logs(instance_id, follow=follow, tail=tail):
            yield line

    async def exec(
        self, spec: InstanceSpec, argv: Sequence[str], timeout: float = 60.0
    ) -> ExecResult:
        driver = self.driver_for(spec.runtime)
        return await driver.exec(await self._resolved(spec), argv, timeout)

    async def remove(self, instance_id: str) -> None:
        driver = await self._holder(instance_id)
        if driver is not None:
            await driver.remove(instance_id)
        self._owner.pop(instance_id, None)

    async def owns_listener(self, instance_id: str, port: int) -> bool:
        driver = await self._holder(instance_id)
        return driver is not None and await driver.owns_listener(instance_id, port)
