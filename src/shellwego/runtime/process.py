"""The process runtime: each instance is a host process tree, supervised by the agent.

An instance runs ``/bin/sh -c`` in its own session (so its process group is the instance),
with a clean environment (the release's config plus ``PORT``, ``HOME``, ``PATH`` and
``LANG``), after sourcing ``$HOME/.profile.d/*.sh`` the way Heroku-style builds expect.
Where the host allows it the instance also gets:

* a cgroup (v2, or the v1 ``memory``/``cpu``/``cpuacct`` controllers on hybrid hosts)
  carrying ``memory_bytes`` and ``cpu_millis`` as hard limits;
* a bubblewrap sandbox: the host's root read-only, private ``/dev``, ``/proc`` (own PID
  namespace) and ``/tmp``, the agent's state and every configured hidden path masked, and
  only the instance's own app directory writable. The network is the host's: the app
  listens on its ``PORT`` on the host.

Every instance also gets:

* its own writable layer over the read-only slug (:mod:`.layer`): an overlay in a private
  mount namespace, or a private copy; writes stay private to the instance and are
  discarded when it starts again. The instance's app directory (and ``HOME``) is
  ``<state_dir>/<instance_id>/app``;
* when the agent runs as root, an unprivileged user (:mod:`.user`, 65534 by default).

Instances are not tied to the agent: no pipes lead back to it, output goes through a
small log pump (its own session) into ``<state_dir>/<instance_id>/output.log``, each line
stamped with the time it was written and its stream, rotated past ``LOG_LIMIT_BYTES``.
Everything needed to find an instance again (spec, pid, the pid's start time, restart
count, desired state, cgroup paths) is kept in ``state.json`` next to it, so a restarted
agent re-adopts running instances through :meth:`ProcessDriver.recover`.

The pieces live next to this module: :mod:`.cgroups`, :mod:`.sandbox` (bubblewrap),
:mod:`.command` (command line and environment), :mod:`.logfile` (log pump and readers),
:mod:`.procfs` (pids, groups, usage), :mod:`.exits` (waiting, reaping, terminating) and
:mod:`.state` (``state.json``). This module is the driver that supervises instances.

The agent restarts crashed instances with exponential backoff (``backoff_base * 2**n``,
capped at ``backoff_max``; ``n`` goes back to 0 once an instance has stayed up for
:data:`STABLE_AFTER_SECONDS`).
"""

from __future__ import annotations

import asyncio
import builtins
import contextlib
import logging
import os
import secrets
import shutil
import signal
import stat
import time
from collections.abc import AsyncIterator, Sequence
from datetime import UTC, datetime
from pathlib import Path

from shellwego.errors import InvalidInput, RuntimeFailure, RuntimeUnavailable
from shellwego.files import make_private_dir

from .cgroups import Cgroups
from .command import instance_argv, instance_environment, run_collected
from .driver import (
    Capabilities,
    ExecResult,
    InstanceSpec,
    InstanceState,
    InstanceStats,
    InstanceStatus,
    LogLine,
)
from .exits import POLL_SECONDS, describe_exit, reap, terminate, wait_exit
from .layer import Layers
from .logfile import LOG_FILE, LogReader, parse_line, read_lines, spawn_with_log
from .procfs import (
    alive,
    group_usage,
    instance_group,
    process_start_time,
    reused,
    signal_group,
)
from .sandbox import Sandbox
from .state import STATE_FILE, InstanceRecord, read_state, write_state
from .user import NOBODY, RunUser, run_user

__all__ = ["EXEC_OUTPUT_LIMIT", "EXEC_TIMEOUT_EXIT", "STABLE_AFTER_SECONDS", "ProcessDriver"]

log = logging.getLogger(__name__)

EXEC_OUTPUT_LIMIT = 1024 * 1024
STABLE_AFTER_SECONDS = 30.0
EXEC_TIMEOUT_EXIT = 124

_ACTIVE = (InstanceState.STARTING, InstanceState.RUNNING, InstanceState.BACKOFF)


class ProcessDriver:
    """Instances as supervised host processes; see the module docstring."""

    name = "process"

    def __init__(
        self,
        state_dir: Path,
        *,
        sandbox: bool | None = None,
        cgroups: bool | None = None,
        backoff_base: float = 0.5,
        backoff_max: float = 30.0,
        hidden_paths: Sequence[Path] = (),
        run_as: tuple[int, int] | None = NOBODY,
        reachable_from: Path | None = None,
    ) -> None:
        """``run_as``: the uid/gid instances run as when this process is root (None: as
        root too). ``hidden_paths``: what instances must not see (the platform's data).
        ``reachable_from``: a private directory of the platform's above ``state_dir``
        (its data directory); instances that must reach their app directory by its host
        path (unsandboxed, as another user) get the directories from it down made
        search-only for others (0711: entered, never listed)."""
        self.state_dir = Path(state_dir).resolve()
        self.backoff_base = backoff_base
        self.backoff_max = backoff_max
        self.hidden_paths = tuple(Path(p) for p in hidden_paths)
        self._notes: list[str] = []
        self._user: RunUser | None = run_user(run_as)
        if cgroups is False:
            self._cgroups = Cgroups(0, {}, "cgroup limits are disabled by configuration")
        else:
            self._cgroups = Cgroups.detect()
            if cgroups and not self._cgroups.available:
                raise RuntimeUnavailable(f"cgroups were requested: {self._cgroups.note}")
        if self._cgroups.note:
            self._notes.append(self._cgroups.note)
        if sandbox is False:
            self._sandbox = Sandbox(None, note="sandboxing is disabled by configuration")
            self._notes.append(self._sandbox.note or "")
        else:
            self._sandbox = Sandbox.detect()
            if sandbox and self._sandbox.binary is None:
                raise RuntimeUnavailable(f"a sandbox was requested: {self._sandbox.note}")
            if self._sandbox.note:
                self._notes.append(f"{self._sandbox.note}: instances are not sandboxed")
        # unsandboxed instances reach their app layer by its host path: instance
        # directories are then searchable (0711), never listable, their files private
        self._dir_mode = 0o711 if self._sandbox.binary is None and self._user else 0o700
        if self._dir_mode == 0o711 and reachable_from is not None:
            self._open_way(Path(reachable_from).resolve())
        make_private_dir(self.state_dir, self._dir_mode)
        self._check_reachable()
        self._layers = Layers.detect(self.state_dir)
        if self._layers.note:
            self._notes.append(self._layers.note)
        self._instances: dict[str, InstanceRecord] = {}

    # ---- protocol ------------------------------------------------------------------------

    def capabilities(self) -> Capabilities:
        isolation = ["process-group"]
        if self._cgroups.available:
            isolation.append(f"cgroup-v{self._cgroups.version}")
        if self._sandbox.binary is not None:
            isolation.append("bwrap")
        isolation.append(self._layers.label)
        if self._user is not None:
            isolation.append(self._user.label())
        return Capabilities(
            runtime=self.name,
            available=True,
            isolation=tuple(isolation),
            memory_limit=self._cgroups.available,
            cpu_limit=self._cgroups.available and self._cgroups.cpu_limit,
            notes=tuple(self._notes),
        )

    async def prepare(self, spec: InstanceSpec) -> None:
        inst = self._instances.get(spec.instance_id)
        if inst is None:
            inst = await self._load_known(spec.instance_id) or InstanceRecord(spec=spec)
            self._instances[spec.instance_id] = inst
        elif inst.state not in _ACTIVE:
            inst.spec = spec
        make_private_dir(self._instance_dir(spec.instance_id), self._dir_mode)
        if self._cgroups.available and not inst.cgroups:
            inst.cgroups = self._cgroups.create(
                spec.instance_id, spec.memory_bytes, spec.cpu_millis
            )
        self._persist(inst)

    async def start(self, spec: InstanceSpec) -> InstanceStatus:
        await self.prepare(spec)
        inst = self._instances[spec.instance_id]
        async with inst.lock:
            if inst.desired == "running" and inst.state in _ACTIVE:
                return inst.status()
            inst.spec = spec
            inst.desired = "running"
            inst.crashes = 0
            try:
                await self._spawn(inst)
            except RuntimeFailure as exc:
                inst.desired = "stopped"
                inst.state = InstanceState.EXITED
                inst.last_error = exc.detail
                self._persist(inst)
                raise
            inst.exit_code = None
            inst.last_error = None
            self._persist(inst)
            inst.monitor = asyncio.create_task(self._supervise(inst))
            return inst.status()

    async def stop(self, instance_id: str, grace_seconds: float = 10.0) -> InstanceStatus:
        inst = self._instances.get(instance_id)
        if inst is None:
            return InstanceStatus(instance_id=instance_id, state=InstanceState.UNKNOWN)
        async with inst.lock:
            if inst.desired == "running" or inst.pid is not None:
                inst.desired = "stopped"
                self._persist(inst)
                await self._cancel_monitor(inst)
                if inst.pid is not None:
                    inst.exit_code = await terminate(
                        inst.pid, inst.pid_start, inst.cgroups, grace_seconds
                    )
                inst.pid = inst.pid_start = None
                inst.state = InstanceState.STOPPED
                self._persist(inst)
            elif inst.state == InstanceState.PENDING:
                inst.state = InstanceState.STOPPED
            return inst.status()

    async def recover(self) -> list[InstanceStatus]:
        """Take over the instances recorded under ``state_dir`` (after an agent restart).

        A process still alive (same pid, same start time) is re-adopted and supervised
        again, never restarted. One that should be running but died while no agent was
        watching is started again, counting a restart.
        """
        if not self.state_dir.is_dir():
            return []
        for path in sorted(self.state_dir.glob(f"*/{STATE_FILE}")):
            try:
                inst = read_state(path)
            except (OSError, ValueError, KeyError, TypeError) as exc:
                log.warning("ignoring unreadable instance state %s: %s", path, exc)
                continue
            if inst.spec.instance_id in self._instances:
                continue
            self._instances[inst.spec.instance_id] = inst
            await self._settle(inst, restart_dead=True)
        return await self.list()

    async def inspect(self, instance_id: str) -> InstanceStatus:
        inst = self._instances.get(instance_id)
        if inst is None:
            return InstanceStatus(instance_id=instance_id, state=InstanceState.UNKNOWN)
        return inst.status()

    async def list(self) -> list[InstanceStatus]:
        return [inst.status() for inst in self._instances.values()]

    async def stats(self, instance_id: str) -> InstanceStats:
        inst = self._require(instance_id)
        cpu, mem = Cgroups.usage(inst.cgroups) if inst.cgroups else (None, None)
        if cpu is None or mem is None:
            group_cpu, group_mem = 0, 0
            if inst.pid is not None and not reused(inst.pid, inst.pid_start):
                group_cpu, group_mem = group_usage(inst.pid)
            cpu = group_cpu if cpu is None else cpu
            mem = group_mem if mem is None else mem
        if inst.pid is None:
            mem = 0
        return InstanceStats(instance_id=instance_id, cpu_usage_ns=cpu, memory_bytes=mem)

    async def logs(
        self, instance_id: str, follow: bool = False, tail: int | None = None
    ) -> AsyncIterator[LogLine]:
        self._require(instance_id)
        path = self._instance_dir(instance_id) / LOG_FILE
        reader = LogReader(path)
        backlog = read_lines(path.with_name(LOG_FILE + ".1")) + reader.read()
        if tail is not None:
            backlog = backlog[-tail:] if tail > 0 else []
        try:
            for raw in backlog:
                yield parse_line(instance_id, raw)
            while follow and instance_id in self._instances:
                lines = reader.read()
                if not lines:
                    await asyncio.sleep(POLL_SECONDS)
                    continue
                for raw in lines:
                    yield parse_line(instance_id, raw)
        finally:
            reader.close()

    async def exec(
        self, spec: InstanceSpec, argv: Sequence[str], timeout: float = 60.0
    ) -> ExecResult:
        """Run ``argv`` like an instance of ``spec`` would run: same user, sandbox and
        limits, in a writable layer of its own that is discarded afterwards."""
        if not argv:
            raise InvalidInput("exec needs a command to run")
        self._check_app_dir(spec)
        name = f"{self._instance_dir(spec.instance_id).name}.exec-{secrets.token_hex(4)}"
        layer = self.state_dir / name
        make_private_dir(layer, self._dir_mode)
        dirs: dict[str, str] = {}
        try:
            if self._cgroups.available:
                dirs = self._cgroups.create(name, spec.memory_bytes, spec.cpu_millis)
            app = await asyncio.to_thread(self._layers.prepare, spec.app_dir, layer, self._user)
            command = self._argv(spec, app, layer, dirs, None, argv)
            env = instance_environment(spec, app)
            code, output = await run_collected(
                command, env, Path("/"), dirs, timeout, EXEC_OUTPUT_LIMIT, spec.instance_id
            )
        finally:
            if dirs:
                await Cgroups.remove(dirs)
            await asyncio.to_thread(shutil.rmtree, layer, True)
        if code is None:
            return ExecResult(exit_code=EXEC_TIMEOUT_EXIT, output=output)
        return ExecResult(exit_code=128 - code if code < 0 else code, output=output)

    async def remove(self, instance_id: str) -> None:
        inst = self._instances.get(instance_id)
        if inst is None:
            if (self._instance_dir(instance_id) / STATE_FILE).exists():
                raise RuntimeFailure(
                    f"instance {instance_id} is not managed by this agent; recover it first"
                )
            return
        await self.stop(instance_id)
        async with inst.lock:
            self._instances.pop(instance_id, None)
            if inst.cgroups:
                await Cgroups.remove(inst.cgroups)
            await asyncio.to_thread(shutil.rmtree, self._instance_dir(instance_id), True)

    async def close(self) -> None:
        """Stop supervising (the instances keep running; a new driver can recover them)."""
        for inst in builtins.list(self._instances.values()):
            await self._cancel_monitor(inst)
        self._instances.clear()
        self._cgroups.tidy()

    # ---- supervision ---------------------------------------------------------------------

    async def _supervise(self, inst: InstanceRecord) -> None:
        """Watch the instance's process; after each exit, start it again with backoff."""
        while True:
            if inst.pid is not None:
                self._exited(inst, await wait_exit(inst.pid, inst.pid_start))
            while True:
                delay = min(self.backoff_base * 2**inst.crashes, self.backoff_max)
                inst.crashes += 1
                await asyncio.sleep(delay)
                try:
                    await self._spawn(inst)
                except RuntimeFailure as exc:
                    inst.last_error = exc.detail
                    self._persist(inst)
                    continue
                inst.restarts += 1
                self._persist(inst)
                break

    def _exited(self, inst: InstanceRecord, code: int | None) -> None:
        """Record an unexpected exit and clean up what the instance left behind."""
        assert inst.pid is not None
        signal_group(inst.pid, inst.pid_start, signal.SIGKILL)
        Cgroups.kill(inst.cgroups)
        uptime = time.time() - inst.started_at.timestamp() if inst.started_at else 0.0
        if uptime >= STABLE_AFTER_SECONDS:
            inst.crashes = 0
        inst.exit_code = code
        inst.last_error = describe_exit(code)
        if inst.cgroups and Cgroups.oom_kills(inst.cgroups) > inst.oom_base:
            inst.last_error = (
                f"killed by the out-of-memory killer: the memory limit is "
                f"{inst.spec.memory_bytes} bytes ({inst.last_error})"
            )
        log.info("instance %s %s", inst.spec.instance_id, inst.last_error)
        inst.pid = inst.pid_start = None
        inst.state = InstanceState.BACKOFF
        self._persist(inst)

    async def _settle(self, inst: InstanceRecord, *, restart_dead: bool) -> None:
        """Take an instance found on disk back in hand.

        A live process that should be running is supervised again, never restarted. One
        that should not run (an agent died in the middle of stopping it), or whose main
        process is gone while others of it live on, is stopped. One that should be
        running but died while no agent was watching is started again, counting a
        restart, with ``restart_dead``; otherwise it is only remembered as stopped.
        """
        live = inst.pid is not None and alive(inst.pid, inst.pid_start)
        if inst.desired == "running" and live:
            inst.state = InstanceState.RUNNING
            inst.monitor = asyncio.create_task(self._supervise(inst))
        elif inst.desired == "running" and restart_dead:
            code = await reap(inst.pid) if inst.pid is not None else None
            if inst.pid is not None:
                self._exited(inst, code)
                inst.last_error = f"{inst.last_error} while the agent was away"
            inst.crashes = 0
            try:
                await self._spawn(inst)
            except RuntimeFailure as exc:
                inst.last_error = exc.detail
                inst.state = InstanceState.BACKOFF
            else:
                inst.restarts += 1
            self._persist(inst)
            inst.monitor = asyncio.create_task(self._supervise(inst))
        elif live or self._leftovers(inst):
            await self.stop(inst.spec.instance_id)
        else:
            inst.pid = inst.pid_start = None
            if inst.state in _ACTIVE:
                inst.state = InstanceState.STOPPED

    @staticmethod
    def _leftovers(inst: InstanceRecord) -> bool:
        """Whether processes of an instance whose main process is gone still run."""
        if inst.pid is None:
            return False
        return bool(instance_group(inst.pid, inst.pid_start) or Cgroups.members(inst.cgroups))

    async def _cancel_monitor(self, inst: InstanceRecord) -> None:
        task, inst.monitor = inst.monitor, None
        if task is None or task is asyncio.current_task():
            return
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task

    # ---- spawning ------------------------------------------------------------------------

    async def _spawn(self, inst: InstanceRecord) -> None:
        """Launch the instance's process tree, on a fresh app layer, and its log pump;
        no pipe leads to the agent."""
        spec = inst.spec
        self._check_app_dir(spec)
        idir = self._instance_dir(spec.instance_id)
        make_private_dir(idir, self._dir_mode)
        if self._cgroups.available:
            previous = inst.cgroups
            inst.cgroups = self._cgroups.create(
                spec.instance_id, spec.memory_bytes, spec.cpu_millis
            )
            for stale in set(previous.values()) - set(inst.cgroups.values()):
                with contextlib.suppress(OSError):  # left by an agent under another cgroup
                    os.rmdir(stale)
            inst.oom_base = Cgroups.oom_kills(inst.cgroups)
        app = await asyncio.to_thread(self._layers.prepare, spec.app_dir, idir, self._user)
        argv = self._argv(spec, app, idir, inst.cgroups, spec.command, ())
        env = instance_environment(spec, app)
        pid = spawn_with_log(argv, env, idir / LOG_FILE, spec.instance_id)
        inst.pid = pid
        inst.pid_start = process_start_time(pid)
        inst.started_at = datetime.now(UTC)
        inst.state = InstanceState.RUNNING

    def _argv(
        self,
        spec: InstanceSpec,
        app: Path,
        layer: Path,
        cgroups: dict[str, str],
        command: str | None,
        args: Sequence[str],
    ) -> builtins.list[str]:
        return instance_argv(
            app,
            command,
            args,
            cgroups=cgroups,
            sandbox=self._sandbox,
            hidden=[*self.hidden_paths, self.state_dir, self.state_dir.parent],
            user=self._user,
            prefix=self._layers.prefix(),
            setup=self._layers.mount_script(spec.app_dir, layer),
        )

    def _check_reachable(self) -> None:
        """Unsandboxed instances of another user must be able to enter ``state_dir``."""
        if self._sandbox.binary is not None or self._user is None:
            return
        blocked = self._user.blocked_at(self.state_dir)
        if blocked is not None:
            raise RuntimeUnavailable(
                f"instances run as uid {self._user.uid} without a sandbox and cannot reach "
                f"their app directories under {self.state_dir}: {blocked} is not searchable "
                f"by them (make it so with chmod o+x, keep the agent's state elsewhere, or "
                f"install bubblewrap)"
            )

    def _open_way(self, top: Path) -> None:
        """Make the existing directories from ``top`` down to ``state_dir`` searchable by
        others (search only: 0700 becomes 0711). Unsandboxed instances of another user
        enter their app directory by its host path, so every directory on the way must
        stay searchable; nothing on the way becomes listable or readable."""
        if not self.state_dir.is_relative_to(top):
            return
        current = top
        for part in ("", *self.state_dir.relative_to(top).parts):
            current = current / part
            try:
                mode = stat.S_IMODE(current.lstat().st_mode)
            except FileNotFoundError:
                return  # the rest is made 0711 as it is created
            if mode & 0o011 != 0o011:
                os.chmod(current, mode | 0o011)

    @staticmethod
    def _check_app_dir(spec: InstanceSpec) -> None:
        if not spec.app_dir.is_dir():
            raise RuntimeFailure(
                f"cannot start instance {spec.instance_id}: the app directory "
                f"{spec.app_dir} does not exist"
            )

    # ---- state ---------------------------------------------------------------------------

    def _instance_dir(self, instance_id: str) -> Path:
        if not instance_id or "/" in instance_id or instance_id in (".", ".."):
            raise InvalidInput(f"invalid instance id {instance_id!r}")
        return self.state_dir / instance_id

    def _require(self, instance_id: str) -> InstanceRecord:
        inst = self._instances.get(instance_id)
        if inst is None:
            raise RuntimeFailure(f"no instance {instance_id} on this runtime")
        return inst

    def _persist(self, inst: InstanceRecord) -> None:
        idir = self._instance_dir(inst.spec.instance_id)
        if idir.is_dir():
            write_state(idir, inst)

    async def _load_known(self, instance_id: str) -> InstanceRecord | None:
        """An instance this driver has no record of yet but that is on disk, live or not,
        settled (see ``_settle``) so that a ``start`` that follows never runs a second
        copy; a dead one is only remembered, so that ``start`` starts it afresh."""
        try:
            inst = read_state(self._instance_dir(instance_id) / STATE_FILE)
        except (OSError, ValueError, KeyError, TypeError):
            return None
        self._instances[instance_id] = inst
        await self._settle(inst, restart_dead=False)
        return inst
