"""A hostile build step against its limits: its uid, a fork bomb, open files."""

from __future__ import annotations

import json
import subprocess
import tarfile
from pathlib import Path

import pytest

from shellwego.build.builder import Builder, BuildResult
from shellwego.errors import BuildFailed
from support.hostile_build import app_uid, hostile_python_app, need_root_builder, run_build

WHOAMI = """
import json, resource
with open("whoami.json", "w") as f:
    json.dump({"uid": os.getuid(), "gid": os.getgid(), "groups": os.getgroups(),
               "nofile": resource.getrlimit(resource.RLIMIT_NOFILE)}, f)
"""

# forks children that sleep (letting go of pip's pipes, so pip sees the backend fail at
# once), until forks are refused (or 300 of them run)
FORK_BOMB = """
import time
children = failed = 0
while children < 300 and failed < 20:
    try:
        pid = os.fork()
    except OSError:
        failed += 1
        continue
    if pid == 0:
        os.closerange(0, 256)
        time.sleep(600)
        os._exit(0)
    children += 1
raise SystemExit(f"fork bomb: {children} children, {failed} forks refused")
"""


async def test_build_steps_run_as_the_apps_uid_with_its_open_file_limit(work: Path) -> None:
    need_root_builder()
    uid = app_uid()
    builder = Builder(work / "cache", nofile_limit=200)
    log, result = await run_build(
        builder, hostile_python_app(work / "src", WHOAMI), work / "o", uid
    )
    assert isinstance(result, BuildResult), f"{result}\n{log.text}"
    with tarfile.open(result.slug_path) as tar:
        data = tar.extractfile("whoami.json")
        assert data is not None
        seen = json.load(data)
    assert seen == {"uid": uid, "gid": uid, "groups": [], "nofile": [200, 200]}


async def test_a_fork_bomb_in_a_build_step_fails_the_build_at_its_process_limit(
    work: Path,
) -> None:
    need_root_builder()
    builder = Builder(work / "cache", pids_limit=64)
    if not builder.cgroups().pids_limit:
        pytest.skip(f"no pids cgroup controller here: {builder.cgroups().note}")
    uid = app_uid()
    log, result = await run_build(
        builder, hostile_python_app(work / "src", FORK_BOMB), work / "out", uid
    )
    assert isinstance(result, BuildFailed), log.text
    assert str(result) == (
        "uv pip install reached the build's process limit: at most 64 processes for all of a "
        "step's processes"
    )
    # nothing of the step is left, and the host still starts processes
    left = subprocess.run(["pgrep", "-u", str(uid)], capture_output=True, text=True)
    assert left.stdout == ""
    assert subprocess.run(["/bin/true"]).returncode == 0
    done = subprocess.run(["sh", "-c", "for i in 1 2 3 4 5 6 7 8; do true & done; wait"])
    assert done.returncode == 0
