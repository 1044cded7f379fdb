"""The executor applies plans through a driver: exact actions, idempotence, backoff."""

from __future__ import annotations

from pathlib import Path

import pytest

from shellwego.agent.reconcile import Executor
from shellwego.errors import RuntimeFailure
from shellwego.runtime.driver import InstanceState
from shellwego.runtime.drivers import DriverSet
from shellwego.runtime.fake import FakeDriver

from .helpers import assignment


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def driver(clock: Clock) -> FakeDriver:
    return FakeDriver(max_restarts=1, restart_delay=5.0, clock=clock)


@pytest.fixture
def executor(driver: FakeDriver, clock: Clock, tmp_path: Path) -> Executor:
    async def slug(digest: str, uid: int | None) -> Path:
        return tmp_path / "slugs" / digest

    drivers = DriverSet({"process": driver}, slugs=slug)
    return Executor(drivers, backoff_base=1.0, clock=clock)


async def test_starts_new_and_second_pass_does_nothing(
    executor: Executor, driver: FakeDriver, tmp_path: Path
) -> None:
    desired = [assignment("a", port=20001), assignment("b", port=20002)]
    done = await executor.apply(desired)
    assert [(x.kind, x.instance_id) for x in done] == [("start", "a"), ("start", "b")]
    assert driver.actions == [("prepare", "a"), ("start", "a"), ("prepare", "b"), ("start", "b")]
    spec = driver.spec_of("b")
    assert spec.port == 20002
    assert spec.runtime == "process"
    assert spec.app_dir == tmp_path / "slugs" / ("a" * 64)
    assert spec.env["SECRET_KEY"] == "hunter2-do-not-print"

    driver.actions.clear()
    assert await executor.apply(desired) == []
    assert driver.actions == []
    assert driver.running_ids() == {"a", "b"}


async def test_stops_and_removes_what_is_no_longer_assigned(
    executor: Executor, driver: FakeDriver
) -> None:
    await executor.apply([assignment("a"), assignment("b")])
    driver.actions.clear()
    done = await executor.apply([assignment("b")])
    assert [(x.kind, x.instance_id) for x in done] == [("stop", "a"), ("remove", "a")]
    assert driver.actions == [("stop", "a"), ("remove", "a")]
    assert [s.instance_id for s in await driver.list()] == ["b"]
    driver.actions.clear()
    assert await executor.apply([assignment("b")]) == []
    assert driver.actions == []


async def test_desired_stopped_stops_and_keeps(executor: Executor, driver: FakeDriver) -> None:
    await executor.apply([assignment("a")])
    driver.actions.clear()
    await executor.apply([assignment("a", desired_state="stopped")])
    assert driver.actions == [("stop", "a")]
    assert (await driver.inspect("a")).state == InstanceState.STOPPED


async def test_failed_start_backs_off_without_blocking_others(
    executor: Executor, driver: FakeDriver, clock: Clock
) -> None:
    driver.fail_next_start(RuntimeFailure("cgroup busy"))
    done = await executor.apply([assignment("a"), assignment("b")])
    # a failed, b started anyway
    assert [(x.kind, x.instance_id) for x in done] == [("start", "b")]
    assert driver.running_ids() == {"b"}
    assert executor.failures() == {"a": (1, "cgroup busy", "runtime-failure")}
    assert executor.next_retry_in() == pytest.approx(1.0)

    # before the backoff delay: nothing is attempted
    driver.actions.clear()
    clock.now += 0.5
    assert await executor.apply([assignment("a"), assignment("b")]) == []
    assert driver.actions == []

    # a second failure doubles the delay
    clock.now += 0.6
    driver.fail_next_start(RuntimeFailure("cgroup still busy"))
    assert await executor.apply([assignment("a"), assignment("b")]) == []
    assert driver.actions == [("prepare", "a"), ("start", "a")]
    assert executor.failures() == {"a": (2, "cgroup still busy", "runtime-failure")}
    assert executor.next_retry_in() == pytest.approx(2.0)

    clock.now += 1.0
    driver.actions.clear()
    assert await executor.apply([assignment("a"), assignment("b")]) == []
    assert driver.actions == []

    clock.now += 1.1
    done = await executor.apply([assignment("a"), assignment("b")])
    assert [(x.kind, x.instance_id) for x in done] == [("start", "a")]
    assert driver.running_ids() == {"a", "b"}
    assert executor.failures() == {}
    assert executor.next_retry_in() is None


async def test_crash_is_observed_and_given_up_instance_restarts_with_backoff(
    executor: Executor, driver: FakeDriver, clock: Clock
) -> None:
    desired = [assignment("a")]
    await executor.apply(desired)
    driver.crash("a", exit_code=3)
    # the driver restarts it itself: the agent leaves a restarting instance alone
    status = await driver.inspect("a")
    assert status.state == InstanceState.BACKOFF
    assert status.exit_code == 3
    driver.actions.clear()
    assert await executor.apply(desired) == []
    assert driver.actions == []
    clock.now += 5.0
    status = await driver.inspect("a")
    assert (status.state, status.restarts) == (InstanceState.RUNNING, 1)

    # crashing again exceeds max_restarts=1: the driver gives up
    driver.crash("a", exit_code=4)
    assert (await driver.inspect("a")).state == InstanceState.EXITED
    # the first pass after giving up counts a failure and waits
    assert await executor.apply(desired) == []
    assert driver.actions == []
    assert executor.next_retry_in() == pytest.approx(1.0)
    clock.now += 1.0
    done = await executor.apply(desired)
    assert [(x.kind, x.instance_id) for x in done] == [("start", "a")]
    assert driver.actions == [("prepare", "a"), ("start", "a")]
    assert executor.restarts("a") == 1
    assert (await driver.inspect("a")).state == InstanceState.RUNNING

    # a crash loop escalates: the next give-up waits twice as long
    driver.crash("a")
    driver.crash("a")
    assert (await driver.inspect("a")).state == InstanceState.EXITED
    driver.actions.clear()
    assert await executor.apply(desired) == []
    assert executor.next_retry_in() == pytest.approx(2.0)


async def test_remove_failure_is_retried_next_pass(executor: Executor, driver: FakeDriver) -> None:
    await executor.apply([assignment("a")])

    original = driver.remove
    calls = 0

    async def flaky_remove(instance_id: str) -> None:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise RuntimeFailure("busy")
        await original(instance_id)

    driver.remove = flaky_remove  # type: ignore[method-assign]
    done = await executor.apply([])
    assert [(x.kind, x.instance_id) for x in done] == [("stop", "a")]
    done = await executor.apply([])
    assert [(x.kind, x.instance_id) for x in done] == [("remove", "a")]
    assert await driver.list() == []


async def test_app_dir_failure_is_a_start_failure(driver: FakeDriver, clock: Clock) -> None:
    async def no_slug(digest: str, uid: int | None) -> Path:
        raise RuntimeFailure("slug download failed")

    executor = Executor(DriverSet({"process": driver}, slugs=no_slug), clock=clock)
    assert await executor.apply([assignment("a")]) == []
    assert driver.actions == []
    assert executor.failures() == {"a": (1, "slug download failed", "runtime-failure")}
