"""What the process runtime remembers about an instance, kept in ``state.json``.

Everything needed to find an instance again after an agent restart: spec, desired state,
pid and the pid's start time, restart count, last exit, cgroup paths. The instance's
environment -- the release's config, secrets included -- is never written: it lives in
the agent's memory only, and an instance read back from disk waits for it (``env_ready``)
until the agent has it from the control plane again. ``state.json`` is written 0600,
atomically, in a directory private to the agent.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime
from pathlib import Path
from typing import Any

from shellwego.errors import ShellWeGoError

from .driver import InstanceSpec, InstanceState, InstanceStatus

STATE_FILE = "state.json"


@dataclass(eq=False)
class InstanceRecord:
    """One instance as the driver tracks it: what ``state.json`` keeps, plus supervision."""

    spec: InstanceSpec
    desired: str = "pending"  # "pending" | "running" | "stopped"
    state: InstanceState = InstanceState.PENDING
    pid: int | None = None
    pid_start: int | None = None
    restarts: int = 0
    exit_code: int | None = None
    started_at: datetime | None = None
    last_error: str | None = None
    error_code: str | None = None
    cgroups: dict[str, str] = field(default_factory=dict)
    # its network namespace (``InstanceNet.to_json()``), None when it shares the host's
    net: dict[str, Any] | None = None
    crashes: int = 0
    oom_base: int = 0
    monitor: asyncio.Task[None] | None = None
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    # set once ``spec.env`` holds the instance's environment (it is never read from disk)
    env_ready: asyncio.Event = field(default_factory=lambda: _event(True))

    def provide_env(self, env: Mapping[str, str]) -> None:
        """Give an instance read back from disk its environment (in memory only)."""
        if not self.env_ready.is_set():
            self.spec = replace(self.spec, env=dict(env))
            self.env_ready.set()

    def status(self) -> InstanceStatus:
        return InstanceStatus(
            instance_id=self.spec.instance_id,
            state=self.state,
            pid=self.pid,
            port=self.spec.port,
            restarts=self.restarts,
            exit_code=self.exit_code,
            started_at=self.started_at,
            last_error=self.last_error,
            error_code=self.error_code,
            address=str(self.net["address"]) if self.net else None,
        )

    def failed(self, exc: ShellWeGoError) -> None:
        """Remember why the last attempt to run the instance failed."""
        self.last_error = exc.detail
        self.error_code = exc.slug


def _event(is_set: bool) -> asyncio.Event:
    event = asyncio.Event()
    if is_set:
        event.set()
    return event


def spec_to_json(spec: InstanceSpec) -> dict[str, Any]:
    """The spec without its environment, which never goes to disk."""
    return {
        "instance_id": spec.instance_id,
        "app_id": spec.app_id,
        "app_name": spec.app_name,
        "process_type": spec.process_type,
        "release_id": spec.release_id,
        "command": spec.command,
        "app_dir": None if spec.app_dir is None else str(spec.app_dir),
        "port": spec.port,
        "memory_bytes": spec.memory_bytes,
        "cpu_millis": spec.cpu_millis,
        "runtime": spec.runtime,
        "uid": spec.uid,
        "index": spec.index,
    }


def spec_from_json(data: Mapping[str, Any]) -> InstanceSpec:
    """The spec saved as ``data``, with an empty environment (an older state file's is
    dropped: the control plane gives it again)."""
    values = dict(data)
    values["app_dir"] = None if values.get("app_dir") is None else Path(values["app_dir"])
    values["env"] = {}
    return InstanceSpec(**values)


def record_to_json(inst: InstanceRecord) -> dict[str, Any]:
    return {
        "spec": spec_to_json(inst.spec),
        "desired": inst.desired,
        "state": str(inst.state),
        "pid": inst.pid,
        "pid_start": inst.pid_start,
        "restarts": inst.restarts,
        "exit_code": inst.exit_code,
        "started_at": inst.started_at.isoformat() if inst.started_at else None,
        "last_error": inst.last_error,
        "error_code": inst.error_code,
        "cgroups": inst.cgroups,
        "net": inst.net,
    }


def record_from_json(data: Mapping[str, Any]) -> InstanceRecord:
    """The record saved as ``data``; raises KeyError, TypeError or ValueError when invalid."""
    spec = spec_from_json(data["spec"])
    started = data.get("started_at")
    try:
        state = InstanceState(data.get("state", "pending"))
    except ValueError:
        state = InstanceState.UNKNOWN
    return InstanceRecord(
        spec=spec,
        desired=str(data.get("desired", "pending")),
        state=state,
        pid=data.get("pid"),
        pid_start=data.get("pid_start"),
        restarts=int(data.get("restarts", 0)),
        exit_code=data.get("exit_code"),
        started_at=datetime.fromisoformat(started) if started else None,
        last_error=data.get("last_error"),
        error_code=data.get("error_code"),
        cgroups=dict(data.get("cgroups") or {}),
        net=dict(data["net"]) if data.get("net") else None,
        env_ready=_event(False),
    )


def write_state(instance_dir: Path, inst: InstanceRecord) -> None:
    """Replace ``state.json`` atomically (0600, synced) with the record of ``inst``."""
    tmp = instance_dir / f".{STATE_FILE}.{os.getpid()}.tmp"
    with contextlib.suppress(FileNotFoundError):  # a leftover keeps its old mode otherwise
        os.unlink(tmp)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as fh:
        json.dump(record_to_json(inst), fh)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, instance_dir / STATE_FILE)


def read_state(path: Path) -> InstanceRecord:
    """The record in a ``state.json``; raises OSError, KeyError, TypeError or ValueError."""
    return record_from_json(json.loads(path.read_text()))
