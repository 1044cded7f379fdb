"""The bubblewrap sandbox: whether it works on this host, and the argv that enters it.

Inside, the host's root is read-only, ``/dev``, ``/proc`` (own PID namespace) and
``/tmp`` (world-writable and sticky, like a host's) are private, hidden paths are masked,
and only the given directories are writable. Every capability is dropped except those the
caller keeps to switch to an unprivileged user inside. The network is the host's.
"""

from __future__ import annotations

import functools
import shutil
import subprocess
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

_BWRAP_ISOLATION = ("--unshare-pid", "--unshare-ipc", "--unshare-uts", "--unshare-cgroup-try")


def _base(binary: str) -> list[str]:
    """Read-only host, private /dev, /proc and /tmp."""
    return [
        binary, "--ro-bind", "/", "/", "--dev", "/dev", "--proc", "/proc",
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
        binds: Sequence[Path] = (),
        keep_caps: Sequence[str] = (),
    ) -> list[str]:
        """bwrap argv: read-only host, private /dev /proc /tmp, ``hidden`` masked, app rw
        (and ``binds`` rw too: they may lie inside a hidden path), capabilities dropped
        but ``keep_caps``."""
        assert self.binary is not None
        app_dir = app_dir.resolve()
        argv = _base(self.binary)
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
        argv += [*outside, *_way_in(app_dir, masked)]
        argv += ["--bind", str(app_dir), str(app_dir), *inside]
        for extra in binds:
            argv += [*_way_in(extra.resolve(), masked)]
            argv += ["--bind", str(extra.resolve()), str(extra.resolve())]
        argv += ["--chdir", str(app_dir), *_BWRAP_ISOLATION, *_caps(keep_caps), *self.extra]
        return [*argv, "--", *inner]


@functools.cache
def _probe(binary: str) -> Sandbox:
    """Try ``binary`` as it is, then in a user namespace of its own."""
    base = [*_base(binary), *_BWRAP_ISOLATION, *_caps(())]
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
