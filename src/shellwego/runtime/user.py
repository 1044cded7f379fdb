"""The unprivileged user instances run as when the agent runs as root.

An agent running as root hands each instance (and each one-off command) to a plain
uid/gid (65534 ``nobody``/``nogroup`` by default) through util-linux's ``setpriv``: no
supplementary groups, no capabilities (bounding and inheritable sets cleared) and
``no_new_privs``, so no set-uid program can give root back. The agent itself keeps root
for what needs it: joining cgroups, the private mount namespace of the app layer, log
capture and signalling.
"""

from __future__ import annotations

import os
import shutil
import stat
from dataclasses import dataclass
from pathlib import Path

from shellwego.errors import RuntimeUnavailable

NOBODY = (65534, 65534)

# what bubblewrap must leave to setpriv inside the sandbox, which drops them all: switching
# user, and entering a working directory that only that user may enter
SWITCH_CAPS = ("CAP_SETUID", "CAP_SETGID", "CAP_SETPCAP", "CAP_DAC_READ_SEARCH")


@dataclass(frozen=True, slots=True)
class RunUser:
    """Who instance processes run as, and the ``setpriv`` that switches to them."""

    uid: int
    gid: int
    setpriv: str

    def argv(self) -> list[str]:
        """The prefix that runs the rest of the command line as this user."""
        return [
            self.setpriv,
            f"--reuid={self.uid}",
            f"--regid={self.gid}",
            "--clear-groups",
            "--inh-caps=-all",
            "--bounding-set=-all",
            "--no-new-privs",
            "--",
        ]

    def label(self) -> str:
        return f"uid-{self.uid}"

    def blocked_at(self, path: Path) -> Path | None:
        """The first directory from ``/`` down to ``path`` this user may not enter, or None
        when it can reach ``path``'s contents (by mode bits, without groups)."""
        current = Path("/")
        for part in ("", *path.resolve().parts[1:]):
            current = current / part
            try:
                info = current.stat()
            except OSError:
                return current
            if info.st_uid == self.uid:
                bit = stat.S_IXUSR
            elif info.st_gid == self.gid:
                bit = stat.S_IXGRP
            else:
                bit = stat.S_IXOTH
            if not info.st_mode & bit:
                return current
        return None


def run_user(wanted: tuple[int, int] | None) -> RunUser | None:
    """The user instances run as: ``wanted`` when this process is root, else None (then
    instances run as the agent's own user, which is already unprivileged)."""
    if wanted is None or os.geteuid() != 0:
        return None
    setpriv = shutil.which("setpriv")
    if setpriv is None:
        raise RuntimeUnavailable(
            "the agent runs as root, so instances must run as an unprivileged user, but "
            "setpriv (util-linux) is not installed"
        )
    return RunUser(wanted[0], wanted[1], setpriv)
