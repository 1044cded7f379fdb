"""The fake runtime behaves like the Driver protocol says (it is what the agent tests use)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from shellwego.errors import RuntimeFailure
from shellwego.runtime.driver import Driver, InstanceSpec, InstanceState, LogLine
from shellwego.runtime.fake import FakeDriver


def spec(iid: str = "i1") -> InstanceSpec:
    return InstanceSpec(
        instance_id=iid,
        app_id="A",
        app_name="blog",
        process_type="web",
        release_id="R",
        command="serve",
        app_dir=Path("/nonexistent"),
        env={},
        port=20005,
    )


async def test_lifecycle_and_actions() -> None:
    d = FakeDriver()
    assert isinstance(d, Driver)
    assert d.capabilities().runtime == "fake"
    await d.prepare(spec())
    assert (await d.inspect("i1")).state == InstanceState.PENDING
    status = await d.start(spec())
    assert status.state == InstanceState.RUNNING and status.pid and status.port == 20005
    again = await d.start(spec())
    assert again.pid == status.pid  # idempotent: still the same process
    assert (await d.stop("i1")).state == InstanceState.STOPPED
    assert (await d.stop("i1")).state == InstanceState.STOPPED
    await d.remove("i1")
    await d.remove("i1")
    assert (await d.inspect("i1")).state == InstanceState.UNKNOWN
    assert d.actions == [
        ("prepare", "i1"),
        ("start", "i1"),
        ("start", "i1"),
        ("stop", "i1"),
        ("stop", "i1"),
        ("remove", "i1"),
        ("remove", "i1"),
    ]


async def test_remove_refuses_a_running_instance_and_start_needs_prepare() -> None:
    d = FakeDriver()
    with pytest.raises(RuntimeFailure):
        await d.start(spec())
    await d.prepare(spec())
    await d.start(spec())
    with pytest.raises(RuntimeFailure):
        await d.remove("i1")


async def test_injected_start_failure_happens_once() -> None:
    d = FakeDriver()
    await d.prepare(spec())
    d.fail_next_start(RuntimeFailure("no memory"))
    with pytest.raises(RuntimeFailure, match="no memory"):
        await d.start(spec())
    assert (await d.start(spec())).state == InstanceState.RUNNING


async def test_crash_rule() -> None:
    now = [0.0]
    d = FakeDriver(max_restarts=2, restart_delay=1.0, clock=lambda: now[0])
    await d.prepare(spec())
    await d.start(spec())
    for expected_restarts in (1, 2):
        d.crash("i1", exit_code=137)
        status = await d.inspect("i1")
        assert (status.state, status.exit_code, status.pid) == (InstanceState.BACKOFF, 137, None)
        now[0] += 1.0
        status = await d.inspect("i1")
        assert (status.state, status.restarts) == (InstanceState.RUNNING, expected_restarts)
    d.crash("i1")
    assert (await d.inspect("i1")).state == InstanceState.EXITED
    status = await d.start(spec())
    assert (status.state, status.restarts) == (InstanceState.RUNNING, 2)


async def test_logs_tail_and_follow_until_removed() -> None:
    d = FakeDriver()
    await d.prepare(spec())
    await d.start(spec())
    for n in range(3):
        d.emit_log("i1", f"line {n}")
    assert [x.line async for x in d.logs("i1", tail=2)] == ["line 1", "line 2"]
    assert [x.line async for x in d.logs("i1", tail=0)] == []

    got: list[LogLine] = []

    async def follow() -> None:
        async for line in d.logs("i1", follow=True):
            got.append(line)

    task = asyncio.create_task(follow())
    await asyncio.sleep(0)
    d.emit_log("i1", "late", stream="stderr")
    await d.stop("i1")
    await d.remove("i1")
    await asyncio.wait_for(task, 1.0)
    assert [(x.line, x.stream) for x in got][-1] == ("late", "stderr")
    assert [x.line for x in got] == ["line 0", "line 1", "line 2", "late"]
