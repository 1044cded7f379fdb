"""One leader runs the cluster-wide loops; a dead one is replaced; a deposed one writes nothing."""

from __future__ import annotations

import asyncio
import functools
from collections import Counter
from collections.abc import Iterator

import pytest
import sqlalchemy as sa

from shellwego.clock import FrozenClock
from shellwego.controllers import loops, rollout
from shellwego.controllers.leader import LEASE_SECONDS, RENEW_SECONDS, Leadership, Singleton
from shellwego.errors import LeaseLost
from shellwego.models import App, DeployPolicy, Event, Instance, Release
from shellwego.services import deployments, leases, processes
from shellwego.services.bootstrap import build_context
from shellwego.services.context import Context
from shellwego.settings import Settings
from shellwego.store import repository as repo

from .world import World


@pytest.fixture
def other(settings: Settings, clock: FrozenClock, rctx: Context) -> Iterator[Context]:
    """A second control-plane replica on the same database and clock."""
    context = build_context(settings, clock=clock, migrate=False)
    yield context
    context.db.dispose()


async def idle(_ctx: Context, stop: asyncio.Event) -> None:
    await stop.wait()


async def test_one_replica_leads_and_another_takes_over_when_it_dies(
    world: World, other: Context, clock: FrozenClock
) -> None:
    a = Leadership(world.ctx, {"idle": idle}, holder="replica-a")
    b = Leadership(other, {"idle": idle}, holder="replica-b")
    first = await a.step()
    assert first is not None and a.leading
    assert await b.step() is None and not b.leading
    for _ in range(5):  # renewals keep the token; the other keeps waiting
        clock.advance(RENEW_SECONDS)
        renewed = await a.step()
        assert renewed is not None and (renewed.holder, renewed.token) == ("replica-a", first.token)
        assert await b.step() is None
    last_renewal = clock.now()
    a.abandon()  # dies: its loops end, it renews no more, it never gives the lease up
    while await b.step() is None:
        clock.advance(RENEW_SECONDS)
        assert (clock.now() - last_renewal).total_seconds() <= LEASE_SECONDS + RENEW_SECONDS
    assert b.leading
    assert b.held is not None and b.held.token == first.token + 1
    lease = leases.current(other, "controllers")
    assert lease is not None and (lease.holder, lease.token) == ("replica-b", first.token + 1)
    # taken over no earlier than the dead leader's lease expired, and within 10 s of it
    assert LEASE_SECONDS <= (clock.now() - last_renewal).total_seconds() <= 10
    await b.stop_loops()

    # the deposed leader's writes, fenced by its old token, are refused whole
    deposed = leases.fenced(world.ctx, first)
    with pytest.raises(LeaseLost), deposed.db.session() as s:
        app = repo.require(s, App, "app", id=world.app_id)
        app.formation_error = "written by a deposed leader"
    assert world.instances() == []
    with world.ctx.db.session() as s:
        assert repo.require(s, App, "app", id=world.app_id).formation_error is None


async def test_a_singleton_that_ended_is_started_again_while_leading(world: World) -> None:
    runs: list[int] = []

    async def fragile(_ctx: Context, stop: asyncio.Event) -> None:
        runs.append(1)
        if len(runs) == 1:
            raise RuntimeError("a bug in a loop")
        await stop.wait()

    leader = Leadership(world.ctx, {"fragile": fragile, "idle": idle}, holder="replica-a")
    await leader.step()
    await asyncio.sleep(0)  # the loops run up to their first wait
    assert leader.tasks["fragile"].done()
    await leader.step()  # the renewal restarts it, and only it
    await asyncio.sleep(0)
    assert len(runs) == 2 and not leader.tasks["fragile"].done()
    await leader.stop_loops()
    assert leader.tasks == {}


def test_a_deposed_leaders_rollout_pass_commits_nothing(
    world: World, other: Context, clock: FrozenClock
) -> None:
    old = leases.acquire(world.ctx, "controllers", "replica-a", LEASE_SECONDS)
    assert old is not None
    world.healthy_releases = {1}
    world.release()
    clock.advance(LEASE_SECONDS)  # replica-a stopped renewing: its lease expired
    new = leases.acquire(other, "controllers", "replica-b", LEASE_SECONDS)
    assert new is not None and new.token == old.token + 1
    with pytest.raises(LeaseLost):
        rollout.pass_once(leases.fenced(world.ctx, old))
    assert world.instances() == []  # not one instance placed by the deposed pass
    rollout.pass_once(leases.fenced(other, new))
    assert len(world.instances()) == 1
    # a holder whose lease expired unrenewed writes nothing either, until it takes it again
    clock.advance(LEASE_SECONDS)
    with pytest.raises(LeaseLost):
        rollout.pass_once(leases.fenced(other, new))


def test_an_event_with_a_key_is_recorded_once(world: World) -> None:
    with world.ctx.db.session() as s:
        app = repo.require(s, App, "app", id=world.app_id)
        for _ in range(2):
            deployments.record_event(world.ctx, s, app, "x.y", "once", {}, key="x.y:1")
    with world.ctx.db.session() as s:
        app = repo.require(s, App, "app", id=world.app_id)
        deployments.record_event(world.ctx, s, app, "x.y", "again", {}, key="x.y:1")
    assert world.events("x.y") == ["once"]
    # a duplicate that slips past the check (a concurrent transaction) is refused
    with pytest.raises(sa.exc.IntegrityError), world.ctx.db.session() as s:
        app = repo.require(s, App, "app", id=world.app_id)
        s.add(
            Event(
                id="01J0000000000000000000000X",
                organization_id=app.organization_id,
                app_id=app.id,
                type="x.y",
                message="twice",
                data={},
                key="x.y:1",
                created_at=world.clock.now(),
                updated_at=world.clock.now(),
            )
        )
    assert world.events("x.y") == ["once"]


def _controllers() -> dict[str, Singleton]:
    return {
        "rollout": functools.partial(loops.rollout_loop, interval=0.02),
        "liveness": loops.liveness_loop,
        "housekeeping": loops.housekeeping_loop,
    }


async def test_two_replicas_make_fifty_changes_exactly_once(
    backend: str, world: World, other: Context, clock: FrozenClock
) -> None:
    """Two replicas, each running its leader election and the loops it leads, on one
    PostgreSQL database; 50 scale and deploy changes through alternating replicas, and
    the leader dies halfway (the other takes over once its lease expires)."""
    if backend != "postgres":
        pytest.skip("two replicas share a database in server mode: PostgreSQL")
    replicas = [world.ctx, other]
    for ctx in replicas:
        await ctx.bus.start()
    stop = asyncio.Event()
    leaders = [
        Leadership(ctx, _controllers(), holder=f"replica-{n}", renew=0.02)
        for n, ctx in enumerate(replicas)
    ]
    runs = [asyncio.create_task(leader.run(stop)) for leader in leaders]
    surge = 1
    policy = DeployPolicy(surge=surge, max_unavailable=0)
    world.healthy_releases = set(range(1, 100))
    count = 1
    deploys: list[str] = []
    processes.update_formation(world.ctx, world.who, "web", {"web": count})
    try:
        for change in range(50):
            if change == 25:
                await _kill_the_leader(leaders, runs)
            world.ctx = replicas[change % 2]  # the replica this change goes through
            before = count
            if change % 2 == 0 or not deploys:
                _, dep_id = world.release(policy=policy)
                deploys.append(dep_id)
                most = count + surge
            else:
                count = 1 + (change * 7) % 4
                processes.update_formation(world.ctx, world.who, "web", {"web": count})
                most = max(before, count)
            for _ in range(200):
                await _tick(world, clock)
                web = _serving_or_starting(world)
                assert len(web) <= most, f"change {change}: {len(web)} > {most}"
                if change % 2 == 0 and before == count and change > 0:
                    # max_unavailable 0: never fewer healthy than the formation
                    assert sum(1 for i in web if i.healthy) >= count
                if _converged(world, count):
                    break
            else:
                raise AssertionError(f"change {change} did not converge: {world.live()}")
        lease = leases.current(other, "controllers")
        assert lease is not None and lease.token == 2  # taken over once, at the death
    finally:
        stop.set()
        await asyncio.gather(*runs, return_exceptions=True)
    assert all(leader.held is None for leader in leaders)
    with world.ctx.db.session() as s:
        rows = repo.find_all(s, Event, app_id=world.app_id)
    seen = Counter(
        (e.type, e.data.get("deployment_id")) for e in rows if e.type.startswith("deploy.")
    )
    assert [k for k, n in seen.items() if n > 1] == []
    assert seen[("deploy.succeeded", deploys[-1])] == 1
    succeeded = {dep for (kind, dep), _ in seen.items() if kind == "deploy.succeeded"}
    assert succeeded == set(deploys)


async def _kill_the_leader(leaders: list[Leadership], runs: list[asyncio.Task[None]]) -> None:
    """The leading replica dies: its loops and its renewals end, its lease stays."""
    (dead,) = [n for n, leader in enumerate(leaders) if leader.leading]
    leaders[dead].abandon()
    runs[dead].cancel()
    await asyncio.gather(runs[dead], return_exceptions=True)


async def _tick(world: World, clock: FrozenClock) -> None:
    clock.advance(0.5)
    world.agents_report()
    await asyncio.sleep(0.05)  # the leader's loop runs its passes meanwhile


def _serving_or_starting(world: World) -> list[Instance]:
    """The app's web instances that serve or start (draining ones aside)."""
    return [
        i for i in world.instances() if i.process_type == "web" and i.drain_started_at is None
    ]


def _converged(world: World, count: int) -> bool:
    with world.ctx.db.session() as s:
        if deployments.active(s):
            return False
        app = repo.require(s, App, "app", id=world.app_id)
        current = repo.require(s, Release, "release", id=app.current_release_id or "")
    web = _serving_or_starting(world)
    return len(web) == count and all(i.healthy and i.release_id == current.id for i in web)
