"""`shellwego apps delete` on a real all-in-one: the app's processes stop within seconds,
its URL is a 404 as soon as the command returns, and its name can be used again at once."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from .conftest import EXAMPLES, Platform, running_platform
from .test_platform import wait_instances

SERVING = "Hello from a static site on ShellWeGo!"


@pytest.fixture(scope="module")
def platform(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Platform]:
    with running_platform(tmp_path_factory.mktemp("deletes"), ports="33000-34999") as p:
        yield p


def group(pgid: int) -> set[int]:
    """Pids of the processes in process group ``pgid`` (an instance's own group)."""
    found = set()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        if int(stat.rsplit(")", 1)[1].split()[2]) == pgid:
            found.add(int(entry.name))
    return found


def exists(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def test_a_deleted_apps_processes_stop_its_url_is_404_and_its_name_is_free(
    platform: Platform,
) -> None:
    platform.cli("apps", "create", "gone")
    platform.cli("deploy", str(EXAMPLES / "static-site"), "-a", "gone")
    platform.cli("scale", "web=2", "-a", "gone")
    pids = [int(i["pid"]) for i in wait_instances(platform, "gone", "web", 2)]
    processes = set().union(*(group(pid) for pid in pids))
    assert set(pids) <= processes and all(exists(pid) for pid in processes)
    platform.wait_for("gone", SERVING)

    r = platform.cli("apps", "delete", "gone", "--yes")
    assert r.stdout == "Deleted app gone.\n"
    # no wait: the edge no longer serves it when the command returns
    gone = platform.get("gone")
    assert gone.status_code == 404, (gone.status_code, gone.text[:200])
    r = platform.cli("apps", "info", "gone", check=False)
    assert r.returncode != 0 and "not found" in r.stderr
    assert "gone" not in platform.cli("apps", "list").stdout

    end = time.monotonic() + 5
    while left := sorted(pid for pid in processes if exists(pid)):
        assert time.monotonic() < end, f"the deleted app's processes still run: {left}"
        time.sleep(0.1)

    platform.cli("apps", "create", "gone")
    deploy = platform.cli("deploy", str(EXAMPLES / "static-site"), "-a", "gone")
    assert f"http://gone.localhost:{platform.http_port}/" in deploy.stdout
    assert SERVING in platform.get("gone").text
    [fresh] = wait_instances(platform, "gone", "web", 1)
    assert int(fresh["pid"]) not in processes
