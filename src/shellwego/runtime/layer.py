"""An instance's app directory: a private, writable layer over its read-only slug.

The filesystem is ephemeral, as on Heroku: an instance may write anywhere in its app
directory, nobody else sees the writes (not other instances of the same slug, not other
apps sharing a slug digest) and they are discarded when the instance starts again. The
slug itself is never written. Two ways, chosen per host by :meth:`Layers.detect`:

* ``overlay`` (the agent is root and the kernel has overlayfs): each instance runs in a
  mount namespace of its own (``unshare --mount``) in which an overlay -- the slug as the
  lower layer, ``<layer>/upper`` as the upper -- is mounted on ``<layer>/app``. Nothing
  is copied, and the mount goes away with the instance's last process. Instances run as
  an unprivileged user, so the slug is handed to that user once (ownership only, its
  contents never change) and must sit in a directory only root can enter: outside its
  overlay no instance can reach it.
* ``copy`` (otherwise): a private copy of the slug in ``<layer>/app``, made afresh at
  each start; it costs time and disk in proportion to the slug.
"""

from __future__ import annotations

import os
import shlex
import shutil
import stat
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

from shellwego.errors import RuntimeFailure

from .user import RunUser

OVERLAY = "overlay"
COPY = "copy"
APP_DIR = "app"
# what an instance's layer directory holds: all of it the app's
LAYER_DIRS = (APP_DIR, "upper", "work")
# what overlayfs (or mount's option parsing) would read as separators or escapes
_MOUNT_SPECIAL = frozenset(",:\\\n")


# why overlayfs cannot be used (None: it can), per filesystem (device) and tools
_PROBED: dict[tuple[int, str, str], str | None] = {}


def _mount_safe(path: Path) -> bool:
    return not (set(str(path)) & _MOUNT_SPECIAL)


def _overlay_options(lower: Path, upper: Path, work: Path) -> str:
    return f"lowerdir={lower},upperdir={upper},workdir={work}"


def private_mounts(unshare: str | None = None) -> list[str]:
    """The argv prefix that runs the rest in a private mount namespace of its own."""
    unshare = unshare or shutil.which("unshare")
    if unshare is None:
        raise RuntimeFailure("unshare (util-linux) is not installed")
    return [unshare, "--mount", "--propagation", "private", "--"]


def slug_dir_name(digest: str, uid: int | None) -> str:
    """The name of a slug's directory for instances of ``uid``: overlays hand the slug to
    the instance's user, so each app uid sharing a digest has a copy of its own."""
    return digest if uid is None else f"{digest}-{uid}"


def chown_tree(root: Path, uid: int, gid: int) -> None:
    """Give ``root`` and everything under it to ``uid:gid``; ``root`` itself last, so its
    owner says the whole tree is done."""
    for parent, dirs, files in os.walk(root, topdown=False):
        for name in (*files, *dirs):
            os.lchown(os.path.join(parent, name), uid, gid)
    os.lchown(root, uid, gid)


@dataclass(frozen=True, slots=True)
class Layers:
    """How instances get their writable layer on this host, and why when it is a copy."""

    mode: str
    unshare: str | None = None
    mount: str | None = None
    note: str | None = None

    @classmethod
    def detect(cls, scratch: Path, *, fresh: bool = False) -> Layers:
        """Probe an overlay mount in a throwaway mount namespace under ``scratch``: once
        per process and filesystem (``fresh``: probe again)."""
        why: str | None
        if os.geteuid() != 0:
            why = "the agent is not root"
        elif not _mount_safe(scratch):
            why = f"{scratch} has a character overlayfs cannot take in a path"
        else:
            unshare, mount = shutil.which("unshare"), shutil.which("mount")
            if unshare is None or mount is None:
                why = "unshare or mount (util-linux) is not installed"
            else:
                scratch.mkdir(parents=True, exist_ok=True)
                key = (scratch.stat().st_dev, unshare, mount)
                if fresh or key not in _PROBED:
                    _PROBED[key] = cls._probe(scratch, unshare, mount)
                why = _PROBED[key]
                if why is None:
                    return cls(OVERLAY, unshare, mount)
        return cls(COPY, note=f"{why}: each instance gets a private copy of its slug per start")

    @staticmethod
    def _probe(scratch: Path, unshare: str, mount: str) -> str | None:
        scratch.mkdir(parents=True, exist_ok=True)
        probe = Path(tempfile.mkdtemp(prefix=".overlay-probe-", dir=scratch))
        try:
            for name in ("lower", "upper", "work", "merged"):
                (probe / name).mkdir()
            options = _overlay_options(probe / "lower", probe / "upper", probe / "work")
            argv = [unshare, "--mount", "--propagation", "private", "--", mount]
            argv += ["-t", "overlay", "-o", options, "shellwego", str(probe / "merged")]
            try:
                done = subprocess.run(
                    argv, stdin=subprocess.DEVNULL, capture_output=True, timeout=20, check=False
                )
            except (OSError, subprocess.TimeoutExpired) as exc:
                return f"overlayfs cannot be mounted here ({exc})"
            if done.returncode != 0:
                lines = done.stderr.decode(errors="replace").strip().splitlines()
                why = lines[-1] if lines else f"exit code {done.returncode}"
                return f"overlayfs cannot be mounted here ({why})"
            return None
        finally:
            shutil.rmtree(probe, ignore_errors=True)

    @property
    def label(self) -> str:
        return "overlay" if self.mode == OVERLAY else "private-copy"

    def prefix(self) -> list[str]:
        """What the instance's launcher runs under: a private mount namespace for overlays."""
        if self.mode != OVERLAY:
            return []
        assert self.unshare is not None
        return self.private_mounts()

    def private_mounts(self) -> list[str]:
        """The argv prefix that runs the rest in a private mount namespace of its own."""
        return private_mounts(self.unshare)

    def mount_script(self, slug: Path, layer: Path) -> str:
        """Shell lines (run as root inside that namespace) that put the overlay in place."""
        if self.mode != OVERLAY:
            return ""
        assert self.mount is not None
        options = _overlay_options(slug.resolve(), layer / "upper", layer / "work")
        argv = [self.mount, "-t", "overlay", "-o", options, "shellwego", str(layer / APP_DIR)]
        return shlex.join(argv) + " || exit 125\n"

    def prepare(self, slug: Path, layer: Path, user: RunUser | None) -> Path:
        """A fresh, empty writable layer over ``slug`` in ``layer``; the app directory the
        instance will see. Raises RuntimeFailure when the slug cannot be layered."""
        app = layer / APP_DIR
        try:
            if self.mode == OVERLAY:
                self._prepare_overlay(slug.resolve(), layer, user)
            else:
                shutil.rmtree(app, ignore_errors=True)
                shutil.copytree(slug, app, symlinks=True)
                if user is not None:
                    chown_tree(app, user.uid, user.gid)
        except OSError as exc:
            raise RuntimeFailure(
                f"cannot prepare the app directory from {slug}: {exc.strerror or exc}"
            ) from exc
        return app

    @staticmethod
    def _prepare_overlay(slug: Path, layer: Path, user: RunUser | None) -> None:
        if not _mount_safe(slug) or not _mount_safe(layer):
            raise RuntimeFailure(
                f"cannot layer {slug}: overlayfs paths cannot contain ',', ':' or '\\'"
            )
        if user is not None and os.lstat(slug).st_uid != user.uid:
            if user.blocked_at(slug.parent) is None:
                raise RuntimeFailure(
                    f"cannot hand the slug {slug} to uid {user.uid}: it would be writable by "
                    f"every instance outside its overlay; keep slugs in a directory only "
                    f"root can enter (mode 0700)"
                )
            chown_tree(slug, user.uid, user.gid)
        for name in ("upper", "work"):
            shutil.rmtree(layer / name, ignore_errors=True)
        upper = layer / "upper"
        upper.mkdir()
        (layer / "work").mkdir(mode=0o700)
        (layer / APP_DIR).mkdir(exist_ok=True)
        # the upper directory gives the app directory's root its owner and mode
        os.chmod(upper, stat.S_IMODE(os.lstat(slug).st_mode) | stat.S_IRWXU)
        if user is not None:
            os.chown(upper, user.uid, user.gid)
