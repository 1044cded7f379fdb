"""Logs, one-off commands and resource figures of real instances."""

from __future__ import annotations

import asyncio
import re

import pytest

from shellwego.errors import InvalidInput, RuntimeFailure
from shellwego.runtime.driver import LogLine
from shellwego.runtime.logfile import LOG_LIMIT_BYTES
from shellwego.runtime.process import EXEC_OUTPUT_LIMIT

from .conftest import Node, wait_http, wait_until

CHATTY = """
import os, sys, time
print("first", flush=True)
print("second", flush=True)
print("third", flush=True)
print("problem", file=sys.stderr, flush=True)
while not os.path.exists(sys.argv[1]):
    time.sleep(0.02)
print("after go", flush=True)
time.sleep(1000)
"""


async def test_logs_tail_and_follow_with_streams_and_timestamps(node: Node) -> None:
    driver = node.driver()
    app = node.app("chatty", {"chatty.py": CHATTY})
    go = node.signals / "go"
    await driver.start(node.spec("chatty-1", app, f"python3 chatty.py {go}"))

    async def backlog() -> list[LogLine]:
        lines = [line async for line in driver.logs("chatty-1")]
        return lines if len(lines) >= 4 else []

    everything = await wait_until(backlog)
    assert [(ln.stream, ln.line) for ln in everything] == [
        ("stdout", "first"),
        ("stdout", "second"),
        ("stdout", "third"),
        ("stderr", "problem"),
    ]
    stamps = [ln.timestamp for ln in everything]
    assert stamps == sorted(stamps)
    assert all(ln.instance_id == "chatty-1" and ln.timestamp.tzinfo for ln in everything)
    tail = [ln.line async for ln in driver.logs("chatty-1", tail=2)]
    assert tail == ["third", "problem"]
    assert [ln async for ln in driver.logs("chatty-1", tail=0)] == []

    followed: list[LogLine] = []

    async def follow() -> None:
        async for line in driver.logs("chatty-1", follow=True, tail=1):
            followed.append(line)

    follower = asyncio.create_task(follow())
    await asyncio.sleep(0.3)
    go.touch()

    async def saw_new_line() -> bool:
        return any(ln.line == "after go" for ln in followed)

    await wait_until(saw_new_line)
    assert followed[0].line == "problem"
    assert followed[-1].timestamp > stamps[-1]
    assert not follower.done()
    await driver.stop("chatty-1", grace_seconds=1)
    await driver.remove("chatty-1")
    await asyncio.wait_for(follower, 5)
    assert not (node.state_dir / "chatty-1").exists()
    with pytest.raises(RuntimeFailure):
        [ln async for ln in driver.logs("chatty-1")]


async def test_log_file_is_rotated_and_stays_bounded(node: Node) -> None:
    driver = node.driver()
    lines = 60_000
    spammer = f"import sys, time\nfor i in range({lines}):\n    print('x' * 100, i)\n"
    spammer += "sys.stdout.flush()\ntime.sleep(1000)\n"
    app = node.app("spam", {"spam.py": spammer})
    await driver.start(node.spec("spam-1", app, "python3 spam.py"))

    async def last_line() -> bool:
        tail = [ln.line async for ln in driver.logs("spam-1", tail=1)]
        return tail == ["x" * 100 + f" {lines - 1}"]

    await wait_until(last_line, interval=0.2)
    log_dir = node.state_dir / "spam-1"
    assert (log_dir / "output.log.1").exists()
    assert (log_dir / "output.log").stat().st_size <= LOG_LIMIT_BYTES + 1024
    kept = [ln async for ln in driver.logs("spam-1")]
    assert 0 < len(kept) < lines


async def test_exec_runs_a_one_off_in_the_instance_environment(node: Node) -> None:
    driver = node.driver()
    app = node.app("oneoff", {".profile.d/env.sh": "export FROM_PROFILE=profiled\n"})
    spec = node.spec("oneoff-1", app, env={"RELEASE_VAR": "v1"})
    script = 'echo "out $PORT $HOME $RELEASE_VAR $FROM_PROFILE"; echo err >&2; exit 7'
    result = await driver.exec(spec, ["sh", "-c", script])
    assert result.exit_code == 7
    # HOME is the command's own writable layer over the app's slug: /app in the sandbox
    home = re.escape(str(node.state_dir / "oneoff-1.exec-")) + "[0-9a-f]{8}/app"
    if "bwrap" in driver.capabilities().isolation:
        home = "/app"
    assert re.search(rf"^out {spec.port} {home} v1 profiled$", result.output, re.M)
    assert "err" in result.output

    ok = await driver.exec(spec, ["python3", "-c", "print('migrated')"])
    assert (ok.exit_code, ok.output) == (0, "migrated\n")

    big = await driver.exec(spec, ["python3", "-c", "print('x' * 3_000_000)"])
    assert big.exit_code == 0
    assert len(big.output) == EXEC_OUTPUT_LIMIT

    with pytest.raises(InvalidInput):
        await driver.exec(spec, [])


async def test_exec_timeout_kills_the_command_and_returns_124(node: Node) -> None:
    driver = node.driver()
    app = node.app("slow", {})
    spec = node.spec("slow-1", app)
    # were the command (or the child it left behind, holding the output) not killed, the
    # exec would wait for it far longer than the test's own timeout
    result = await driver.exec(
        spec, ["sh", "-c", "echo started; sleep 100000 & sleep 100000; echo never"], timeout=1.0
    )
    assert result.exit_code == 124
    assert "started" in result.output and "never" not in result.output


async def test_stats_report_cpu_and_memory_of_a_running_instance(node: Node) -> None:
    for options in ({}, {"cgroups": False, "sandbox": False}):
        driver = node.driver(**options)
        app = node.app("measured")
        spec = node.spec(f"measured-{len(options)}", app)
        await driver.start(spec)
        await wait_http(spec.port)
        stats = await driver.stats(spec.instance_id)
        assert stats.cpu_usage_ns > 0
        assert 1 << 20 < stats.memory_bytes < 512 << 20
        await driver.stop(spec.instance_id, grace_seconds=2)
        assert (await driver.stats(spec.instance_id)).memory_bytes == 0
    with pytest.raises(RuntimeFailure):
        await driver.stats("nope")
