"""Real ShellWeGo processes for end-to-end tests and benches: started in a session of
their own with their output in a log file, waited on by what they print, stopped."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

SHELLWEGO = str(Path(sys.executable).parent / "shellwego")


def spawn(argv: list[str], env: dict[str, str], log: Path) -> subprocess.Popen[str]:
    return subprocess.Popen(
        argv,
        env=env,
        stdout=log.open("w"),
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )


def wait_line(log: Path, pattern: str, proc: subprocess.Popen[str], deadline: float = 60) -> str:
    """The first match of ``pattern`` in ``log`` (its first group, if any), once it shows."""
    end = time.monotonic() + deadline
    while time.monotonic() < end:
        text = log.read_text() if log.exists() else ""
        m = re.search(pattern, text)
        if m:
            return m.group(1) if m.groups() else m.group(0)
        assert proc.poll() is None, f"{proc.args} exited:\n{text}"
        time.sleep(0.1)
    raise AssertionError(f"{pattern!r} never appeared:\n{log.read_text()}")


def stop(proc: subprocess.Popen[str], sig: int = signal.SIGTERM) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, sig) if sig == signal.SIGKILL else proc.send_signal(sig)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def alive(pid: int) -> bool:
    """Whether ``pid`` runs (a zombie does not)."""
    try:
        with open(f"/proc/{pid}/stat") as handle:
            return handle.read().split(") ", 1)[1][0] != "Z"
    except (FileNotFoundError, IndexError):
        return False
