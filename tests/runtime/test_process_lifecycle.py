"""Starting, crashing, stopping and re-adopting real instances."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import sys
import time
from pathlib import Path

import pytest

from shellwego.errors import RuntimeFailure
from shellwego.runtime.driver import Driver, InstanceState, InstanceStatus
from shellwego.runtime.process import ProcessDriver
from shellwego.runtime.procfs import process_start_time

from .conftest import Node, wait_http, wait_until


def _group_processes(pgid: int) -> dict[int, str]:
    """Live processes of a process group, with their command lines."""
    found = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_bytes()
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        fields = stat[stat.rindex(b")") + 2 :].split()
        if fields[0] != b"Z" and int(fields[2]) == pgid:
            found[int(entry.name)] = cmdline
    return found


@pytest.mark.parametrize("sandbox", [None, False], ids=["host-default", "unsandboxed"])
async def test_instance_serves_on_its_port_with_only_its_own_environment(
    node: Node, monkeypatch: pytest.MonkeyPatch, sandbox: bool | None
) -> None:
    monkeypatch.setenv("AGENT_ONLY_VARIABLE", "must-not-leak")
    app = node.app("web")
    (app / ".profile.d").mkdir()
    (app / ".profile.d" / "python.sh").write_text(
        'export FROM_PROFILE="set by .profile.d"\nexport PATH="$HOME/bin:$PATH"\n'
    )
    driver = node.driver(sandbox=sandbox)
    assert isinstance(driver, Driver)
    spec = node.spec("web-1", app, env={"GREETING": "hello"})

    status = await driver.start(spec)
    assert status.state == InstanceState.RUNNING
    assert status.pid is not None and status.port == spec.port

    env = json.loads(await wait_http(spec.port))
    assert env["PORT"] == str(spec.port)
    # the instance's own layer over the slug: /app in the sandbox, else its host path
    sandboxed = "bwrap" in driver.capabilities().isolation
    home = Path("/app") if sandboxed else node.state_dir / "web-1" / "app"
    assert env["HOME"] == str(home)
    assert env["WEB_CONCURRENCY"] == "2"  # 512 MiB
    assert env["GREETING"] == "hello"
    assert env["LANG"] == "C.UTF-8"
    assert env["FROM_PROFILE"] == "set by .profile.d"
    assert env["PATH"] == f"{home}/bin:/usr/local/bin:/usr/bin:/bin"
    assert "AGENT_ONLY_VARIABLE" not in env

    state = json.loads((node.state_dir / "web-1" / "state.json").read_text())
    assert state["pid"] == status.pid
    assert state["pid_start"] == process_start_time(status.pid)
    assert state["desired"] == "running"
    assert (await driver.start(spec)).pid == status.pid  # idempotent
    assert [s.instance_id for s in await driver.list()] == ["web-1"]


async def test_crashing_instance_is_restarted_with_growing_backoff(node: Node) -> None:
    app = node.app("crashy", {"crash.py": "import sys\nprint('boom')\nsys.exit(3)\n"})
    driver = node.driver(backoff_base=0.4)
    status = await driver.start(node.spec("crashy-1", app, "python3 crash.py"))
    starts = [status.started_at]

    async def restarted(count: int) -> InstanceStatus | None:
        current = await driver.inspect("crashy-1")
        return current if current.restarts >= count else None

    first = await wait_until(lambda: restarted(1), interval=0.01)
    starts.append(first.started_at)
    assert first.restarts == 1
    second = await wait_until(lambda: restarted(2), interval=0.01)
    starts.append(second.started_at)
    assert second.restarts == 2
    assert second.exit_code == 3
    assert second.last_error == "exited with code 3"

    moments = [s.timestamp() for s in starts if s is not None]
    assert len(moments) == 3
    gap1, gap2 = moments[1] - moments[0], moments[2] - moments[1]
    assert gap1 >= 0.4
    assert gap2 >= 0.8
    assert gap2 > gap1

    stopped = await driver.stop("crashy-1")
    assert stopped.state == InstanceState.STOPPED
    await asyncio.sleep(2.0)  # longer than the next backoff delay (1.6 s)
    after = await driver.inspect("crashy-1")
    assert after.state == InstanceState.STOPPED
    assert after.restarts == stopped.restarts


@pytest.mark.parametrize("sandbox", [None, False], ids=["host-default", "unsandboxed"])
async def test_stop_terminates_the_whole_process_group(node: Node, sandbox: bool | None) -> None:
    app = node.app("group")
    driver = node.driver(sandbox=sandbox)
    spec = node.spec("group-1", app, "sleep 1000 & exec python3 web.py")
    status = await driver.start(spec)
    await wait_http(spec.port)
    assert status.pid is not None
    members = _group_processes(status.pid)
    sleepers = [pid for pid, cmd in members.items() if cmd.startswith("sleep 1000")]
    assert len(sleepers) == 1, members

    stopped = await driver.stop("group-1", grace_seconds=10)
    assert stopped.state == InstanceState.STOPPED
    assert stopped.pid is None
    assert process_start_time(sleepers[0]) is None
    assert _group_processes(status.pid) == {}

    again = await driver.stop("group-1", grace_seconds=1)
    assert again.state == InstanceState.STOPPED
    assert (await driver.stop("no-such-instance")).state == InstanceState.UNKNOWN


async def test_stop_kills_an_instance_that_ignores_sigterm_after_the_grace_period(
    node: Node,
) -> None:
    # it says when SIGTERM arrives and carries on
    stubborn = "import signal, time\n"
    stubborn += "signal.signal(signal.SIGTERM, lambda *_: print('TERM', flush=True))\n"
    stubborn += "print('up', flush=True)\nwhile True: time.sleep(1000)\n"
    app = node.app("stubborn", {"stubborn.py": stubborn})
    driver = node.driver()
    status = await driver.start(node.spec("stubborn-1", app, "python3 stubborn.py"))
    assert status.pid is not None

    async def says_up() -> bool:
        return "up" in [line.line async for line in driver.logs("stubborn-1")]

    await wait_until(says_up)
    [python] = [
        p for p, cmd in _group_processes(status.pid).items() if cmd.startswith("python3 stubborn")
    ]
    stopped = await driver.stop("stubborn-1", grace_seconds=2)
    assert stopped.state == InstanceState.STOPPED

    async def says_term() -> bool:
        return "TERM" in [line.line async for line in driver.logs("stubborn-1")]

    await wait_until(says_term)  # SIGTERM first, SIGKILL once the grace period was over
    assert process_start_time(python) is None
    assert _group_processes(status.pid) == {}


async def test_restarted_agent_readopts_running_instance_and_still_supervises_it(
    node: Node,
) -> None:
    app = node.app("adopt")
    first = node.driver()
    spec = node.spec("adopt-1", app)
    started = await first.start(spec)
    await wait_http(spec.port)
    await first.close()
    assert process_start_time(started.pid or 0) is not None  # survives its driver

    second = node.driver()
    [recovered] = await second.recover()
    assert recovered.state == InstanceState.RUNNING
    assert recovered.pid == started.pid
    assert recovered.restarts == 0
    await asyncio.sleep(0.5)
    assert (await second.inspect("adopt-1")).pid == started.pid
    await wait_http(spec.port)
    await second.prepare(spec)  # the agent hands it its environment again, as it does once

    assert started.pid is not None
    os.killpg(started.pid, signal.SIGKILL)

    async def replaced() -> InstanceStatus | None:
        current = await second.inspect("adopt-1")
        ok = current.restarts == 1 and current.state == InstanceState.RUNNING
        return current if ok else None

    restarted = await wait_until(replaced)
    assert restarted.pid != started.pid
    await wait_http(spec.port)


async def test_instance_that_died_while_the_agent_was_away_is_restarted_on_recover(
    node: Node,
) -> None:
    app = node.app("away")
    first = node.driver()
    spec = node.spec("away-1", app)
    started = await first.start(spec)
    await wait_http(spec.port)
    await first.close()
    assert started.pid is not None
    os.killpg(started.pid, signal.SIGKILL)

    async def dead() -> bool:
        return process_start_time(started.pid or 0) is None

    await wait_until(dead)
    second = node.driver()
    [recovered] = await second.recover()
    # its environment never went to disk: it waits for the agent to hand it over again
    assert recovered.state == InstanceState.BACKOFF
    assert recovered.error_code == "waiting-for-config"
    assert recovered.last_error is not None and "while the agent was away" in recovered.last_error
    await second.prepare(spec)

    async def restarted() -> InstanceStatus | None:
        current = await second.inspect("away-1")
        return current if current.state == InstanceState.RUNNING else None

    running = await wait_until(restarted)
    assert running.restarts == 1 and running.error_code is None
    assert running.pid not in (None, started.pid)
    await wait_http(spec.port)


async def test_a_second_agent_starting_a_live_instance_adopts_it_instead_of_duplicating(
    node: Node,
) -> None:
    app = node.app("twice")
    first = node.driver()
    spec = node.spec("twice-1", app)
    started = await first.start(spec)
    await first.close()
    second = node.driver()
    again = await second.start(spec)
    assert again.pid == started.pid
    assert again.restarts == 0


async def test_start_without_app_directory_fails_clearly_without_leaking_env(
    node: Node,
) -> None:
    driver = node.driver()
    spec = node.spec("ghost-1", node.apps / "missing", env={"DATABASE_URL": "postgres://s3cr3t"})
    with pytest.raises(RuntimeFailure) as info:
        await driver.start(spec)
    assert "app directory" in info.value.detail
    assert "s3cr3t" not in str(info.value)
    assert (await driver.inspect("ghost-1")).state == InstanceState.EXITED


async def test_capabilities_say_what_isolation_this_host_gives(node: Node) -> None:
    caps = node.driver().capabilities()
    assert caps.runtime == "process" and caps.available
    assert "process-group" in caps.isolation
    assert caps.memory_limit == any(i.startswith("cgroup") for i in caps.isolation)
    if "bwrap" not in caps.isolation or not caps.memory_limit:
        assert caps.notes  # says why
    # a root agent: overlays over slugs, instances as nobody; otherwise copies, as itself
    layer = "overlay" if os.geteuid() == 0 else "private-copy"
    expected = (layer, "uid-per-app") if os.geteuid() == 0 else (layer,)
    assert caps.isolation[-len(expected) :] == expected
    bare = ProcessDriver(node.state_dir, sandbox=False, cgroups=False, run_as=None)
    assert bare.capabilities().isolation == ("process-group", layer)
    assert not bare.capabilities().memory_limit
    assert bare.capabilities().notes[:2] == (
        "cgroup limits are disabled by configuration",
        "sandboxing is disabled by configuration: instances see their app directory (HOME) "
        "at its host path instead of /app",
    )


AGENT = """
import asyncio, sys
from pathlib import Path
from shellwego.runtime.driver import InstanceSpec
from shellwego.runtime.process import ProcessDriver

async def main():
    driver = ProcessDriver(Path(sys.argv[1]))
    spec = InstanceSpec("solo-1", "a", "solo", "web", "r1", "python3 web.py",
                        Path(sys.argv[2]), {}, int(sys.argv[3]))
    status = await driver.start(spec)
    print(status.pid)

asyncio.run(main())
"""


async def test_instance_outlives_the_agent_process_that_started_it(node: Node) -> None:
    app = node.app("solo")
    port = node.spec("x", app).port
    agent = await asyncio.create_subprocess_exec(
        sys.executable, "-c", AGENT, str(node.state_dir), str(app), str(port),
        stdout=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, _ = await asyncio.wait_for(agent.communicate(), 30)
    assert agent.returncode == 0
    pid = int(out)
    await wait_http(port)  # still serving with its agent gone

    driver = node.driver()
    [status] = await driver.recover()
    assert (status.pid, status.restarts, status.state) == (pid, 0, InstanceState.RUNNING)
    stopped = await driver.stop("solo-1", grace_seconds=5)
    assert stopped.state == InstanceState.STOPPED
    assert process_start_time(pid) is None


async def test_failed_restart_keeps_backing_off_until_the_app_can_start_again(
    node: Node,
) -> None:
    app = node.app("flaky", {"web.py": "import sys\nsys.exit(1)\n"})
    driver = node.driver(backoff_base=0.2, backoff_max=0.4)
    spec = node.spec("flaky-1", app)
    await driver.start(spec)
    shutil.rmtree(app)

    async def cannot_start() -> InstanceStatus | None:
        status = await driver.inspect("flaky-1")
        error = status.last_error or ""
        return status if "app directory" in error else None

    status = await wait_until(cannot_start)
    assert status.state == InstanceState.BACKOFF
    node.app("flaky")  # a working app again

    async def serving() -> InstanceStatus | None:
        status = await driver.inspect("flaky-1")
        return status if status.state == InstanceState.RUNNING else None

    await wait_until(serving)
    await wait_http(spec.port)


# Shuts down 1.5 s after the first SIGTERM, whatever comes next.
SLOW_TO_STOP = """
import signal, sys, time
deadline = None
def on_term(*_):
    global deadline
    deadline = deadline or time.monotonic() + 1.5
signal.signal(signal.SIGTERM, on_term)
print("up", flush=True)
while deadline is None or time.monotonic() < deadline:
    time.sleep(0.02)
"""


def _copies(token: str) -> list[int]:
    """Live python processes started with ``token`` among their arguments."""
    found = []
    for entry in Path("/proc").iterdir():
        try:
            argv = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if argv[0].endswith(b"python3") and token.encode() in argv:
            found.append(int(entry.name))
    return found


@pytest.mark.parametrize("sandbox", [None, False], ids=["host-default", "unsandboxed"])
async def test_an_instance_left_stopping_by_a_dead_agent_never_runs_twice(
    node: Node, sandbox: bool | None
) -> None:
    """Unsandboxed, the app is the instance's main process and outlives the agent; in the
    sandbox, bubblewrap (the main process) ends at the SIGTERM while the app lingers."""
    app = node.app("slow", {"slow.py": SLOW_TO_STOP})
    token = f"token-{os.getpid()}-{time.monotonic_ns()}"
    spec = node.spec("slow-1", app, f"python3 slow.py {token}")
    first = node.driver(sandbox=sandbox)
    await first.start(spec)

    async def up() -> bool:
        return "up" in [line.line async for line in first.logs("slow-1")]

    await wait_until(up)
    [old] = _copies(token)
    # the agent dies while stopping the instance: "stopped" is on disk, the app still runs
    stopping = asyncio.create_task(first.stop("slow-1", grace_seconds=30))
    await asyncio.sleep(0.3)
    stopping.cancel()
    await asyncio.gather(stopping, return_exceptions=True)
    await first.close()
    assert _copies(token) == [old]

    second = node.driver(sandbox=sandbox)
    again = await second.start(spec)
    assert again.state == InstanceState.RUNNING
    assert old not in _copies(token)

    async def restarted() -> list[int]:
        return _copies(token)

    assert len(await wait_until(restarted)) == 1
    await second.stop("slow-1", grace_seconds=5)
