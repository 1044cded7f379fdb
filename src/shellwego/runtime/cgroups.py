"""Per-instance cgroups (memory, CPU and process-count limits, usage, OOM kills) on v2 or
v1 hierarchies.

Hosts differ: cgroup v2, or a hybrid layout with ``memory``/``cpu``/``cpuacct``/``pids``
on v1.
:meth:`Cgroups.detect` finds what is mounted and writable and says why when nothing is.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import shlex
import signal
import time
from collections.abc import Mapping
from pathlib import Path

from shellwego.errors import RuntimeFailure

log = logging.getLogger(__name__)

CGROUP_PARENT = "shellwego"


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


def _make_child(parent: Path, path: Path) -> None:
    """Make ``path`` under a v1 ``shellwego`` parent that another platform on this host (or
    a removal here) may delete whenever it is empty: made again then."""
    for _ in range(20):
        parent.mkdir(exist_ok=True)
        try:
            path.mkdir(exist_ok=True)
            return
        except FileNotFoundError:
            continue  # the parent went away between the two: make it again
    path.mkdir(exist_ok=True)


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


# this process's view of the host (by mount layout and own cgroups), once found
_FOUND: dict[tuple[object, ...], Cgroups] = {}


class Cgroups:
    """Per-instance cgroups under a ``shellwego`` subtree, on v2 or on v1 controllers.

    On cgroup v2 the subtree is ``<mount>/shellwego`` with ``memory`` and ``cpu`` enabled
    for its children. On v1 (hybrid hosts) it is ``shellwego`` under this process's own
    cgroup in the ``memory``, ``cpu`` and ``cpuacct`` hierarchies, so whatever limits the
    agent runs under still bound its instances.
    """

    def __init__(
        self, version: int, parents: Mapping[str, Path], note: str | None, *, v2_pids: bool = False
    ) -> None:
        self.version = version
        self.parents = dict(parents)
        self.note = note
        self.v2_pids = v2_pids  # cgroup v2 with the pids controller enabled

    @property
    def available(self) -> bool:
        return self.version != 0

    @property
    def cpu_limit(self) -> bool:
        return "unified" in self.parents or "cpu" in self.parents

    @property
    def pids_limit(self) -> bool:
        return self.v2_pids or "pids" in self.parents

    @classmethod
    def detect(
        cls,
        mounts: list[tuple[str, Path, set[str]]] | None = None,
        own: dict[str, str] | None = None,
        *,
        fresh: bool = False,
    ) -> Cgroups:
        """What this host offers; ``mounts`` and ``own`` default to this process's view
        (:func:`cgroup_mounts`, :func:`own_cgroups`), which is probed once per process
        and layout (``fresh``: probe again)."""
        if mounts is not None or own is not None:
            return cls._find(
                cgroup_mounts() if mounts is None else mounts,
                own_cgroups() if own is None else own,
            )
        mounts, own = cgroup_mounts(), own_cgroups()
        key = (
            tuple((fstype, mount, frozenset(options)) for fstype, mount, options in mounts),
            tuple(sorted(own.items())),
        )
        if fresh or key not in _FOUND:
            _FOUND[key] = cls._find(mounts, own)
        return _FOUND[key]

    @classmethod
    def _find(cls, mounts: list[tuple[str, Path, set[str]]], own: dict[str, str]) -> Cgroups:
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
            enable = "+memory +cpu +pids" if "pids" in controllers else "+memory +cpu"
            try:
                parent.mkdir(exist_ok=True)
                with contextlib.suppress(OSError):
                    _write(mount / "cgroup.subtree_control", enable)
                _write(parent / "cgroup.subtree_control", enable)
                return cls(2, {"unified": parent}, None, v2_pids="pids" in controllers)
            except OSError as exc:
                notes.append(f"cgroup v2 at {mount} is not writable ({exc.strerror})")
        v1: dict[str, Path] = {}
        for fstype, mount, options in mounts:
            if fstype != "cgroup":
                continue
            for name in ("memory", "cpu", "cpuacct", "pids"):
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

    def create(
        self, name: str, memory_bytes: int, cpu_millis: int | None, pids_max: int | None = None
    ) -> dict[str, str]:
        """Create (or update) the cgroups of one instance (or build); returns their paths
        by role. ``cpu_millis`` None: no CPU quota; ``pids_max`` None: no process limit."""
        dirs: dict[str, str] = {}
        try:
            for role, parent in self.parents.items():
                path = parent / name
                if self.version == 1:
                    _make_child(parent, path)
                else:
                    path.mkdir(exist_ok=True)
                dirs[role] = str(path)
                if role == "unified":
                    _write(path / "memory.max", str(memory_bytes))
                    if (path / "memory.swap.max").exists():
                        _write(path / "memory.swap.max", "0")
                    if cpu_millis is not None:
                        _write(path / "cpu.max", f"{cpu_millis * 100} 100000")
                    if self.v2_pids:
                        _write(path / "pids.max", "max" if pids_max is None else str(pids_max))
                elif role == "memory":
                    self._v1_memory(path, memory_bytes)
                elif role == "cpu" and cpu_millis is not None:
                    _write(path / "cpu.cfs_period_us", "100000")
                    _write(path / "cpu.cfs_quota_us", str(cpu_millis * 100))
                elif role == "pids":
                    _write(path / "pids.max", "max" if pids_max is None else str(pids_max))
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

    @classmethod
    def join_script(cls, dirs: Mapping[str, str]) -> str:
        """Shell lines that move the shell running them (and so what it ``exec``s and
        starts) into ``dirs``; exit 125 when it cannot."""
        return "".join(
            f"echo $$ > {shlex.quote(procs)} || exit 125\n" for procs in cls.procs_files(dirs)
        )

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

    @staticmethod
    def forks_refused(dirs: Mapping[str, str]) -> int:
        """How many times a fork was refused at the cgroups' process limit."""
        for role in ("unified", "pids"):
            if role in dirs:
                return _read_keyed(Path(dirs[role]) / "pids.events", "max") or 0
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
