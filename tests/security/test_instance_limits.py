"""A hostile instance against its limits: a fork bomb, open files, and another app's uid.

Each test runs real instances through the process runtime on this host; what the host
cannot enforce (no pids cgroup, not root) is skipped with the reason.
"""

from __future__ import annotations

import asyncio
import json
import os
from pathlib import Path

import pytest

from shellwego.runtime.driver import InstanceState
from shellwego.runtime.process import ProcessDriver
from support.scratch_node import HTTP_APP, Node, http_get, wait_http, wait_until

FORK_BOMB = """\
import os, time
children = 0
failed = 0
while children + failed < 5000:
    try:
        if os.fork() == 0:
            time.sleep(600)
            os._exit(0)
        children += 1
    except OSError:
        failed += 1
        if failed >= 50:
            break
print("forked", children, "refused", failed, flush=True)
time.sleep(600)
"""

WHOAMI = """\
import json, os, resource, time
soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
print(json.dumps({"uid": os.getuid(), "gid": os.getgid(), "groups": os.getgroups(),
                  "nofile": [soft, hard]}), flush=True)
time.sleep(600)
"""


def _pids_enforced(driver: ProcessDriver) -> None:
    caps = driver.capabilities()
    if not any(i.startswith("cgroup") for i in caps.isolation):
        pytest.skip(f"no cgroups on this host: {caps.notes}")
    if any("pids cgroup" in note for note in caps.notes):
        pytest.skip("this host has no pids cgroup controller")


async def _first_line(driver: ProcessDriver, instance_id: str) -> str:
    async def line() -> str | None:
        async for entry in driver.logs(instance_id):
            if entry.line.strip():
                return entry.line
        return None

    return str(await wait_until(line))


async def test_a_fork_bomb_stops_at_its_pids_limit_and_the_other_apps_keep_serving(
    node: Node,
) -> None:
    driver = node.driver(pids_limit=64)
    _pids_enforced(driver)
    web = node.spec("calm-1", node.app("calm"))
    bomb = node.spec("bomb-1", node.app("bomb", {"bomb.py": FORK_BOMB}), "python3 bomb.py")
    await driver.start(web)
    await wait_http(web.port)
    await driver.start(bomb)

    line = await _first_line(driver, "bomb-1")
    forked = int(line.split()[1])
    assert forked < 64, line  # the limit held, whatever the bomb tried
    assert int(line.split()[3]) > 0, line  # and its forks were refused, not queued
    # the neighbour still answers, and the host can still start processes
    assert json.loads(await asyncio.to_thread(http_get, web.port))["PORT"] == str(web.port)
    done = await asyncio.create_subprocess_exec("true")
    assert await done.wait() == 0

    await driver.stop("bomb-1", grace_seconds=1)  # the whole tree goes, every fork
    assert (await driver.inspect("bomb-1")).state == InstanceState.STOPPED
    assert json.loads(await asyncio.to_thread(http_get, web.port))["PORT"] == str(web.port)


async def test_instances_get_their_apps_own_uid_and_an_open_files_limit(node: Node) -> None:
    if os.geteuid() != 0:
        pytest.skip("only a root agent switches instances to their apps' uids")
    driver = node.driver(nofile_limit=1234)
    seen = {}
    for name, uid in (("first", 1000501), ("second", 1000502)):
        app = node.app(name, {"who.py": WHOAMI})
        spec = node.spec(f"{name}-1", app, "python3 who.py", uid=uid)
        await driver.start(spec)
        seen[name] = json.loads(await _first_line(driver, f"{name}-1"))
    assert seen["first"] == {"uid": 1000501, "gid": 1000501, "groups": [], "nofile": [1234, 1234]}
    assert seen["second"]["uid"] == seen["second"]["gid"] == 1000502


async def test_one_app_cannot_signal_or_read_another_apps_instance(node: Node) -> None:
    if os.geteuid() != 0:
        pytest.skip("only a root agent switches instances to their apps' uids")
    driver = node.driver()
    victim_app = node.app("victim", {"web.py": HTTP_APP, "secret.txt": "victim data"})
    victim = node.spec("victim-1", victim_app, uid=1000601)
    started = await driver.start(victim)
    await wait_http(victim.port)
    assert started.pid is not None
    attack = f"""\
import json, os, signal
results = {{}}
try:
    os.kill({started.pid}, signal.SIGKILL)
    results["kill"] = "ok"
except OSError as exc:
    results["kill"] = type(exc).__name__
try:
    results["read"] = open("/proc/{started.pid}/environ").read()
except OSError as exc:
    results["read"] = type(exc).__name__
try:
    results["files"] = open("{victim_app / 'secret.txt'}").read()
except OSError as exc:
    results["files"] = type(exc).__name__
print(json.dumps(results), flush=True)
"""
    attacker = node.spec("attacker-1", node.app("attacker"), uid=1000602)
    result = await driver.exec(attacker, ["python3", "-c", attack], timeout=30)
    verdict = json.loads(result.output.strip().splitlines()[-1])
    assert verdict["kill"] in ("ProcessLookupError", "PermissionError")
    assert verdict["read"] in ("FileNotFoundError", "PermissionError")
    assert verdict["files"] in ("FileNotFoundError", "PermissionError")
    assert (await driver.inspect("victim-1")).pid == started.pid
    await wait_http(victim.port)


async def test_configuration_never_reaches_the_nodes_disk(node: Node) -> None:
    secret = "s3cr3t-never-on-disk-7f1c"
    driver = node.driver()
    spec = node.spec("conf-1", node.app("conf"), env={"DATABASE_URL": f"postgres://{secret}"})
    await driver.start(spec)
    assert json.loads(await wait_http(spec.port))["DATABASE_URL"].endswith(secret)
    await driver.close()

    # an agent restart: the instance is re-adopted, its environment is not on disk to read
    again = node.driver()
    [adopted] = await again.recover()
    assert adopted.state == InstanceState.RUNNING
    await again.prepare(spec)  # what the agent does once it has the control plane's answer
    assert adopted.pid is not None
    os.killpg(adopted.pid, 9)

    async def restarted() -> bool:
        status = await again.inspect("conf-1")
        return status.state == InstanceState.RUNNING and status.pid != adopted.pid

    await wait_until(restarted)
    assert json.loads(await wait_http(spec.port))["DATABASE_URL"].endswith(secret)
    await again.stop("conf-1", grace_seconds=1)

    for path in Path(node.root).rglob("*"):
        if path.is_file() and not path.is_symlink():
            assert secret.encode() not in path.read_bytes(), path
