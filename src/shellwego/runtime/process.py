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

Instances are not tied to the agent: no pipes lead back to it, output goes through a
small log pump (its own session) into ``<state_dir>/<instance_id>/output.log``, each line
stamped with the time it was written and its stream, rotated past :data:`LOG_LIMIT_BYTES`.
Everything needed to find an instance again (spec, pid, the pid's start time, restart
count, desired state, cgroup paths) is kept in ``state.json`` next to it, so a restarted
agent re-adopts running instances through :meth:`ProcessDriver.recover`.

The agent restarts crashed instances with exponential backoff (``backoff_base * 2**n``,
capped at ``backoff_max``; ``n`` goes back to 0 once an instance has stayed up for
:data:`STABLE_AFTER_SECONDS`).
"""

from __future__ import annotations

import asyncio
import builtins
import contextlib
import fcntl
import json
import logging
import os
import secrets
import shlex
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import AsyncIterator, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from shellwego.errors import InvalidInput, RuntimeFailure, RuntimeUnavailable

from .driver import (
    Capabilities,
    ExecResult,
    InstanceSpec,
    InstanceState,
    InstanceStats,
    InstanceStatus,
    LogLine,
)

log = logging.getLogger(__name__)

STATE_FILE = "state.json"
LOG_FILE = "output.log"
LOG_LIMIT_BYTES = 4 * 1024 * 1024
EXEC_OUTPUT_LIMIT = 1024 * 1024
STABLE_AFTER_SECONDS = 30.0
POLL_SECONDS = 0.1
BASE_PATH = "/usr/local/bin:/usr/bin:/bin"
CGROUP_PARENT = "shellwego"
EXEC_TIMEOUT_EXIT = 124

_ACTIVE = (InstanceState.STARTING, InstanceState.RUNNING, InstanceState.BACKOFF)
_CLK_TCK = os.sysconf("SC_CLK_TCK")
_PAGE_SIZE = os.sysconf("SC_PAGE_SIZE")

# The log pump: reads the app's stdout (fd 0) and stderr (fd 3) until both are closed and
# appends "<UTC timestamp> <stream> <line>" lines to the log file, rotating it to ".1".
_LOG_PUMP = r"""
import os, select, signal, sys, time
signal.signal(signal.SIGINT, signal.SIG_IGN)
signal.signal(signal.SIGHUP, signal.SIG_IGN)
path, limit = sys.argv[1], int(sys.argv[2])
names = {0: b"stdout", 3: b"stderr"}
pending = {0: b"", 3: b""}
out = open(path, "ab")
def emit(fd, line):
    global out
    now = time.time()
    stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(now)) + ".%06dZ" % int(now % 1 * 1e6)
    out.write(stamp.encode() + b" " + names[fd] + b" " + line + b"\n")
    if out.tell() > limit:
        out.close()
        os.replace(path, path + ".1")
        out = open(path, "ab")
open_fds = [0, 3]
while open_fds:
    ready, _, _ = select.select(open_fds, [], [])
    for fd in ready:
        data = os.read(fd, 65536)
        if not data:
            if pending[fd]:
                emit(fd, pending[fd])
            open_fds.remove(fd)
            continue
        lines = (pending[fd] + data).split(b"\n")
        pending[fd] = lines.pop()
        if len(pending[fd]) > 65536:
            lines.append(pending[fd])
            pending[fd] = b""
        for line in lines:
            emit(fd, line)
    out.flush()
out.close()
"""

# Words that cannot follow ``exec`` (shell keywords and builtins); commands starting with
# them, and compound commands, run under the shell instead of replacing it.
_SHELL_WORDS = frozenset(
    {
        "!", "{", "(", "[[", ".", ":", "alias", "case", "cd", "eval", "exec", "exit", "export",
        "for", "if", "local", "read", "readonly", "return", "set", "shift", "source", "trap",
        "ulimit", "umask", "unset", "until", "wait", "while",
    }
)  # fmt: skip
_COMPOUND_TOKENS = frozenset({";", "&", "&&", "|", "||", "(", ")", ";;", "|&"})


# ---- /proc ------------------------------------------------------------------------------


def _stat_fields(pid: int) -> list[str] | None:
    """Fields of /proc/<pid>/stat from field 3 (state) on; None when there is no such pid."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            raw = fh.read()
    except (FileNotFoundError, ProcessLookupError):
        return None
    return raw[raw.rindex(b")") + 2 :].decode().split()


def process_start_time(pid: int) -> int | None:
    """Start time of a live (non-zombie) process in clock ticks (stat field 22), else None."""
    fields = _stat_fields(pid)
    if fields is None or fields[0] in ("Z", "X"):
        return None
    return int(fields[19])


def _alive(pid: int, start: int | None) -> bool:
    now = process_start_time(pid)
    return now is not None and (start is None or now == start)


def _group_members(pgid: int) -> list[int]:
    """Live processes of a process group."""
    members = []
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        fields = _stat_fields(int(entry.name))
        if fields is not None and fields[0] not in ("Z", "X") and int(fields[2]) == pgid:
            members.append(int(entry.name))
    return members


def _reused(pgid: int, start: int | None) -> bool:
    """Whether the number ``pgid`` now belongs to a process other than the one started then.

    While the leader (even as a zombie) or any member of a group exists, the kernel keeps
    its number reserved; only when ``/proc/<pgid>`` shows a different start time has it been
    handed to an unrelated process, whose group must not be signalled.
    """
    fields = _stat_fields(pgid)
    return fields is not None and start is not None and int(fields[19]) != start


def _instance_group(pgid: int, start: int | None) -> list[int]:
    return [] if _reused(pgid, start) else _group_members(pgid)


def _signal_group(pgid: int, start: int | None, sig: signal.Signals) -> None:
    if not _reused(pgid, start):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pgid, sig)


def _group_usage(pgid: int) -> tuple[int, int]:
    """(cpu ns, resident bytes) summed over a process group's live members."""
    cpu = mem = 0
    for pid in _group_members(pgid):
        fields = _stat_fields(pid)
        if fields is None:
            continue
        cpu += (int(fields[11]) + int(fields[12])) * 1_000_000_000 // _CLK_TCK
        mem += int(fields[21]) * _PAGE_SIZE
    return cpu, mem


def _exit_code(status: int) -> int:
    code = os.waitstatus_to_exitcode(status)
    return 128 - code if code < 0 else code


def _describe_exit(code: int | None) -> str:
    if code is None:
        return "exited (exit status unknown: the process was not a child of this agent)"
    if 128 < code <= 128 + 64:
        try:
            name = signal.Signals(code - 128).name
        except ValueError:
            name = f"signal {code - 128}"
        return f"exited with code {code} (killed by {name})"
    return f"exited with code {code}"


# ---- cgroups ----------------------------------------------------------------------------


def cgroup_mounts() -> list[tuple[str, Path, set[str]]]:
    """Mounted cgroup hierarchies as (fstype, mount point, mount options)."""
    found = []
    with contextlib.suppress(OSError):
        for line in Path("/proc/self/mounts").read_text().splitlines():
            parts = line.split()
            if len(parts) >= 4 and parts[2] in ("cgroup", "cgroup2"):
                found.append((parts[2], Path(parts[1]), set(parts[3].split(","))))
    return found


def own_cgroups() -> dict[str, str]:
    """This process's cgroup path per v1 controller, and under ``""`` for cgroup v2."""
    paths: dict[str, str] = {}
    with contextlib.suppress(OSError):
        for line in Path("/proc/self/cgroup").read_text().splitlines():
            _, controllers, path = line.split(":", 2)
            for name in controllers.split(",") if controllers else [""]:
                paths[name] = path
    return paths


def _write(path: Path, value: str) -> None:
    with open(path, "w") as fh:
        fh.write(value)


def _read_keyed(path: Path, key: str) -> int | None:
    """The value of ``key`` in a flat-keyed cgroup file (``memory.stat``, ``cpu.stat``...)."""
    try:
        for line in path.read_text().splitlines():
            name, _, value = line.partition(" ")
            if name == key:
                return int(value)
    except (OSError, ValueError):
        return None
    return None


def _read_int(path: Path) -> int | None:
    try:
        return int(path.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None


class Cgroups:
    """Per-instance cgroups under a ``shellwego`` subtree, on v2 or on v1 controllers.

    On cgroup v2 the subtree is ``<mount>/shellwego`` with ``memory`` and ``cpu`` enabled
    for its children. On v1 (hybrid hosts) it is ``shellwego`` under this process's own
    cgroup in the ``memory``, ``cpu`` and ``cpuacct`` hierarchies, so whatever limits the
    agent runs under still bound its instances.
    """

    def __init__(self, version: int, parents: Mapping[str, Path], note: str | None) -> None:
        self.version = version
        self.parents = dict(parents)
        self.note = note

    @property
    def available(self) -> bool:
        return self.version != 0

    @property
    def cpu_limit(self) -> bool:
        return "unified" in self.parents or "cpu" in self.parents

    @classmethod
    def detect(cls) -> Cgroups:
        mounts = cgroup_mounts()
        own = own_cgroups()
        notes = []
        for fstype, mount, _ in mounts:
            if fstype != "cgroup2":
                continue
            try:
                controllers = set((mount / "cgroup.controllers").read_text().split())
            except OSError:
                continue
            if not {"memory", "cpu"} <= controllers:
                continue
            parent = mount / CGROUP_PARENT
            try:
                parent.mkdir(exist_ok=True)
                with contextlib.suppress(OSError):
                    _write(mount / "cgroup.subtree_control", "+memory +cpu")
                _write(parent / "cgroup.subtree_control", "+memory +cpu")
                return cls(2, {"unified": parent}, None)
            except OSError as exc:
                notes.append(f"cgroup v2 at {mount} is not writable ({exc.strerror})")
        v1: dict[str, Path] = {}
        for fstype, mount, options in mounts:
            if fstype != "cgroup":
                continue
            for name in ("memory", "cpu", "cpuacct"):
                if name in options and name not in v1:
                    v1[name] = mount / own.get(name, "/").lstrip("/") / CGROUP_PARENT
        if "memory" in v1:
            try:
                for path in v1.values():
                    path.mkdir(exist_ok=True)
                found = cls(1, v1, None)
                found.tidy()  # created again with the first instance
                return found
            except OSError as exc:
                notes.append(f"cgroup v1 controllers are not writable ({exc.strerror})")
        if not notes:
            notes.append("no cgroup memory controller is mounted")
        return cls(0, {}, "; ".join(notes) + ": instances run without memory/CPU limits")

    def tidy(self) -> None:
        """Remove the v1 ``shellwego`` parents if no instance cgroup is left in them."""
        if self.version == 1:
            for parent in set(self.parents.values()):
                with contextlib.suppress(OSError):
                    parent.rmdir()

    def create(self, name: str, memory_bytes: int, cpu_millis: int) -> dict[str, str]:
        """Create (or update) the cgroups of one instance; returns their paths by role."""
        dirs: dict[str, str] = {}
        try:
            for role, parent in self.parents.items():
                path = parent / name
                if self.version == 1:
                    parent.mkdir(exist_ok=True)
                path.mkdir(exist_ok=True)
                dirs[role] = str(path)
                if role == "unified":
                    _write(path / "memory.max", str(memory_bytes))
                    if (path / "memory.swap.max").exists():
                        _write(path / "memory.swap.max", "0")
                    _write(path / "cpu.max", f"{cpu_millis * 100} 100000")
                elif role == "memory":
                    self._v1_memory(path, memory_bytes)
                elif role == "cpu":
                    _write(path / "cpu.cfs_period_us", "100000")
                    _write(path / "cpu.cfs_quota_us", str(cpu_millis * 100))
        except OSError as exc:
            raise RuntimeFailure(f"cannot set up the cgroup of {name}: {exc.strerror}") from exc
        return dirs

    @staticmethod
    def _v1_memory(path: Path, memory_bytes: int) -> None:
        limit, memsw = path / "memory.limit_in_bytes", path / "memory.memsw.limit_in_bytes"
        if not memsw.exists():
            _write(limit, str(memory_bytes))
            return
        try:  # memsw must stay >= limit: the order depends on raising or lowering
            _write(limit, str(memory_bytes))
            _write(memsw, str(memory_bytes))
        except OSError:
            _write(memsw, str(memory_bytes))
            _write(limit, str(memory_bytes))

    @staticmethod
    def procs_files(dirs: Mapping[str, str]) -> list[str]:
        return sorted({str(Path(d) / "cgroup.procs") for d in dirs.values()})

    @staticmethod
    def members(dirs: Mapping[str, str]) -> set[int]:
        pids: set[int] = set()
        for d in set(dirs.values()):
            with contextlib.suppress(OSError, ValueError):
                pids.update(int(p) for p in (Path(d) / "cgroup.procs").read_text().split())
        return pids

    @staticmethod
    def usage(dirs: Mapping[str, str]) -> tuple[int | None, int | None]:
        """(cpu ns, memory bytes without reclaimable page cache), where the cgroup says."""
        cpu = mem = None
        if "unified" in dirs:
            d = Path(dirs["unified"])
            usec = _read_keyed(d / "cpu.stat", "usage_usec")
            cpu = None if usec is None else usec * 1000
            current = _read_int(d / "memory.current")
            inactive = _read_keyed(d / "memory.stat", "inactive_file") or 0
            mem = None if current is None else max(current - inactive, 0)
        if "cpuacct" in dirs:
            cpu = _read_int(Path(dirs["cpuacct"]) / "cpuacct.usage")
        if "memory" in dirs:
            d = Path(dirs["memory"])
            current = _read_int(d / "memory.usage_in_bytes")
            inactive = _read_keyed(d / "memory.stat", "total_inactive_file") or 0
            mem = None if current is None else max(current - inactive, 0)
        return cpu, mem

    @staticmethod
    def oom_kills(dirs: Mapping[str, str]) -> int:
        if "unified" in dirs:
            return _read_keyed(Path(dirs["unified"]) / "memory.events", "oom_kill") or 0
        if "memory" in dirs:
            return _read_keyed(Path(dirs["memory"]) / "memory.oom_control", "oom_kill") or 0
        return 0

    @classmethod
    def kill(cls, dirs: Mapping[str, str]) -> None:
        for pid in cls.members(dirs):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)

    @classmethod
    async def remove(cls, dirs: Mapping[str, str]) -> None:
        """Kill what is left in the cgroups and delete them (and v1 parents left empty)."""
        deadline = time.monotonic() + 5.0
        for d in sorted(set(dirs.values())):
            while True:
                cls.kill({"d": d})
                try:
                    os.rmdir(d)
                    break
                except FileNotFoundError:
                    break
                except OSError as exc:
                    if time.monotonic() > deadline:
                        log.warning("cannot remove cgroup %s: %s", d, exc.strerror)
                        break
                    await asyncio.sleep(0.02)
        for d in set(dirs.values()):
            parent = Path(d).parent
            if parent.name == CGROUP_PARENT and not (parent / "cgroup.subtree_control").exists():
                with contextlib.suppress(OSError):
                    parent.rmdir()


# ---- sandbox ----------------------------------------------------------------------------

_BWRAP_ISOLATION = (
    "--unshare-pid", "--unshare-ipc", "--unshare-uts", "--unshare-cgroup-try",
    "--cap-drop", "ALL",
)  # fmt: skip


@dataclass(frozen=True, slots=True)
class Sandbox:
    """How bubblewrap is invoked on this host, or why it is not used."""

    binary: str | None
    extra: tuple[str, ...] = ()
    note: str | None = None

    @classmethod
    def detect(cls) -> Sandbox:
        binary = shutil.which("bwrap")
        if binary is None:
            return cls(
                None, note="bubblewrap (bwrap) is not installed: instances are not sandboxed"
            )
        base = [binary, "--ro-bind", "/", "/", "--dev", "/dev", "--proc", "/proc"]
        base += ["--tmpfs", "/tmp", *_BWRAP_ISOLATION]
        error = ""
        for extra in ((), ("--unshare-user",)):
            try:
                done = subprocess.run(
                    [*base, *extra, "/bin/true"],
                    stdin=subprocess.DEVNULL,
                    capture_output=True,
                    timeout=20,
                    check=False,
                )
            except (OSError, subprocess.TimeoutExpired) as exc:
                error = str(exc)
                continue
            if done.returncode == 0:
                return cls(binary, extra)
            lines = done.stderr.decode(errors="replace").strip().splitlines()
            error = lines[-1] if lines else f"exit code {done.returncode}"
        return cls(None, note=f"bubblewrap cannot create a sandbox here ({error}): not sandboxed")

    def argv(
        self,
        app_dir: Path,
        hidden: Iterable[Path],
        inner: Sequence[str],
        binds: Sequence[Path] = (),
    ) -> list[str]:
        """bwrap argv: read-only host, private /dev /proc /tmp, ``hidden`` masked, app rw
        (and ``binds`` rw too: they may lie inside a hidden path)."""
        assert self.binary is not None
        app_dir = app_dir.resolve()
        argv = [self.binary, "--ro-bind", "/", "/", "--dev", "/dev", "--proc", "/proc"]
        argv += ["--tmpfs", "/tmp"]
        outside: list[str] = []
        inside: list[str] = []  # masks within the app dir go on top of its bind
        masked: list[Path] = []
        for path in sorted({p.resolve() for p in hidden}, key=lambda p: len(p.parts)):
            if path == Path("/") or any(path.is_relative_to(m) for m in masked):
                continue
            if path.is_dir():
                mask = ["--tmpfs", str(path)]
            elif path.exists():
                mask = ["--ro-bind", "/dev/null", str(path)]
            else:
                continue
            masked.append(path)
            target = inside if path.is_relative_to(app_dir) and path != app_dir else outside
            target += mask
        argv += [*outside, "--bind", str(app_dir), str(app_dir), *inside]
        for extra in binds:
            argv += ["--bind", str(extra.resolve()), str(extra.resolve())]
        argv += ["--chdir", str(app_dir), *_BWRAP_ISOLATION, *self.extra, "--", *inner]
        return argv


# ---- the driver -------------------------------------------------------------------------


@dataclass(eq=False)
class _Instance:
    spec: InstanceSpec
    desired: str = "pending"  # "pending" | "running" | "stopped"
    state: InstanceState = InstanceState.PENDING
    pid: int | None = None
    pid_start: int | None = None
    restarts: int = 0
    exit_code: int | None = None
    started_at: datetime | None = None
    last_error: str | None = None
    cgroups: dict[str, str] = field(default_factory=dict)
    crashes: int = 0
    oom_base: int = 0
    monitor: asyncio.Task[None] | None = None
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)

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
        )


def _spec_to_json(spec: InstanceSpec) -> dict[str, Any]:
    return {
        "instance_id": spec.instance_id,
        "app_id": spec.app_id,
        "app_name": spec.app_name,
        "process_type": spec.process_type,
        "release_id": spec.release_id,
        "command": spec.command,
        "app_dir": str(spec.app_dir),
        "env": dict(spec.env),
        "port": spec.port,
        "memory_bytes": spec.memory_bytes,
        "cpu_millis": spec.cpu_millis,
        "runtime": spec.runtime,
    }


def _spec_from_json(data: Mapping[str, Any]) -> InstanceSpec:
    values = dict(data)
    values["app_dir"] = Path(values["app_dir"])
    values["env"] = dict(values["env"])
    return InstanceSpec(**values)


def exec_form(command: str) -> str:
    """``exec <command>`` when the command is one plain program invocation, else as is."""
    if "\n" in command:
        return command
    lexer = shlex.shlex(command, posix=True, punctuation_chars=True)
    lexer.whitespace_split = True
    try:
        tokens = builtins.list(lexer)
    except ValueError:
        return command
    if not tokens or any(t in _COMPOUND_TOKENS for t in tokens):
        return command
    first = tokens[0]
    if first in _SHELL_WORDS or "=" in first.split("/")[0]:
        return command
    return f"exec {command}"


def _fd_above(fd: int, floor: int = 10) -> int:
    """Move ``fd`` to a number >= ``floor`` (close-on-exec) so dup2 targets never collide."""
    moved = fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, floor)
    os.close(fd)
    return moved


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
    ) -> None:
        self.state_dir = Path(state_dir).resolve()
        self.backoff_base = backoff_base
        self.backoff_max = backoff_max
        self.hidden_paths = tuple(Path(p) for p in hidden_paths)
        self._notes: list[str] = []
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
        else:
            self._sandbox = Sandbox.detect()
            if sandbox and self._sandbox.binary is None:
                raise RuntimeUnavailable(f"a sandbox was requested: {self._sandbox.note}")
        if self._sandbox.note:
            self._notes.append(self._sandbox.note)
        self._instances: dict[str, _Instance] = {}

    # ---- protocol ------------------------------------------------------------------------

    def capabilities(self) -> Capabilities:
        isolation = ["process-group"]
        if self._cgroups.available:
            isolation.append(f"cgroup-v{self._cgroups.version}")
        if self._sandbox.binary is not None:
            isolation.append("bwrap")
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
            inst = self._load_known(spec.instance_id) or _Instance(spec=spec)
            self._instances[spec.instance_id] = inst
        elif inst.state not in _ACTIVE:
            inst.spec = spec
        self._instance_dir(spec.instance_id).mkdir(parents=True, exist_ok=True, mode=0o700)
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
                self._spawn(inst)
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
                    inst.exit_code = await self._terminate(inst, grace_seconds)
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
                data = json.loads(path.read_text())
                spec = _spec_from_json(data["spec"])
            except (OSError, ValueError, KeyError, TypeError) as exc:
                log.warning("ignoring unreadable instance state %s: %s", path, exc)
                continue
            if spec.instance_id in self._instances:
                continue
            inst = self._load(spec, data)
            self._instances[spec.instance_id] = inst
            await self._readopt(inst)
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
            if inst.pid is not None and not _reused(inst.pid, inst.pid_start):
                group_cpu, group_mem = _group_usage(inst.pid)
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
        reader = _LogReader(path)
        backlog = _read_lines(path.with_name(LOG_FILE + ".1")) + reader.read()
        if tail is not None:
            backlog = backlog[-tail:] if tail > 0 else []
        try:
            for raw in backlog:
                yield _parse_line(instance_id, raw)
            while follow and instance_id in self._instances:
                lines = reader.read()
                if not lines:
                    await asyncio.sleep(POLL_SECONDS)
                    continue
                for raw in lines:
                    yield _parse_line(instance_id, raw)
        finally:
            reader.close()

    async def exec(
        self, spec: InstanceSpec, argv: Sequence[str], timeout: float = 60.0
    ) -> ExecResult:
        if not argv:
            raise InvalidInput("exec needs a command to run")
        self._check_app_dir(spec)
        dirs: dict[str, str] = {}
        if self._cgroups.available:
            name = f"{spec.instance_id}.exec-{secrets.token_hex(4)}"
            dirs = self._cgroups.create(name, spec.memory_bytes, spec.cpu_millis)
        try:
            command = self._argv(spec, dirs, None, argv)
            try:
                proc = await asyncio.create_subprocess_exec(
                    *command,
                    stdin=subprocess.DEVNULL,
                    stdout=subprocess.PIPE,
                    stderr=subprocess.STDOUT,
                    env=self._environment(spec),
                    cwd=spec.app_dir,
                    start_new_session=True,
                )
            except OSError as exc:
                raise RuntimeFailure(
                    f"cannot run a command for {spec.instance_id}: {exc.strerror}"
                ) from exc
            output = bytearray()
            reader = asyncio.create_task(_drain(proc.stdout, output, EXEC_OUTPUT_LIMIT))
            timed_out = False
            try:
                await asyncio.wait_for(proc.wait(), timeout)
            except TimeoutError:
                timed_out = True
            finally:
                if proc.returncode is None or _group_members(proc.pid):  # leftovers only
                    with contextlib.suppress(ProcessLookupError):
                        os.killpg(proc.pid, signal.SIGKILL)
                Cgroups.kill(dirs)
                await proc.wait()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(asyncio.shield(reader), 2.0)
                reader.cancel()
        finally:
            if dirs:
                await Cgroups.remove(dirs)
        text = bytes(output).decode(errors="replace")
        if timed_out:
            return ExecResult(exit_code=EXEC_TIMEOUT_EXIT, output=text)
        code = proc.returncode if proc.returncode is not None else 1
        return ExecResult(exit_code=128 - code if code < 0 else code, output=text)

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
            shutil.rmtree(self._instance_dir(instance_id), ignore_errors=True)

    async def close(self) -> None:
        """Stop supervising (the instances keep running; a new driver can recover them)."""
        for inst in builtins.list(self._instances.values()):
            await self._cancel_monitor(inst)
        self._instances.clear()
        self._cgroups.tidy()

    # ---- supervision ---------------------------------------------------------------------

    async def _supervise(self, inst: _Instance) -> None:
        """Watch the instance's process; after each exit, start it again with backoff."""
        while True:
            if inst.pid is not None:
                self._exited(inst, await _wait_exit(inst.pid, inst.pid_start))
            while True:
                delay = min(self.backoff_base * 2**inst.crashes, self.backoff_max)
                inst.crashes += 1
                await asyncio.sleep(delay)
                try:
                    self._spawn(inst)
                except RuntimeFailure as exc:
                    inst.last_error = exc.detail
                    self._persist(inst)
                    continue
                inst.restarts += 1
                self._persist(inst)
                break

    def _exited(self, inst: _Instance, code: int | None) -> None:
        """Record an unexpected exit and clean up what the instance left behind."""
        assert inst.pid is not None
        _signal_group(inst.pid, inst.pid_start, signal.SIGKILL)
        Cgroups.kill(inst.cgroups)
        uptime = time.time() - inst.started_at.timestamp() if inst.started_at else 0.0
        if uptime >= STABLE_AFTER_SECONDS:
            inst.crashes = 0
        inst.exit_code = code
        inst.last_error = _describe_exit(code)
        if inst.cgroups and Cgroups.oom_kills(inst.cgroups) > inst.oom_base:
            inst.last_error = (
                f"killed by the out-of-memory killer: the memory limit is "
                f"{inst.spec.memory_bytes} bytes ({inst.last_error})"
            )
        log.info("instance %s %s", inst.spec.instance_id, inst.last_error)
        inst.pid = inst.pid_start = None
        inst.state = InstanceState.BACKOFF
        self._persist(inst)

    async def _readopt(self, inst: _Instance) -> None:
        """Take an instance found on disk back under supervision."""
        alive = inst.pid is not None and _alive(inst.pid, inst.pid_start)
        if inst.desired == "running":
            if alive:
                inst.state = InstanceState.RUNNING
                inst.monitor = asyncio.create_task(self._supervise(inst))
                return
            code = await _reap(inst.pid) if inst.pid is not None else None
            if inst.pid is not None:
                self._exited(inst, code)
                inst.last_error = f"{inst.last_error} while the agent was away"
            inst.crashes = 0
            try:
                self._spawn(inst)
            except RuntimeFailure as exc:
                inst.last_error = exc.detail
                inst.state = InstanceState.BACKOFF
                self._persist(inst)
                inst.monitor = asyncio.create_task(self._supervise(inst))
                return
            inst.restarts += 1
            self._persist(inst)
            inst.monitor = asyncio.create_task(self._supervise(inst))
        elif alive:
            await self.stop(inst.spec.instance_id)
        else:
            inst.pid = inst.pid_start = None
            if inst.state in _ACTIVE:
                inst.state = InstanceState.STOPPED

    async def _cancel_monitor(self, inst: _Instance) -> None:
        task, inst.monitor = inst.monitor, None
        if task is None or task is asyncio.current_task():
            return
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task

    async def _terminate(self, inst: _Instance, grace: float) -> int | None:
        """SIGTERM the instance's group, wait up to ``grace``, then SIGKILL what is left."""
        assert inst.pid is not None
        pgid, start = inst.pid, inst.pid_start
        main_alive = _alive(pgid, start)
        exit_wait = asyncio.create_task(_wait_exit(pgid, start))
        try:
            if main_alive:
                _signal_group(pgid, start, signal.SIGTERM)
                for pid in Cgroups.members(inst.cgroups):
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(pid, signal.SIGTERM)
                deadline = time.monotonic() + grace
                while time.monotonic() < deadline:
                    if exit_wait.done() and not _instance_group(pgid, start):
                        break
                    await asyncio.sleep(0.05)
            _signal_group(pgid, start, signal.SIGKILL)
            Cgroups.kill(inst.cgroups)
            deadline = time.monotonic() + 10.0
            while _instance_group(pgid, start) and time.monotonic() < deadline:
                await asyncio.sleep(0.01)
            with contextlib.suppress(TimeoutError):
                return await asyncio.wait_for(asyncio.shield(exit_wait), 10.0)
            return None
        finally:
            exit_wait.cancel()

    # ---- spawning ------------------------------------------------------------------------

    def _spawn(self, inst: _Instance) -> None:
        """Launch the instance's process tree and its log pump; no pipe leads to the agent."""
        spec = inst.spec
        self._check_app_dir(spec)
        idir = self._instance_dir(spec.instance_id)
        idir.mkdir(parents=True, exist_ok=True, mode=0o700)
        if self._cgroups.available:
            previous = inst.cgroups
            inst.cgroups = self._cgroups.create(
                spec.instance_id, spec.memory_bytes, spec.cpu_millis
            )
            for stale in set(previous.values()) - set(inst.cgroups.values()):
                with contextlib.suppress(OSError):  # left by an agent under another cgroup
                    os.rmdir(stale)
            inst.oom_base = Cgroups.oom_kills(inst.cgroups)
        argv = self._argv(spec, inst.cgroups, spec.command, ())
        r_out, w_out = (_fd_above(fd) for fd in os.pipe())
        r_err, w_err = (_fd_above(fd) for fd in os.pipe())
        try:
            try:
                pump = os.posix_spawn(
                    sys.executable,
                    [sys.executable, "-I", "-S", "-c", _LOG_PUMP, str(idir / LOG_FILE),
                     str(LOG_LIMIT_BYTES)],
                    {"LANG": "C.UTF-8", "PATH": BASE_PATH},
                    file_actions=[
                        (os.POSIX_SPAWN_DUP2, r_out, 0),
                        (os.POSIX_SPAWN_DUP2, r_err, 3),
                        (os.POSIX_SPAWN_OPEN, 1, os.devnull, os.O_WRONLY, 0),
                        (os.POSIX_SPAWN_OPEN, 2, os.devnull, os.O_WRONLY, 0),
                    ],
                    setsid=True,
                    setsigdef=(signal.SIGPIPE, signal.SIGXFSZ),
                    setsigmask=(),
                )  # fmt: skip
            except OSError as exc:
                raise RuntimeFailure(
                    f"cannot start the log pump of {spec.instance_id}: {exc.strerror}"
                ) from exc
            _reap_in_thread(pump)
            os.close(r_out)
            os.close(r_err)
            r_out = r_err = -1
            try:
                pid = os.posix_spawn(
                    "/bin/sh",
                    argv,
                    self._environment(spec),
                    file_actions=[
                        (os.POSIX_SPAWN_OPEN, 0, os.devnull, os.O_RDONLY, 0),
                        (os.POSIX_SPAWN_DUP2, w_out, 1),
                        (os.POSIX_SPAWN_DUP2, w_err, 2),
                    ],
                    setsid=True,
                    setsigdef=(signal.SIGPIPE, signal.SIGXFSZ),
                    setsigmask=(),
                )
            except OSError as exc:
                raise RuntimeFailure(
                    f"cannot start instance {spec.instance_id}: {exc.strerror}"
                ) from exc
            except ValueError as exc:  # e.g. an environment variable name with "=" or NUL
                raise RuntimeFailure(
                    f"cannot start instance {spec.instance_id}: invalid environment or command"
                ) from exc
        finally:
            for fd in (r_out, r_err, w_out, w_err):
                if fd >= 0:
                    os.close(fd)
        inst.pid = pid
        inst.pid_start = process_start_time(pid)
        inst.started_at = datetime.now(UTC)
        inst.state = InstanceState.RUNNING

    def _argv(
        self,
        spec: InstanceSpec,
        cgroups: Mapping[str, str],
        command: str | None,
        args: Sequence[str],
    ) -> builtins.list[str]:
        """``/bin/sh -c`` joining the cgroups, entering the sandbox, sourcing .profile.d."""
        app_dir = shlex.quote(str(spec.app_dir))
        run = exec_form(command) if command is not None else 'exec "$@"'
        inner = (
            f"cd -- {app_dir} || exit 126\nunset OLDPWD\n"
            'for f in "$HOME"/.profile.d/*.sh; do if [ -r "$f" ]; then . "$f"; fi; done\n'
            f"{run}\n"
        )
        join = "".join(
            f"echo $$ > {shlex.quote(procs)} || exit 125\n"
            for procs in Cgroups.procs_files(cgroups)
        )
        if self._sandbox.binary is None:
            return ["/bin/sh", "-c", join + inner, "sh", *args]
        hidden = [*self.hidden_paths, self.state_dir, self.state_dir.parent]
        sandboxed = self._sandbox.argv(spec.app_dir, hidden, ["/bin/sh", "-c", inner, "sh", *args])
        return ["/bin/sh", "-c", join + 'exec "$@"\n', "sh", *sandboxed]

    @staticmethod
    def _environment(spec: InstanceSpec) -> dict[str, str]:
        env = {"PATH": BASE_PATH, "LANG": "C.UTF-8"}
        env.update(spec.env)
        env["PORT"] = str(spec.port)
        env["HOME"] = str(spec.app_dir)
        return env

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

    def _require(self, instance_id: str) -> _Instance:
        inst = self._instances.get(instance_id)
        if inst is None:
            raise RuntimeFailure(f"no instance {instance_id} on this runtime")
        return inst

    def _persist(self, inst: _Instance) -> None:
        idir = self._instance_dir(inst.spec.instance_id)
        if not idir.is_dir():
            return
        data = {
            "spec": _spec_to_json(inst.spec),
            "desired": inst.desired,
            "state": str(inst.state),
            "pid": inst.pid,
            "pid_start": inst.pid_start,
            "restarts": inst.restarts,
            "exit_code": inst.exit_code,
            "started_at": inst.started_at.isoformat() if inst.started_at else None,
            "last_error": inst.last_error,
            "cgroups": inst.cgroups,
        }
        tmp = idir / f".{STATE_FILE}.{os.getpid()}.tmp"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as fh:
            json.dump(data, fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, idir / STATE_FILE)

    def _load_known(self, instance_id: str) -> _Instance | None:
        """An instance this driver has no record of yet but that is on disk, live or not.

        A live process is adopted (supervised again if it should be running) rather than
        started twice; a dead one is only remembered, so that ``start`` starts it afresh.
        """
        try:
            data = json.loads((self._instance_dir(instance_id) / STATE_FILE).read_text())
            inst = self._load(_spec_from_json(data["spec"]), data)
        except (OSError, ValueError, KeyError, TypeError):
            return None
        if inst.pid is not None and _alive(inst.pid, inst.pid_start):
            if inst.desired == "running":
                inst.state = InstanceState.RUNNING
                inst.monitor = asyncio.create_task(self._supervise(inst))
        else:
            inst.pid = inst.pid_start = None
            if inst.state in _ACTIVE:
                inst.state = InstanceState.STOPPED
        return inst

    @staticmethod
    def _load(spec: InstanceSpec, data: Mapping[str, Any]) -> _Instance:
        started = data.get("started_at")
        try:
            state = InstanceState(data.get("state", "pending"))
        except ValueError:
            state = InstanceState.UNKNOWN
        return _Instance(
            spec=spec,
            desired=str(data.get("desired", "pending")),
            state=state,
            pid=data.get("pid"),
            pid_start=data.get("pid_start"),
            restarts=int(data.get("restarts", 0)),
            exit_code=data.get("exit_code"),
            started_at=datetime.fromisoformat(started) if started else None,
            last_error=data.get("last_error"),
            cgroups=dict(data.get("cgroups") or {}),
        )


# ---- process exits ----------------------------------------------------------------------


async def _reap(pid: int) -> int | None:
    """Collect the exit status of ``pid`` if it is our child; None when it is not."""
    for _ in range(50):
        try:
            got, status = os.waitpid(pid, os.WNOHANG)
        except ChildProcessError:
            return None
        if got == pid:
            return _exit_code(status)
        if process_start_time(pid) is not None:
            return None  # still running: nothing to collect
        await asyncio.sleep(0.02)
    return None


async def _wait_exit(pid: int, start: int | None) -> int | None:
    """Wait for ``pid`` (started at ``start``) to exit; its exit code when it was our child."""
    if not _alive(pid, start):
        return await _reap(pid)
    try:
        pidfd: int | None = os.pidfd_open(pid)
    except ProcessLookupError:
        return await _reap(pid)
    except OSError:
        pidfd = None
    try:
        if pidfd is None or not _alive(pid, start):
            while _alive(pid, start):
                await asyncio.sleep(POLL_SECONDS)
        else:
            loop = asyncio.get_running_loop()
            exited = asyncio.Event()
            loop.add_reader(pidfd, exited.set)
            try:
                await exited.wait()
            finally:
                loop.remove_reader(pidfd)
    finally:
        if pidfd is not None:
            os.close(pidfd)
    return await _reap(pid)


def _reap_in_thread(pid: int) -> None:
    """Collect a log pump's exit status whenever it ends, independently of any event loop."""

    def wait() -> None:
        with contextlib.suppress(ChildProcessError):
            os.waitpid(pid, 0)

    threading.Thread(target=wait, name=f"reap-{pid}", daemon=True).start()


async def _drain(stream: asyncio.StreamReader | None, into: bytearray, limit: int) -> None:
    if stream is None:
        return
    while chunk := await stream.read(65536):
        if len(into) < limit:
            into += chunk[: limit - len(into)]


# ---- logs -------------------------------------------------------------------------------


class _LogReader:
    """Complete lines appended to a log file since the last read, across rotations."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._file: Any = None
        self._pending = b""

    def _open(self) -> bool:
        try:
            self._file = open(self.path, "rb")  # noqa: SIM115 - kept open while following
        except FileNotFoundError:
            return False
        return True

    def read(self) -> builtins.list[bytes]:
        if self._file is None and not self._open():
            return []
        data = self._file.read()
        try:
            rotated = os.stat(self.path).st_ino != os.fstat(self._file.fileno()).st_ino
        except FileNotFoundError:
            rotated = False
        if rotated:
            data += self._file.read()
            self._file.close()
            self._file = None
            if self._open():
                data += self._file.read()
        if not data:
            return []
        lines = (self._pending + data).split(b"\n")
        self._pending = lines.pop()
        return lines

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None


def _read_lines(path: Path) -> builtins.list[bytes]:
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return []
    lines = data.split(b"\n")
    lines.pop()
    return lines


def _parse_line(instance_id: str, raw: bytes) -> LogLine:
    parts = raw.split(b" ", 2)
    if len(parts) >= 2 and parts[1] in (b"stdout", b"stderr"):
        try:
            stamp = datetime.fromisoformat(parts[0].decode())
        except ValueError:
            stamp = None
        if stamp is not None:
            text = parts[2] if len(parts) == 3 else b""
            return LogLine(
                instance_id=instance_id,
                stream=parts[1].decode(),
                timestamp=stamp,
                line=text.decode(errors="replace"),
            )
    return LogLine(
        instance_id=instance_id,
        stream="stdout",
        timestamp=datetime.now(UTC),
        line=raw.decode(errors="replace"),
    )
