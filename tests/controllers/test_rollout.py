"""The rollout controller on a real database, with a scripted agent reporting health.

The agent's side is played by the heartbeat service the real agent calls: each test
decides which instances report healthy. The real agent and runtime are covered by the
end-to-end tests; this is the deployment logic above them.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from shellwego.clock import FrozenClock
from shellwego.controllers import rollout
from shellwego.models import (
    App,
    AppCreate,
    Deployment,
    DeploymentStatus,
    DesiredState,
    Instance,
    Node,
    NodeCapacity,
    OrganizationCreate,
    Release,
    UserCreate,
)
from shellwego.services import agents, apps, auth, deployments, nodes, processes, releases
from shellwego.services.bootstrap import build_context
from shellwego.services.context import Context, Principal
from shellwego.settings import Settings
from shellwego.store import repository as repo

GIB = 1024**3


@pytest.fixture
def clock() -> FrozenClock:
    return FrozenClock()


@pytest.fixture
def rctx(settings: Settings, clock: FrozenClock) -> Iterator[Context]:
    context = build_context(settings, clock=clock, migrate=False)
    context.db.reset()
    yield context
    context.db.reset()
    context.db.dispose()


class World:
    def __init__(self, ctx: Context, clock: FrozenClock) -> None:
        self.ctx, self.clock = ctx, clock
        boot = auth.bootstrap(
            ctx,
            UserCreate(email="o@example.com", name="O", password="a long enough password"),
            OrganizationCreate(name="O", slug="o"),
        )
        self.who: Principal = auth.authenticate(ctx, boot.token.secret)
        join = nodes.create_join_token(ctx, "t")
        for n in range(2):
            nodes.register(
                ctx,
                join,
                f"node-{n}",
                NodeCapacity(cpu_millis=8000, memory_bytes=16 * GIB),
                ["process"],
                {},
                "test",
                "127.0.0.1",
            )
        self.app_id = apps.create(ctx, self.who, AppCreate(name="web")).id
        self.healthy_releases: set[int] = set()  # versions whose instances report healthy

    def release(self, web: str = "serve") -> tuple[int, str]:
        with self.ctx.db.session() as s:
            app = repo.require(s, App, "app", id=self.app_id)
            rel = releases.create(
                self.ctx,
                s,
                self.who,
                app,
                artifact=releases.Artifact(
                    slug_digest="a" * 64,
                    stack="python",
                    process_types={"web": web, "worker": "work"},
                    slug_env={},
                ),
                description="test",
            )
            dep = deployments.start(self.ctx, s, self.who, app, rel, reason="test")
            return rel.version, dep.id

    def live(self) -> list[tuple[int, bool, bool]]:
        """(release version, healthy, draining) of every instance meant to run."""
        with self.ctx.db.session() as s:
            versions = {r.id: r.version for r in repo.find_all(s, Release)}
            rows = repo.find_all(s, Instance, desired_state=DesiredState.RUNNING.value)
            return sorted(
                (versions[i.release_id], i.healthy, i.drain_started_at is not None) for i in rows
            )

    def serving(self) -> list[int]:
        """Versions the edge would route to: healthy web instances not draining."""
        return [v for v, healthy, draining in self.live() if healthy and not draining]

    def agents_report(self) -> None:
        """Every node heartbeats: instances of 'healthy' releases are up, others starting."""
        with self.ctx.db.session() as s:
            versions = {r.id: r.version for r in repo.find_all(s, Release)}
            all_nodes = repo.find_all(s, Node)
            rows = repo.find_all(s, Instance, desired_state=DesiredState.RUNNING.value)
        for node in all_nodes:
            mine = [i for i in rows if i.node_id == node.id]
            body = agents.Heartbeat(
                instances=[
                    agents.ObservedInstance(
                        instance_id=i.id,
                        state="running",
                        healthy=versions[i.release_id] in self.healthy_releases,
                        port=i.port,
                    )
                    for i in mine
                ]
            )
            agents.heartbeat(self.ctx, node, body)

    def step(self, seconds: float = 1.0) -> None:
        self.clock.advance(seconds)
        self.agents_report()
        rollout.pass_once(self.ctx)

    def deployment(self, dep_id: str) -> Deployment:
        return deployments.status_of(self.ctx, dep_id)


@pytest.fixture
def world(rctx: Context, clock: FrozenClock) -> World:
    return World(rctx, clock)


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


def test_scaling_places_and_drains_outside_a_rollout(world: World, tmp_path: Path) -> None:
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
