"""An instance's output log: the pump that writes it and the readers that parse it.

The pump is a small Python process in its own session, not tied to the agent: it reads
the app's stdout and stderr and appends each line to ``output.log`` stamped with the time
it was written and its stream, rotating the file to ``output.log.1`` past
:data:`LOG_LIMIT_BYTES`.
"""

from __future__ import annotations

import fcntl
import os
import signal
import sys
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from shellwego.errors import RuntimeFailure

from .command import BASE_PATH
from .driver import LogLine
from .exits import reap_in_thread

LOG_FILE = "output.log"
LOG_LIMIT_BYTES = 4 * 1024 * 1024

# The log pump: reads the app's stdout (fd 0) and stderr (fd 3) until both are closed and
# appends "<UTC timestamp> <stream> <line>" lines to the log file (0600: apps log
# secrets), rotating it to ".1".
_LOG_PUMP = r"""
import os, select, signal, sys, time
signal.signal(signal.SIGINT, signal.SIG_IGN)
signal.signal(signal.SIGHUP, signal.SIG_IGN)
path, limit = sys.argv[1], int(sys.argv[2])
names = {0: b"stdout", 3: b"stderr"}
pending = {0: b"", 3: b""}
def reopen():
    return os.fdopen(os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600), "ab")
out = reopen()
def emit(fd, line):
    global out
    now = time.time()
    stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(now)) + ".%06dZ" % int(now % 1 * 1e6)
    out.write(stamp.encode() + b" " + names[fd] + b" " + line + b"\n")
    if out.tell() > limit:
        out.close()
        os.replace(path, path + ".1")
        out = reopen()
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


def start_log_pump(path: Path, stdout_fd: int, stderr_fd: int) -> int:
    """Start the pump appending what arrives on the two pipes to ``path``; its pid.

    The pump is reaped whenever it ends. Raises OSError when it cannot be started.
    """
    pump = os.posix_spawn(
        sys.executable,
        [sys.executable, "-I", "-S", "-c", _LOG_PUMP, str(path), str(LOG_LIMIT_BYTES)],
        {"LANG": "C.UTF-8", "PATH": BASE_PATH},
        file_actions=[
            (os.POSIX_SPAWN_DUP2, stdout_fd, 0),
            (os.POSIX_SPAWN_DUP2, stderr_fd, 3),
            (os.POSIX_SPAWN_OPEN, 1, os.devnull, os.O_WRONLY, 0),
            (os.POSIX_SPAWN_OPEN, 2, os.devnull, os.O_WRONLY, 0),
        ],
        setsid=True,
        setsigdef=(signal.SIGPIPE, signal.SIGXFSZ),
        setsigmask=(),
    )
    reap_in_thread(pump)
    return pump


def spawn_with_log(
    argv: Sequence[str], env: Mapping[str, str], log_path: Path, instance_id: str
) -> int:
    """Start ``argv`` in a session of its own with its stdout and stderr going through a
    log pump into ``log_path``; no pipe leads back to this process. Returns the pid."""
    r_out, w_out = (_fd_above(fd) for fd in os.pipe())
    r_err, w_err = (_fd_above(fd) for fd in os.pipe())
    try:
        try:
            start_log_pump(log_path, r_out, r_err)
        except OSError as exc:
            raise RuntimeFailure(
                f"cannot start the log pump of {instance_id}: {exc.strerror}"
            ) from exc
        os.close(r_out)
        os.close(r_err)
        r_out = r_err = -1
        try:
            pid = os.posix_spawn(
                argv[0],
                list(argv),
                dict(env),
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
            raise RuntimeFailure(f"cannot start instance {instance_id}: {exc.strerror}") from exc
        except ValueError as exc:  # e.g. an environment variable name with "=" or NUL
            raise RuntimeFailure(
                f"cannot start instance {instance_id}: invalid environment or command"
            ) from exc
    finally:
        for fd in (r_out, r_err, w_out, w_err):
            if fd >= 0:
                os.close(fd)
    return pid


def _fd_above(fd: int, floor: int = 10) -> int:
    """Move ``fd`` to a number >= ``floor`` (close-on-exec) so dup2 targets never collide."""
    moved = fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, floor)
    os.close(fd)
    return moved


class LogReader:
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

    def read(self) -> list[bytes]:
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


def read_lines(path: Path) -> list[bytes]:
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return []
    lines = data.split(b"\n")
    lines.pop()
    return lines


def parse_line(instance_id: str, raw: bytes) -> LogLine:
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
