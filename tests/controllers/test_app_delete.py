"""Deleting an app: gone for its users at once, its instances stopped, its row removed
only once its agents have seen them gone (see tests/controllers/world.py)."""

from __future__ import annotations

import asyncio
import time

import pytest

from shellwego.build import git
from shellwego.controllers import loops, rollout
from shellwego.errors import NotFound
from shellwego.models import App, AppCreate, DeploymentStatus, Instance, Release, Resources
from shellwego.services import agents, apps, nodes, placement, processes
from shellwego.services.edges import route_table
from shellwego.store import repository as repo
from support.waiting import POLL, PROMPTLY

from .test_nodes import deploy
from .world import World


def rows(world: World, app_id: str) -> tuple[App | None, list[Instance]]:
    """The app's row (None once removed) and every instance row of it."""
    with world.ctx.db.session() as s:
        return repo.get(s, App, id=app_id), repo.find_all(s, Instance, app_id=app_id)


def indexes(world: World) -> dict[str, int]:
    return {name: agents.current_index(world.ctx, nid) for name, nid in world.node_ids.items()}


def test_a_deleted_app_is_gone_at_once_and_its_row_stays_until_its_instances_are(
    world: World,
) -> None:
    deploy(world, {"web": 2})
    old_id = world.app_id
    old = world.instances()
    assert world.placed_on() == ["node-0", "node-1"]
    held = {(i.node_id, i.port) for i in old}
    before = indexes(world)
    world.lingering = {i.id for i in old}  # the processes take a while to exit
    repos = git.repos_root(world.ctx.settings.data_dir)
    pushed_to = git.ensure_repo(repos, old_id)  # it was deployed by git push too

    apps.delete(world.ctx, world.who, "web")

    # at once: unknown by name and id, in no list, not routed, its instances told to stop
    for ref in ("web", "WEB", old_id):
        with pytest.raises(NotFound):
            apps.get(world.ctx, world.who, ref)
        with pytest.raises(NotFound):
            processes.update_formation(world.ctx, world.who, ref, {"web": 3})
    assert apps.list_page(world.ctx, world.who, None, 50).items == []
    assert apps.list_page(world.ctx, world.who, None, 50, status="deleting").items == []
    assert [r for r in route_table(world.ctx).routes if r.app_id == old_id] == []
    _, instances = rows(world, old_id)
    assert {i.desired_state for i in instances} == {"stopped"}
    assert {n: i - before[n] for n, i in indexes(world).items()} == {"node-0": 1, "node-1": 1}

    # while the agents still list the processes, the row and its ports stay taken
    for _ in range(3):
        world.step()
    row, instances = rows(world, old_id)
    assert row is not None and len(instances) == 2
    assert pushed_to.is_dir()

    # the name is free at once: a new app of that name gets other ports on the same nodes
    world.app_id = apps.create(world.ctx, world.who, AppCreate(name="web")).id
    assert world.app_id != old_id
    new_repo = git.ensure_repo(repos, world.app_id)
    deploy(world, {"web": 2})
    assert world.placed_on() == ["node-0", "node-1"]
    fresh = {(i.node_id, i.port) for i in world.instances()}
    assert not fresh & held, (fresh, held)
    assert world.upstreams("web") == sorted(
        f"10.0.0.{1 + list(world.node_ids.values()).index(n)}:{p}" for n, p in fresh
    )

    # the agents stop listing the old processes: the row goes, with everything of it
    world.lingering = set()
    world.step()
    row, instances = rows(world, old_id)
    assert row is None and instances == []
    with world.ctx.db.session() as s:
        assert repo.find_all(s, Release, app_id=old_id) == []
    # and its git repository; the new app of that name keeps its own
    assert not pushed_to.exists() and (new_repo / "HEAD").is_file()
    assert apps.get(world.ctx, world.who, "web").id == world.app_id
    assert len(world.serving()) == 2


def test_a_rollout_in_progress_fails_and_a_late_placement_is_stopped_too(world: World) -> None:
    deploy(world, {"web": 1})
    _, second = world.release()  # v2 never turns healthy
    world.step()
    old_id = world.app_id
    apps.delete(world.ctx, world.who, "web")
    dep = world.deployment(second)
    assert (dep.status, dep.error) == (DeploymentStatus.FAILED, "the app was deleted")
    assert world.instances(old_id) == []

    # a request begun before the delete places an instance after it: the finalizer stops it
    with world.ctx.db.session() as s:
        app = repo.require(s, App, "app", id=old_id)
        release = repo.require(s, Release, "release", app_id=old_id, version=2)
        placement.place(world.ctx, s, app, release, "web", 1, Resources(), deployment_id=None)
    world.lingering = {i.id for i in world.instances(old_id)}
    world.step()
    assert world.instances(old_id) == []
    assert rows(world, old_id)[0] is not None  # the late one still runs
    world.lingering = set()
    world.step()
    assert rows(world, old_id) == (None, [])


def test_instances_on_a_down_node_count_as_gone(world: World) -> None:
    deploy(world, {"web": 2})
    old_id = world.app_id
    node0 = world.node_ids["node-0"]
    world.lingering = {i.id for i in world.instances() if i.node_id == node0}
    world.silent = {node0}  # its agent never says they stopped
    apps.delete(world.ctx, world.who, "web")
    world.step()  # node-1's agent reports its instance gone; node-0's is unknown
    assert rows(world, old_id)[0] is not None
    world.clock.advance(world.ctx.settings.node_down_after_seconds)
    assert nodes.mark_down_stale(world.ctx) == [node0]
    world.step()
    assert rows(world, old_id) == (None, [])


def test_the_row_goes_after_the_bound_even_if_an_agent_keeps_listing_them(
    world: World,
) -> None:
    deploy(world, {"web": 2})
    old_id = world.app_id
    world.lingering = {i.id for i in world.instances()}
    apps.delete(world.ctx, world.who, "web")
    world.step(rollout.DELETE_TIMEOUT_SECONDS - 1)
    assert rows(world, old_id)[0] is not None
    world.step(1)
    assert rows(world, old_id) == (None, [])


async def test_a_delete_wakes_the_agents_and_their_reports_wake_the_finalizer(
    world: World,
) -> None:
    await world.ctx.bus.start()
    deploy(world, {"web": 2})
    old_id = world.app_id
    stop = asyncio.Event()
    # an interval far longer than the test: only wake-ups can explain a prompt removal
    loop = asyncio.create_task(loops.rollout_loop(world.ctx, stop, interval=POLL))
    subscriptions = [world.ctx.bus.subscribe(f"node:{nid}") for nid in world.node_ids.values()]
    try:
        await asyncio.sleep(0.3)  # its first pass is done, it is waiting
        await asyncio.to_thread(apps.delete, world.ctx, world.who, "web")
        for subscription in subscriptions:
            assert await subscription.wait(1), subscription.topic
        started = time.monotonic()
        await asyncio.to_thread(world.agents_report)  # the processes have exited
        while rows(world, old_id)[0] is not None:
            assert time.monotonic() - started < PROMPTLY, "the finalizer was not woken"
            await asyncio.sleep(0.02)
    finally:
        for subscription in subscriptions:
            subscription.close()
        stop.set()
        world.ctx.bus.notify("rollout")
        await asyncio.wait_for(loop, 10)
