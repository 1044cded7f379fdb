"""Health-gated rolling deploys and formation upkeep (see tests/controllers/world.py)."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from shellwego.models import App, DeploymentStatus, DeployPolicy, Node, Release
from shellwego.services import apps, processes
from shellwego.store import repository as repo

from .world import World


def roll(world: World, dep_id: str, serving_at_least: int, steps: int = 40) -> list[list[int]]:
    history = []
    for _ in range(steps):
        world.step()
        history.append(world.serving())
        if world.deployment(dep_id).status != DeploymentStatus.ROLLING:
            break
        assert len(world.serving()) >= serving_at_least, history
    return history


def test_rolling_deploy_is_health_gated_and_never_drops_below_the_formation(world: World) -> None:
    processes.update_formation(world.ctx, world.who, "web", {"web": {"count": 3}})
    world.healthy_releases = {1}
    _, first = world.release()
    roll(world, first, 0)
    assert world.deployment(first).status == DeploymentStatus.SUCCEEDED
    assert world.serving() == [1, 1, 1]

    world.healthy_releases = {1, 2}
    _, second = world.release()
    history = roll(world, second, serving_at_least=3)
    assert world.deployment(second).status == DeploymentStatus.SUCCEEDED
    # old instances were drained one by one, only after new ones were healthy
    assert any(sorted(set(h)) == [1, 2] for h in history)
    for _ in range(5):  # past the drain period
        world.step()
    assert world.live() == [(2, True, False)] * 3


def test_health_timeout_fails_the_deploy_and_the_previous_release_keeps_serving(
    world: World,
) -> None:
    processes.update_formation(world.ctx, world.who, "web", {"web": {"count": 2}})
    world.healthy_releases = {1}
    _, first = world.release()
    roll(world, first, 0)
    _, bad = world.release(web="broken")  # v2 never becomes healthy
    for _ in range(70):
        world.step()
        assert world.serving() == [1, 1]
        if world.deployment(bad).status != DeploymentStatus.ROLLING:
            break
    dep = world.deployment(bad)
    assert dep.status == DeploymentStatus.FAILED
    assert "did not become healthy within 60 s" in (dep.error or "")
    assert "the previous release keeps serving" in (dep.error or "")
    world.step()
    assert world.live() == [(1, True, False)] * 2  # v2's instances were stopped
    with world.ctx.db.session() as s:
        app = repo.require(s, App, "app", id=world.app_id)
        assert repo.require(s, Release, "release", id=app.current_release_id).version == 1


def test_a_newer_deploy_supersedes_one_in_progress(world: World) -> None:
    world.healthy_releases = {1}
    _, first = world.release()
    roll(world, first, 0)
    _, second = world.release()  # v2 will not get healthy before v3 arrives
    world.step()
    world.healthy_releases = {1, 3}
    _, third = world.release()
    roll(world, third, serving_at_least=1)
    assert world.deployment(second).status == DeploymentStatus.SUPERSEDED
    assert world.deployment(third).status == DeploymentStatus.SUCCEEDED
    for _ in range(5):
        world.step()
    assert world.live() == [(3, True, False)]


def test_scaling_places_and_drains_outside_a_rollout(world: World) -> None:
    world.healthy_releases = {1}
    _, first = world.release()
    roll(world, first, 0)
    processes.update_formation(world.ctx, world.who, "web", {"web": {"count": 3}, "worker": 2})
    for _ in range(3):
        world.step()
    assert world.live() == [(1, True, False)] * 5
    processes.update_formation(world.ctx, world.who, "web", {"web": {"count": 1}, "worker": 0})
    for _ in range(5):
        world.step()
    assert world.live() == [(1, True, False)]


def test_surge_2_starts_two_new_instances_before_any_old_one_drains(world: World) -> None:
    processes.update_formation(world.ctx, world.who, "web", {"web": {"count": 3}})
    apps.update(world.ctx, world.who, "web", {"deploy": DeployPolicy(surge=2)})
    world.healthy_releases = {1}
    _, first = world.release()
    roll(world, first, 0)
    assert world.serving() == [1, 1, 1]

    _, second = world.release()  # v2 starts but is not healthy yet
    world.step()
    assert world.deployment(second).surge == 2
    assert world.live() == [(1, True, False)] * 3 + [(2, False, False)] * 2
    world.step()  # still nothing drains, and no third new one starts
    assert world.live() == [(1, True, False)] * 3 + [(2, False, False)] * 2

    world.healthy_releases = {1, 2}
    world.step()  # both turn healthy: two old ones drain, the third new one starts
    assert (
        world.live()
        == [(1, True, False)] + [(1, True, True)] * 2 + [(2, False, False)] + [(2, True, False)] * 2
    )
    roll(world, second, serving_at_least=3)
    assert world.deployment(second).status == DeploymentStatus.SUCCEEDED
    for _ in range(5):
        world.step()
    assert world.live() == [(2, True, False)] * 3


def test_max_unavailable_drains_ahead_and_a_deploy_overrides_the_app_setting(
    world: World,
) -> None:
    processes.update_formation(world.ctx, world.who, "web", {"web": {"count": 3}})
    world.healthy_releases = {1}
    _, first = world.release()
    roll(world, first, 0)

    _, second = world.release(policy=DeployPolicy(surge=1, max_unavailable=1))
    world.step()
    dep = world.deployment(second)
    assert (dep.surge, dep.max_unavailable) == (1, 1)
    # one old instance leaves at once, and two new ones start: the freed one and the surge
    assert world.live() == [(1, True, False)] * 2 + [(1, True, True)] + [(2, False, False)] * 2
    world.healthy_releases = {1, 2}
    roll(world, second, serving_at_least=2)
    assert world.deployment(second).status == DeploymentStatus.SUCCEEDED

    # the app's own setting (surge 1, nothing unavailable) applies to the next deploy
    _, third = world.release()
    world.step()
    assert (world.deployment(third).surge, world.deployment(third).max_unavailable) == (1, 0)
    assert sorted(v for v, _, draining in world.live() if not draining) == [2, 2, 2, 3]


def test_deploy_settings_are_validated(world: World) -> None:
    for bad in ({"surge": 0}, {"surge": 101}, {"max_unavailable": -1}, {"pace": 2}):
        with pytest.raises(ValidationError):
            DeployPolicy.model_validate(bad)
    assert apps.get(world.ctx, world.who, "web").deploy == DeployPolicy(surge=1, max_unavailable=0)


def test_a_port_another_program_holds_is_replaced_and_never_handed_out_again(
    world: World,
) -> None:
    low = world.ctx.settings.instance_ports[0]
    world.taken_ports = {nid: {low} for nid in world.node_ids.values()}
    world.healthy_releases = {1}
    _, dep = world.release()
    roll(world, dep, 0)
    assert world.deployment(dep).status == DeploymentStatus.SUCCEEDED
    assert world.serving() == [1]
    [inst] = world.instances()
    assert inst.port != low
    [conflict] = world.events("instance.port_conflict")
    assert f"port {low} is in use there by another program" in conflict
    with world.ctx.db.session() as s:
        node = repo.require(s, Node, "node", id=inst.node_id)
        assert low in node.network.busy_ports
    # a larger formation never lands on it either
    processes.update_formation(world.ctx, world.who, "web", {"web": {"count": 4}})
    for _ in range(10):
        world.step()
    assert sorted(world.serving()) == [1, 1, 1, 1]
    assert all(i.port != low for i in world.instances())


def _dynos(world: World) -> list[tuple[int, str, int | None]]:
    """(release version, process type, number) of the serving instances, sorted."""
    versions = {}
    with world.ctx.db.session() as s:
        for release in repo.find_all(s, Release, app_id=world.app_id):
            versions[release.id] = release.version
    return sorted(
        (versions[i.release_id], i.process_type, i.ordinal)
        for i in world.instances()
        if i.desired_state == "running" and i.drain_started_at is None
    )


def test_instances_are_numbered_within_their_process_type_as_heroku_dynos(
    world: World,
) -> None:
    processes.update_formation(world.ctx, world.who, "web", {"web": {"count": 2}, "worker": 1})
    world.healthy_releases = {1, 2}
    _, first = world.release()
    roll(world, first, 0)
    assert _dynos(world) == [(1, "web", 1), (1, "web", 2), (1, "worker", 1)]

    # scaling up adds the next numbers; scaling down and up again fills the gap
    processes.update_formation(world.ctx, world.who, "web", {"web": {"count": 3}})
    for _ in range(3):
        world.step()
    assert _dynos(world) == [(1, "web", 1), (1, "web", 2), (1, "web", 3), (1, "worker", 1)]
    processes.update_formation(world.ctx, world.who, "web", {"web": {"count": 1}})
    for _ in range(5):
        world.step()
    assert len([d for d in _dynos(world) if d[1] == "web"]) == 1
    processes.update_formation(world.ctx, world.who, "web", {"web": {"count": 3}})
    for _ in range(3):
        world.step()
    # the one kept has its number, the new ones take the free ones: never a duplicate
    assert sorted(d[2] for d in _dynos(world) if d[1] == "web") == [1, 2, 3]

    # a deploy numbers the new release's instances afresh: web.1 again, as on Heroku
    _, second = world.release()
    roll(world, second, serving_at_least=3)
    for _ in range(5):
        world.step()
    assert _dynos(world) == [(2, "web", 1), (2, "web", 2), (2, "web", 3), (2, "worker", 1)]
