"""Process exits: waiting for an instance's process to end, collecting its exit status,
describing it, and ending a whole instance (process group and cgroups) gracefully."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import threading
import time
from collections.abc import Mapping

from .cgroups import Cgroups
from .procfs import alive, instance_group, process_start_time, signal_group

POLL_SECONDS = 0.1


def exit_code(status: int) -> int:
    code = os.waitstatus_to_exitcode(status)
    return 128 - code if code < 0 else code


def describe_exit(code: int | None) -> str:
    if code is None:
        return "exited (exit status unknown: the process was not a child of this agent)"
    if 128 < code <= 128 + 64:
        try:
            name = signal.Signals(code - 128).name
        except ValueError:
            name = f"signal {code - 128}"
        return f"exited with code {code} (killed by {name})"
    return f"exited with code {code}"


async def reap(pid: int) -> int | None:
    """Collect the exit status of ``pid`` if it is our child; None when it is not."""
    for _ in range(50):
        try:
            got, status = os.waitpid(pid, os.WNOHANG)
        except ChildProcessError:
            return None
        if got == pid:
            return exit_code(status)
        if process_start_time(pid) is not None:
            return None  # still running: nothing to collect
        await asyncio.sleep(0.02)
    return None


async def wait_exit(pid: int, start: int | None) -> int | None:
    """Wait for ``pid`` (started at ``start``) to exit; its exit code when it was our child."""
    if not alive(pid, start):
        return await reap(pid)
    try:
        pidfd: int | None = os.pidfd_open(pid)
    except ProcessLookupError:
        return await reap(pid)
    except OSError:
        pidfd = None
    try:
        if pidfd is None or not alive(pid, start):
            while alive(pid, start):
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
    return await reap(pid)


def reap_in_thread(pid: int) -> None:
    """Collect a log pump's exit status whenever it ends, independently of any event loop."""

    def wait() -> None:
        with contextlib.suppress(ChildProcessError):
            os.waitpid(pid, 0)

    threading.Thread(target=wait, name=f"reap-{pid}", daemon=True).start()


async def terminate(
    pgid: int, start: int | None, cgroups: Mapping[str, str], grace: float
) -> int | None:
    """SIGTERM the instance's group, wait up to ``grace``, then SIGKILL what is left.

    Returns the exit code of the group's leader when it was a child of this process.
    """
    main_alive = alive(pgid, start)
    exit_wait = asyncio.create_task(wait_exit(pgid, start))
    try:
        if main_alive:
            signal_group(pgid, start, signal.SIGTERM)
            for pid in Cgroups.members(cgroups):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGTERM)
            deadline = time.monotonic() + grace
            while time.monotonic() < deadline:
                if exit_wait.done() and not instance_group(pgid, start):
                    break
                await asyncio.sleep(0.05)
        signal_group(pgid, start, signal.SIGKILL)
        Cgroups.kill(cgroups)
        deadline = time.monotonic() + 10.0
        while instance_group(pgid, start) and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
        with contextlib.suppress(TimeoutError):
            return await asyncio.wait_for(asyncio.shield(exit_wait), 10.0)
        return None
    finally:
        exit_wait.cancel()
