"""Formation changes that cannot fit are refused; an app's placement policy reaches the
scheduler (strategy, node label constraints) and moves instances when it changes."""

from __future__ import annotations

import pytest

from shellwego.errors import CapacityError
from shellwego.models import AppCreate, DeployPolicy, PlacementPolicy
from shellwego.services import apps, deployments, processes

from .world import World


def roll(world: World, dep_id: str) -> None:
    for _ in range(10):
        world.step()
    assert world.deployment(dep_id).status == "succeeded"


def deployed(world: World, formation: dict[str, object]) -> None:
    processes.update_formation(world.ctx, world.who, "web", formation)
    world.healthy_releases = {1}
    _, first = world.release()
    roll(world, first)


def test_a_scale_beyond_capacity_is_refused_and_changes_nothing(world: World) -> None:
    deployed(world, {"web": 2})
    with pytest.raises(CapacityError) as err:
        processes.update_formation(
            world.ctx, world.who, "web", {"web": {"count": 50, "size": "xlarge"}}
        )
    detail = err.value.detail
    assert detail.startswith(
        "cannot run 50 web instances of size xlarge for app web on the nodes as they are now: "
        "cannot place 50 instances of app web process web (2 cores and 2 GiB each): "
        "only 8 fit on the 2 eligible nodes; the largest free slot left is "
    ), detail
    assert err.value.extra["count"] == 50
    formation = apps.get(world.ctx, world.who, "web").formation
    assert (formation["web"].count, formation["web"].size) == (2, "small")
    page = deployments.list_page(world.ctx, world.who, "web", None, 50)
    assert len(page.items) == 1  # no resize rollout was started
    world.step()
    assert world.serving() == [1, 1]

    # a request that fits goes ahead: more small instances, then fewer big ones
    processes.update_formation(world.ctx, world.who, "web", {"web": 40})
    for _ in range(3):
        world.step()
    assert len(world.serving()) == 40
    processes.update_formation(world.ctx, world.who, "web", {"web": {"count": 3, "size": "large"}})
    for _ in range(15):
        world.step()
    assert world.serving() == [1, 1, 1]


def test_constraints_no_node_satisfies_are_refused_naming_them(world: World) -> None:
    with pytest.raises(CapacityError) as err:
        apps.update(
            world.ctx,
            world.who,
            "web",
            {"placement": PlacementPolicy(constraints={"region": "mars", "disk": "ssd"})},
        )
    assert "has the labels disk=ssd, region=mars" in err.value.detail
    assert "labels on ready nodes: region=eu, region=us" in err.value.detail
    assert apps.get(world.ctx, world.who, "web").placement == PlacementPolicy()


def test_constraints_place_instances_and_a_change_moves_them(world: World) -> None:
    apps.update(
        world.ctx, world.who, "web", {"placement": PlacementPolicy(constraints={"region": "eu"})}
    )
    deployed(world, {"web": 2})
    assert world.placed_on() == ["node-1", "node-1"]

    apps.update(
        world.ctx, world.who, "web", {"placement": PlacementPolicy(constraints={"region": "us"})}
    )
    for _ in range(6):
        world.step()
        assert len(world.serving()) >= 2  # moved without a gap
    assert world.placed_on() == ["node-0", "node-0"]


def test_strategy_binpack_fills_the_fuller_node_and_spread_the_emptier(world: World) -> None:
    deployed(world, {"web": 1})
    assert world.placed_on() == ["node-0"]  # on an empty cluster: the lowest node id
    for name, strategy, expected in (
        ("packed", "binpack", "node-0"),
        ("spread", "spread", "node-1"),
    ):
        app = apps.create(
            world.ctx, world.who, AppCreate(name=name, placement=PlacementPolicy(strategy=strategy))
        )
        _, dep = world.release(app_id=app.id)
        roll(world, dep)
        assert world.placed_on(app.id) == [expected], strategy


def test_spread_evens_out_a_restart_and_its_replacements(world: World) -> None:
    """node-1 is fuller (another app's instances): spread still puts two of four replicas
    on each node, on the first deployment and on every rollout that replaces them."""
    ballast = apps.create(
        world.ctx,
        world.who,
        AppCreate(name="ballast", placement=PlacementPolicy(constraints={"region": "eu"})),
    )
    processes.update_formation(
        world.ctx, world.who, "ballast", {"web": {"count": 2, "size": "large"}}
    )
    world.healthy_releases = {1}
    _, dep = world.release(app_id=ballast.id)
    roll(world, dep)
    assert world.placed_on(ballast.id) == ["node-1", "node-1"]

    apps.update(world.ctx, world.who, "web", {"placement": PlacementPolicy(strategy="spread")})
    processes.update_formation(world.ctx, world.who, "web", {"web": 4})
    _, dep = world.release()
    roll(world, dep)
    assert world.placed_on() == ["node-0", "node-0", "node-1", "node-1"]

    for _ in range(2):  # a restart (every instance replaced), then a redeploy
        processes.restart(world.ctx, world.who, "web")
        for _ in range(12):
            world.step()
            assert len(world.serving()) >= 4
        assert world.placed_on() == ["node-0", "node-0", "node-1", "node-1"]
    _, dep = world.release(policy=DeployPolicy(surge=4))
    world.healthy_releases.add(2)
    roll(world, dep)
    assert world.placed_on() == ["node-0", "node-0", "node-1", "node-1"]
