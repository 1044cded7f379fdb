"""The process runtime: each instance is a host process tree, supervised by the agent.

An instance runs ``/bin/sh -c`` in its own session (so its process group is the instance),
with a clean environment (the release's config plus ``PORT``, ``HOME``, ``PATH`` and
``LANG``), after sourcing ``$HOME/.profile.d/*.sh`` the way Heroku-style builds expect.
Where the host allows it the instance also gets:

* a cgroup (v2, or the v1 ``memory``/``cpu``/``cpuacct`` controllers on hybrid hosts)
  carrying ``memory_bytes`` and ``cpu_millis`` as hard limits;
* a bubblewrap sandbox: the host's root read-only, private ``/dev``, ``/proc`` (own PID
  namespace) and ``/tmp``, the agent's state and every configured hidden path masked, and
  only the instance's own app directory writable, mounted at ``/app`` (its ``HOME`` and
  working directory, as on Heroku: short enough for the Unix socket paths servers make
  under it).

Every instance also gets:

* its own writable layer over the read-only slug (:mod:`.layer`): an overlay in a private
  mount namespace, or a private copy; writes stay private to the instance and are
  discarded when it starts again. The instance's app directory is
  ``<state_dir>/<instance_id>/app`` on the host (and ``HOME`` without a sandbox);
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

from shellwego.errors import (
    InvalidInput,
    PortInUse,
    RuntimeFailure,
    RuntimeUnavailable,
    WaitingForConfig,
)
from shellwego.files import make_private_dir

from .cgroups import Cgroups
from .command import home_dir, instance_argv, instance_environment, run_collected
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
from .network import InstanceNet, NodeNetwork
from .ports import held_by, port_in_use
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

__all__ = [
    "EXEC_OUTPUT_LIMIT",
    "EXEC_TIMEOUT_EXIT",
    "STABLE_AFTER_SECONDS",
    "WAITING_FOR_ENV",
    "ProcessDriver",
]

log = logging.getLogger(__name__)

EXEC_OUTPUT_LIMIT = 1024 * 1024
STABLE_AFTER_SECONDS = 30.0
EXEC_TIMEOUT_EXIT = 124
WAITING_FOR_ENV = (
    "waiting for its configuration from the control plane (the agent restarted and keeps "
    "configuration in memory only)"
)

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
        pids_limit: int | None = 512,
        nofile_limit: int | None = 10240,
        network: NodeNetwork | None = None,
        reachable_from: Path | None = None,
    ) -> None:
        """``run_as``: the uid/gid instances whose spec names no uid of their own run as
        when this process is root (None: as root too). ``hidden_paths``: what instances
        must not see (the platform's data). ``pids_limit``: processes per instance (a pids
        cgroup); ``nofile_limit``: open files per process (RLIMIT_NOFILE). ``network``:
        the node network instances get a namespace of their own on (None, or a host that
        cannot have one: they share the host's network and listen on host ports).
        ``reachable_from``: a private directory of the platform's above ``state_dir``
        (its data directory); instances that must reach their app directory by its host
        path (unsandboxed, as another user) get the directories from it down made
        search-only for others (0711: entered, never listed)."""
        self.state_dir = Path(state_dir).resolve()
        self.backoff_base = backoff_base
        self.backoff_max = backoff_max
        self.hidden_paths = tuple(Path(p) for p in hidden_paths)
        self.pids_limit = pids_limit
        self.nofile_limit = nofile_limit
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
        elif pids_limit is not None and not self._cgroups.pids_limit:
            self._notes.append("no pids cgroup controller: the process count is not limited")
        if sandbox is False:
            self._sandbox = Sandbox(None, note="sandboxing is disabled by configuration")
            self._notes.append(
                f"{self._sandbox.note}: instances see their app directory (HOME) at its "
                "host path instead of /app"
            )
        else:
            self._sandbox = Sandbox.detect()
            if sandbox and self._sandbox.binary is None:
                raise RuntimeUnavailable(f"a sandbox was requested: {self._sandbox.note}")
            if self._sandbox.note:
                self._notes.append(
                    f"{self._sandbox.note}: instances are not sandboxed, and see their app "
                    "directory (HOME) at its host path instead of /app"
                )
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
        self._network = network
        if network is None:
            self._notes.append("instances share the host's network (host ports)")

    # ---- protocol ------------------------------------------------------------------------

    def capabilities(self) -> Capabilities:
        isolation = ["process-group"]
        if self._cgroups.available:
            isolation.append(f"cgroup-v{self._cgroups.version}")
        if self._sandbox.binary is not None:
            isolation.append("bwrap")
        isolation.append(self._layers.label)
        if self._user is not None:
            isolation.append("uid-per-app")
        if self._network is not None:
            isolation.append("netns")
        return Capabilities(
            runtime=self.name,
            available=True,
            isolation=tuple(isolation),
            memory_limit=self._cgroups.available,
            cpu_limit=self._cgroups.available and self._cgroups.cpu_limit,
            notes=tuple(self._notes),
        )

    async def prepare(self, spec: InstanceSpec) -> None:
        """Make the instance ready to start; an instance already running that was read
        back from disk gets its environment (which is never written) from ``spec``."""
        inst = self._instances.get(spec.instance_id)
        if inst is None:
            inst = await self._load_known(spec.instance_id) or InstanceRecord(spec=spec)
            self._instances[spec.instance_id] = inst
        if inst.state not in _ACTIVE:
            inst.spec = spec
            inst.env_ready.set()
        else:
            inst.provide_env(spec.env)
        make_private_dir(self._instance_dir(spec.instance_id), self._dir_mode)
        if self._cgroups.available and not inst.cgroups:
            inst.cgroups = self._create_cgroups(spec.instance_id, spec)
        self._persist(inst)

    async def start(self, spec: InstanceSpec) -> InstanceStatus:
        await self.prepare(spec)
        inst = self._instances[spec.instance_id]
        async with inst.lock:
            if inst.desired == "running" and inst.state in _ACTIVE:
                return inst.status()
            inst.spec = spec
            inst.env_ready.set()
            inst.desired = "running"
            inst.crashes = 0
            try:
                await self._spawn(inst)
            except RuntimeFailure as exc:
                inst.desired = "stopped"
                inst.state = InstanceState.EXITED
                inst.failed(exc)
                self._persist(inst)
                raise
            inst.exit_code = None
            inst.last_error = inst.error_code = None
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
            if inst.net is not None and inst.pid is not None and not await self._net_kept(inst):
                # its network namespace is gone (a reboot, an operator): it cannot be
                # reached; stopped here, the agent starts it again on a fresh one
                log.warning("instance %s lost its network; stopping it", inst.spec.instance_id)
                await self.stop(inst.spec.instance_id)
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
                dirs = self._create_cgroups(name, spec)
            user = self._user_for(spec)
            app = await asyncio.to_thread(self._layers.prepare, spec.directory, layer, user)
            env = instance_environment(spec, home_dir(app, self._sandbox))
            network = self._network
            async with contextlib.AsyncExitStack() as stack:
                net = await stack.enter_async_context(network.session(name)) if network else None
                command = self._argv(spec, app, layer, dirs, None, argv, net)
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
                await Cgroups.remove(inst.cgroups)  # every process of it is gone now
            if inst.net is not None and self._network is not None:
                await self._network.detach(instance_id)
            await asyncio.to_thread(shutil.rmtree, self._instance_dir(instance_id), True)

    async def close(self) -> None:
        """Stop supervising (the instances keep running; a new driver can recover them)."""
        for inst in builtins.list(self._instances.values()):
            await self._cancel_monitor(inst)
        self._instances.clear()
        self._cgroups.tidy()
        if self._network is not None:
            await self._network.close()

    async def teardown_network(self) -> None:
        """Remove the node network (bridge, rules, every namespace): only once no instance
        of this driver runs any more, e.g. when the whole platform stops."""
        if self._network is not None:
            await self._network.teardown()

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
                await inst.env_ready.wait()
                try:
                    await self._spawn(inst)
                except RuntimeFailure as exc:
                    inst.failed(exc)
                    self._persist(inst)
                    continue
                inst.restarts += 1
                inst.error_code = None  # running again: the exit stays the last error
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
        inst.error_code = None
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
            inst.state = InstanceState.BACKOFF
            if not inst.env_ready.is_set():
                # read back from disk: it starts again once the agent hands it its
                # environment (the supervisor waits for that)
                inst.last_error = f"{inst.last_error}; {WAITING_FOR_ENV}"
                inst.error_code = WaitingForConfig.slug
            else:
                try:
                    await self._spawn(inst)
                except RuntimeFailure as exc:
                    inst.failed(exc)
                else:
                    inst.restarts += 1
                    inst.error_code = None
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
        if not inst.env_ready.is_set():
            raise WaitingForConfig(WAITING_FOR_ENV)
        self._check_app_dir(spec)
        network = await self._node_network()
        net: InstanceNet | None = None
        if network is not None:
            net = await network.attach(spec.instance_id)  # the same address every start
            inst.net = net.to_json()
        elif await asyncio.to_thread(port_in_use, spec.port):
            raise PortInUse(
                f"port {spec.port} is already in use on this host by a program that is not "
                f"this instance"
            )
        idir = self._instance_dir(spec.instance_id)
        make_private_dir(idir, self._dir_mode)
        if self._cgroups.available:
            previous = inst.cgroups
            inst.cgroups = self._create_cgroups(spec.instance_id, spec)
            for stale in set(previous.values()) - set(inst.cgroups.values()):
                with contextlib.suppress(OSError):  # left by an agent under another cgroup
                    os.rmdir(stale)
            inst.oom_base = Cgroups.oom_kills(inst.cgroups)
        user = self._user_for(spec)
        app = await asyncio.to_thread(self._layers.prepare, spec.directory, idir, user)
        argv = self._argv(spec, app, idir, inst.cgroups, spec.command, (), net)
        env = instance_environment(spec, home_dir(app, self._sandbox))
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
        net: InstanceNet | None = None,
    ) -> builtins.list[str]:
        prefix = self._layers.prefix()
        setup = self._layers.mount_script(spec.directory, layer)
        if net is not None:
            # in its network namespace, and a private mount namespace for its resolv.conf
            prefix = [*net.enter_argv(), *(prefix or self._layers.private_mounts())]
            setup += net.mount_script()
        return instance_argv(
            app,
            command,
            args,
            cgroups=cgroups,
            sandbox=self._sandbox,
            hidden=[*self.hidden_paths, self.state_dir, self.state_dir.parent],
            user=self._user_for(spec),
            prefix=prefix,
            setup=setup,
            nofile=self.nofile_limit,
        )

    async def _node_network(self) -> NodeNetwork | None:
        """The node network, set up on first use; None when instances share the host's."""
        if self._network is not None:
            await self._network.ready()
        return self._network

    async def _net_kept(self, inst: InstanceRecord) -> bool:
        """Whether a re-adopted instance's network namespace is still in place."""
        network = await self._node_network()
        return network is not None and await network.adopt(inst.spec.instance_id) is not None

    def _user_for(self, spec: InstanceSpec) -> RunUser | None:
        """Who the instance runs as: its app's own uid (and gid) when this process is root
        and the spec names one, else the default unprivileged user (or, not root, us)."""
        if self._user is None or spec.uid is None:
            return self._user
        return RunUser(spec.uid, spec.uid, self._user.setpriv)

    def _create_cgroups(self, name: str, spec: InstanceSpec) -> dict[str, str]:
        return self._cgroups.create(name, spec.memory_bytes, spec.cpu_millis, self.pids_limit)

    async def owns_listener(self, instance_id: str, port: int) -> bool:
        """Whether the sockets listening on ``port`` on the host are all the instance's own
        (False when nothing listens, or a process that is not the instance does)."""
        inst = self._instances.get(instance_id)
        if inst is None or inst.pid is None:
            return False
        members = Cgroups.members(inst.cgroups) if inst.cgroups else set()
        members |= set(instance_group(inst.pid, inst.pid_start))
        return await asyncio.to_thread(held_by, port, members) is True

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
        if spec.app_dir is None or not spec.app_dir.is_dir():
            raise RuntimeFailure(
                f"cannot start instance {spec.instance_id}: the app directory "
                f"{spec.app_dir or '(none)'} does not exist"
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
