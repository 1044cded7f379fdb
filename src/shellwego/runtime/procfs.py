"""What ``/proc`` says about processes and process groups: start times, members, usage.

A pid is identified together with its start time (``/proc/<pid>/stat`` field 22), so a
number the kernel has handed to an unrelated process is never mistaken for an instance.
"""

from __future__ import annotations

import contextlib
import os
import signal


def stat_fields(pid: int) -> list[str] | None:
    """Fields of /proc/<pid>/stat from field 3 (state) on; None when there is no such pid."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            raw = fh.read()
    except (FileNotFoundError, ProcessLookupError):
        return None
    return raw[raw.rindex(b")") + 2 :].decode().split()


def process_start_time(pid: int) -> int | None:
    """Start time of a live (non-zombie) process in clock ticks (stat field 22), else None."""
    fields = stat_fields(pid)
    if fields is None or fields[0] in ("Z", "X"):
        return None
    return int(fields[19])


def alive(pid: int, start: int | None) -> bool:
    now = process_start_time(pid)
    return now is not None and (start is None or now == start)


def group_members(pgid: int) -> list[int]:
    """Live processes of a process group."""
    members = []
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        fields = stat_fields(int(entry.name))
        if fields is not None and fields[0] not in ("Z", "X") and int(fields[2]) == pgid:
            members.append(int(entry.name))
    return members


def reused(pgid: int, start: int | None) -> bool:
    """Whether the number ``pgid`` now belongs to a process other than the one started then.

    While the leader (even as a zombie) or any member of a group exists, the kernel keeps
    its number reserved; only when ``/proc/<pgid>`` shows a different start time has it been
    handed to an unrelated process, whose group must not be signalled.
    """
    fields = stat_fields(pgid)
    return fields is not None and start is not None and int(fields[19]) != start


def instance_group(pgid: int, start: int | None) -> list[int]:
    return [] if reused(pgid, start) else group_members(pgid)


def signal_group(pgid: int, start: int | None, sig: signal.Signals) -> None:
    if not reused(pgid, start):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pgid, sig)


def group_usage(pgid: int) -> tuple[int, int]:
    """(cpu ns, resident bytes) summed over a process group's live members."""
    clock_ticks, page_size = os.sysconf("SC_CLK_TCK"), os.sysconf("SC_PAGE_SIZE")
    cpu = mem = 0
    for pid in group_members(pgid):
        fields = stat_fields(pid)
        if fields is None:
            continue
        cpu += (int(fields[11]) + int(fields[12])) * 1_000_000_000 // clock_ticks
        mem += int(fields[21]) * page_size
    return cpu, mem
