"""The runtime driver protocol: how an agent runs instances, whatever isolates them.

Every runtime (process, oci, microvm, and the fake used in tests) implements
:class:`Driver`. The agent reaches runtimes only through this protocol.
"""

from __future__ import annotations

import enum
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Protocol, runtime_checkable

from shellwego.errors import RuntimeFailure
from shellwego.models.agentprotocol import ImageArtifact, SlugArtifact


class InstanceState(enum.StrEnum):
    """Observed state of one instance on a node."""

    PENDING = "pending"  # prepared, not started
    STARTING = "starting"  # process launched, health not yet known
    RUNNING = "running"  # process alive
    BACKOFF = "backoff"  # crashed; waiting to be restarted
    STOPPED = "stopped"  # stopped on purpose
    EXITED = "exited"  # gone and not coming back (gave up, or one-off finished)
    UNKNOWN = "unknown"  # the driver has no record of it


@dataclass(frozen=True, slots=True)
class InstanceSpec:
    """Everything a driver needs to run one instance of a process type of a release."""

    instance_id: str
    app_id: str
    app_name: str
    process_type: str
    release_id: str
    command: str  # shell command line from the Procfile (run through /bin/sh -c)
    # the extracted slug, the app's working directory; None until ``prepare`` fetched the
    # spec's ``artifact`` (see :class:`shellwego.runtime.drivers.DriverSet`)
    app_dir: Path | None
    env: Mapping[str, str]  # release config + platform variables; PORT is added by the driver
    port: int
    memory_bytes: int = 512 * 1024 * 1024
    cpu_millis: int = 1000
    runtime: str = "process"
    # the app's own uid (also its gid): what the instance runs as when the agent is root;
    # None: the driver's default unprivileged user
    uid: int | None = None
    # its number within its process type (``DYNO=web.1``), from the control plane
    index: int | None = None
    # what it runs (a slug, an image), as the control plane assigned it
    artifact: SlugArtifact | ImageArtifact | None = None
    argv: Sequence[str] | None = None  # run as is instead of ``command`` (images)
    pids: int | None = None  # at most this many processes; None: the driver's default

    @property
    def directory(self) -> Path:
        """The app's directory, once prepared."""
        if self.app_dir is None:
            raise RuntimeFailure(
                f"instance {self.instance_id} has no app directory: its artifact was not "
                "prepared"
            )
        return self.app_dir


@dataclass(slots=True)
class InstanceStatus:
    """What a driver observed about one instance."""

    instance_id: str
    state: InstanceState
    pid: int | None = None
    port: int | None = None
    # the instance's own network address (it listens on address:port), or None when it
    # shares its node's network and listens on the node's port
    address: str | None = None
    restarts: int = 0
    exit_code: int | None = None
    started_at: datetime | None = None
    last_error: str | None = None
    # what kind of failure ``last_error`` is, for the control plane to act on: the
    # problem slug of the error (e.g. ``port-in-use``), None for a plain exit
    error_code: str | None = None


@dataclass(frozen=True, slots=True)
class InstanceStats:
    instance_id: str
    cpu_usage_ns: int  # cumulative CPU time consumed
    memory_bytes: int  # resident memory now


@dataclass(frozen=True, slots=True)
class LogLine:
    instance_id: str
    stream: str  # "stdout" | "stderr"
    timestamp: datetime
    line: str


@dataclass(frozen=True, slots=True)
class ExecResult:
    exit_code: int
    output: str


@dataclass(frozen=True, slots=True)
class Capabilities:
    """What a runtime offers on this host, and why a feature is missing when it is."""

    runtime: str
    available: bool
    # e.g. ("process-group", "cgroup", "bwrap")
    isolation: Sequence[str] = field(default_factory=tuple)
    memory_limit: bool = False
    cpu_limit: bool = False
    notes: Sequence[str] = field(default_factory=tuple)


@runtime_checkable
class Driver(Protocol):
    """Operations every runtime offers. All are idempotent for a given instance id."""

    name: str

    def capabilities(self) -> Capabilities: ...

    async def prepare(self, spec: InstanceSpec) -> None:
        """Make everything ready to start (the artifact fetched and unpacked, directories,
        rootfs, cgroup) and hand a re-adopted instance its environment. Idempotent."""

    async def start(self, spec: InstanceSpec) -> InstanceStatus:
        """Start the instance; restart-on-crash with backoff is the driver's job."""

    async def stop(self, instance_id: str, grace_seconds: float = 10.0) -> InstanceStatus:
        """SIGTERM (or equivalent), wait for the grace period, then kill. Idempotent."""

    async def recover(self) -> list[InstanceStatus]:
        """Re-adopt instances still running from before an agent restart; restart none."""

    async def inspect(self, instance_id: str) -> InstanceStatus: ...

    async def list(self) -> list[InstanceStatus]: ...

    async def stats(self, instance_id: str) -> InstanceStats: ...

    def logs(
        self, instance_id: str, follow: bool = False, tail: int | None = None
    ) -> AsyncIterator[LogLine]:
        """Captured stdout/stderr lines, oldest first; ``follow`` keeps streaming."""
        ...

    async def exec(
        self, spec: InstanceSpec, argv: Sequence[str], timeout: float = 60.0
    ) -> ExecResult:
        """Run a one-off command in the instance's environment (same app dir, env, limits)."""
        ...

    async def remove(self, instance_id: str) -> None:
        """Forget a stopped instance and delete its runtime state (not the app's slug)."""

    async def owns_listener(self, instance_id: str, port: int) -> bool:
        """Whether what listens on ``port`` for an instance sharing the node's network is
        the instance itself (a health check must never pass on another program's socket).
        Instances with an address of their own own whatever listens there."""
