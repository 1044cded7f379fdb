"""The bubblewrap sandbox: whether it works on this host, and the argv that enters it.

Inside, the host's root is read-only, ``/dev``, ``/proc`` (own PID namespace) and
``/tmp`` are private, hidden paths are masked, and only the given directories are
writable. The network is the host's.
"""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

_BWRAP_ISOLATION = (
    "--unshare-pid", "--unshare-ipc", "--unshare-uts", "--unshare-cgroup-try",
    "--cap-drop", "ALL",
)  # fmt: skip


@dataclass(frozen=True, slots=True)
class Sandbox:
    """How bubblewrap is invoked on this host, or (``note``) why it cannot be."""

    binary: str | None
    extra: tuple[str, ...] = ()
    note: str | None = None

    @classmethod
    def detect(cls) -> Sandbox:
        binary = shutil.which("bwrap")
        if binary is None:
            return cls(None, note="bubblewrap (bwrap) is not installed")
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
        return cls(None, note=f"bubblewrap cannot create a sandbox here ({error})")

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
