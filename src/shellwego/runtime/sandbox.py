"""The bubblewrap sandbox: whether it works on this host, and the argv that enters it.

Inside, the host's root is read-only, ``/dev``, ``/proc`` (own PID namespace) and
``/tmp`` (world-writable and sticky, like a host's) are private, hidden paths are masked,
and only the given directories are writable. Every capability is dropped except those the
caller keeps to switch to an unprivileged user inside. The network is the caller's.

The root is a read-only tmpfs holding a read-only bind of each of the host's top-level
entries (not one bind of ``/``), so that the app can be mounted where the host has
nothing: Heroku's ``/app``, a short and stable path whatever the host's layout.
"""

from __future__ import annotations

import functools
import os
import shutil
import subprocess
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

_BWRAP_ISOLATION = ("--unshare-pid", "--unshare-ipc", "--unshare-uts", "--unshare-cgroup-try")
# where instances (and build steps) see their app: Heroku's path, short enough for the
# AF_UNIX socket paths servers make under it (gunicorn's control socket)
APP_MOUNT = Path("/app")
_OWN = frozenset({"dev", "proc", "tmp"})  # mounted afresh, never the host's


def _host_root(skip: frozenset[str] = frozenset()) -> list[str]:
    """Each top-level entry of the host's root, read-only (links as links)."""
    argv: list[str] = []
    for name in sorted(os.listdir("/")):
        if name in _OWN or name in skip:
            continue
        path = f"/{name}"
        if os.path.islink(path):
            argv += ["--symlink", os.readlink(path), path]
        elif os.path.isdir(path) or os.path.isfile(path):
            argv += ["--ro-bind", path, path]
    return argv


def _base(binary: str, skip: frozenset[str] = frozenset()) -> list[str]:
    """Read-only host, private /dev, /proc and /tmp."""
    return [
        binary, *_host_root(skip), "--dev", "/dev", "--proc", "/proc",
        "--perms", "1777", "--tmpfs", "/tmp",
    ]  # fmt: skip


def _caps(keep: Sequence[str]) -> list[str]:
    argv = ["--cap-drop", "ALL"]
    for cap in keep:
        argv += ["--cap-add", cap]
    return argv


def _way_in(target: Path, masked: Sequence[Path]) -> list[str]:
    """Search-only (0711) directories leading to ``target`` inside the innermost tmpfs
    over it (a mask, or the private /tmp), so that a user other than root can reach it:
    bwrap would create them 0700."""
    around = [m for m in (*masked, Path("/tmp")) if target.is_relative_to(m) and target != m]
    if not around:
        return []
    mask = max(around, key=lambda m: len(m.parts))
    argv: list[str] = []
    for depth in range(len(mask.parts) + 1, len(target.parts)):
        argv += ["--perms", "0711", "--dir", str(Path(*target.parts[:depth]))]
    return argv


def _in_private_tmp(option: str, source: Path, where: Path) -> list[str]:
    """``source`` mounted (``option``: ``--bind`` or ``--ro-bind``) at ``where`` inside
    the private /tmp, reachable by any user."""
    if not where.is_relative_to("/tmp"):
        raise ValueError(f"a mount point in the private /tmp must be under /tmp, not {where}")
    return [*_way_in(where, []), option, str(source.resolve()), str(where)]


@dataclass(frozen=True, slots=True)
class Sandbox:
    """How bubblewrap is invoked on this host, or (``note``) why it cannot be."""

    binary: str | None
    extra: tuple[str, ...] = ()
    note: str | None = None

    @classmethod
    def detect(cls, *, fresh: bool = False) -> Sandbox:
        """Whether bubblewrap works here: probed once per process and bwrap binary
        (``fresh``: probe again)."""
        binary = shutil.which("bwrap")
        if binary is None:
            return cls(None, note="bubblewrap (bwrap) is not installed")
        if fresh:
            _probe.cache_clear()
        return _probe(binary)

    def argv(
        self,
        app_dir: Path,
        hidden: Iterable[Path],
        inner: Sequence[str],
        binds: Sequence[Path | tuple[Path, Path]] = (),
        keep_caps: Sequence[str] = (),
        *,
        at: Path | None = None,
        tools: Sequence[tuple[Path, Path]] = (),
    ) -> list[str]:
        """bwrap argv: read-only host, private /dev /proc /tmp, ``hidden`` masked, app rw
        (and ``binds`` rw too: they may lie inside a hidden path; a ``(path, where)`` pair
        is mounted at ``where`` inside the private /tmp; ``tools``: ``(file, where)``
        pairs mounted read-only there, for programs the host keeps where the sandbox does
        not show them), capabilities dropped
        but ``keep_caps``. ``at``: where the app is mounted and the command starts (e.g.
        :data:`APP_MOUNT`), else at its own path."""
        assert self.binary is not None
        app_dir = app_dir.resolve()
        mount = app_dir if at is None else at
        top = mount.parts[1] if at is not None and len(mount.parts) > 1 else ""
        argv = _base(self.binary, frozenset({top}) if top else frozenset())
        outside: list[str] = []
        inside: list[str] = []  # masks within the app dir go on top of its bind
        masked: list[Path] = []
        for path in sorted({p.resolve() for p in hidden}, key=lambda p: len(p.parts)):
            inner_mask = path.is_relative_to(app_dir) and path != app_dir
            # a mask inside the app goes on top of its bind, whatever is masked around it
            around = [m for m in masked if m.is_relative_to(app_dir) == inner_mask]
            if path == Path("/") or any(path.is_relative_to(m) for m in around):
                continue
            dest = str(mount / path.relative_to(app_dir)) if inner_mask else str(path)
            if path.is_dir():
                mask = ["--tmpfs", dest]
            elif path.exists():
                mask = ["--ro-bind", "/dev/null", dest]
            else:
                continue
            masked.append(path)
            (inside if inner_mask else outside).extend(mask)
        argv += [*outside, *(_way_in(app_dir, masked) if at is None else ())]
        argv += ["--bind", str(app_dir), str(mount), *inside]
        for extra in binds:
            if isinstance(extra, tuple):
                argv += _in_private_tmp("--bind", *extra)
                continue
            argv += [*_way_in(extra.resolve(), masked)]
            argv += ["--bind", str(extra.resolve()), str(extra.resolve())]
        for tool, where in tools:
            argv += _in_private_tmp("--ro-bind", tool, where)
        argv += ["--remount-ro", "/", "--chdir", str(mount)]
        argv += [*_BWRAP_ISOLATION, *_caps(keep_caps), *self.extra]
        return [*argv, "--", *inner]


@functools.cache
def _probe(binary: str) -> Sandbox:
    """Try ``binary`` as it is, then in a user namespace of its own."""
    base = [*_base(binary), "--remount-ro", "/", *_BWRAP_ISOLATION, *_caps(())]
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
            return Sandbox(binary, extra)
        lines = done.stderr.decode(errors="replace").strip().splitlines()
        error = lines[-1] if lines else f"exit code {done.returncode}"
    return Sandbox(None, note=f"bubblewrap cannot create a sandbox here ({error})")
