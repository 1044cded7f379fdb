"""The release phase: a release's ``release`` command runs once, as a real sandboxed
one-off in the new release's slug and environment, before its rollout; when it fails
the release is not rolled out and the previous one keeps serving (both backends)."""

from __future__ import annotations

import asyncio
import io
import tarfile
from pathlib import Path

import pytest

from shellwego.errors import InvalidInput
from shellwego.models import App, Deployment, DeploymentStatus, LogLine, Release
from shellwego.roles.server import equip
from shellwego.services import deployments, processes, releasephase, secrets
from shellwego.store import repository as repo
from support.releases import slug_release

from .world import World


def slug(world: World, tmp_path: Path) -> str:
    """A real slug in the control plane's artifact store: a script the release runs."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        script = b'echo "migrating to $SHELLWEGO_RELEASE with GREETING=$GREETING"\n'
        info = tarfile.TarInfo("migrate.sh")
        info.size = len(script)
        tar.addfile(info, io.BytesIO(script))
    path = tmp_path / "slug.tar.gz"
    path.write_bytes(buf.getvalue())
    digest: str = world.ctx.require_artifacts().put(path)
    return digest


@pytest.fixture
def released(world: World, tmp_path: Path) -> tuple[World, str]:
    """The world with a one-off runtime (as `shellwego server` has) and a slug."""
    equip(world.ctx)
    return world, slug(world, tmp_path)


def release(
    world: World, digest: str, release_command: str | None, config: dict[str, str] | None = None
) -> tuple[int, str]:
    """A new release (with a ``release:`` Procfile entry when given) and its deployment."""
    processes_ = {"web": "serve"}
    if release_command is not None:
        processes_["release"] = release_command
    with world.ctx.db.session() as s:
        app = repo.require(s, App, "app", id=world.app_id)
        if config:
            secrets.set_config(world.ctx, s, world.who, app, dict(config))
        rel = slug_release(world.ctx, s, world.who, app, processes_, digest=digest)
        dep = deployments.start(world.ctx, s, world.who, app, rel, reason="test")
        return rel.version, dep.id


def run_phase(world: World) -> list[bool]:
    """Claim what is due and run it, as the control plane's rollout loop does."""
    claims = releasephase.claim_due(world.ctx)

    async def run_all() -> list[bool]:
        return [await releasephase.run(world.ctx, claim) for claim in claims]

    return asyncio.run(run_all())


def release_log(world: World) -> list[str]:
    with world.ctx.db.session() as s:
        rows = repo.find_all(s, LogLine, app_id=world.app_id, source="release")
        return [r.line for r in sorted(rows, key=lambda r: r.id)]


def roll_out(world: World, dep_id: str) -> None:
    for _ in range(20):
        world.step()
        if world.deployment(dep_id).status != DeploymentStatus.ROLLING:
            return


def test_the_release_command_runs_once_before_the_rollout(released: tuple[World, str]) -> None:
    world, digest = released
    world.healthy_releases = {1}
    version, dep_id = release(world, digest, "sh migrate.sh", {"GREETING": "Howdy"})
    assert world.deployment(dep_id).status == DeploymentStatus.PENDING
    assert world.events("deploy.started") == ["Deploying v1: test (its release command runs first)"]
    for _ in range(3):  # the rollout waits for the release phase: nothing is placed
        world.step()
    assert world.live() == []

    claims = releasephase.claim_due(world.ctx)
    assert [(c.version, c.command) for c in claims] == [(1, "sh migrate.sh")]
    assert world.deployment(dep_id).status == DeploymentStatus.RELEASING
    assert releasephase.claim_due(world.ctx) == []  # claimed once

    assert asyncio.run(releasephase.run(world.ctx, claims[0])) is True
    # in the new release's environment, its config included
    assert release_log(world) == ["migrating to v1 with GREETING=Howdy"]
    assert world.events("release.succeeded") == ["Release command of v1 succeeded"]
    assert world.deployment(dep_id).status == DeploymentStatus.ROLLING
    ended = releasephase.output_of(world.ctx, dep_id)
    assert ended == ("Release command of v1 succeeded", ["migrating to v1 with GREETING=Howdy"])

    roll_out(world, dep_id)
    assert world.deployment(dep_id).status == DeploymentStatus.SUCCEEDED
    assert world.serving() == [version]
    with world.ctx.db.session() as s:
        app = repo.require(s, App, "app", id=world.app_id)
        assert "release" not in app.formation  # never a process type that runs
        current = repo.require(s, Release, "release", id=app.current_release_id)
    assert current.version == 1

    # a restart rolls the same release again: its release command does not run again
    processes.restart(world.ctx, world.who, "web")
    assert releasephase.claim_due(world.ctx) == []
    assert release_log(world) == ["migrating to v1 with GREETING=Howdy"]
    with pytest.raises(InvalidInput, match="runs once per release"):
        processes.update_formation(world.ctx, world.who, "web", {"release": 1})


def test_a_failing_release_command_keeps_the_previous_release_serving(
    released: tuple[World, str],
) -> None:
    world, digest = released
    world.healthy_releases = {1, 2}
    _, first = release(world, digest, None)  # v1: no release command, rolls out at once
    roll_out(world, first)
    assert world.serving() == [1]

    _, second = release(world, digest, "echo cannot migrate; exit 3")
    assert run_phase(world) == [False]
    dep = world.deployment(second)
    message = "release command of v2 failed (exit code 3): v2 was not rolled out, v1 keeps serving"
    assert (dep.status, dep.error) == (DeploymentStatus.FAILED, message)
    assert world.events("release.failed") == [message]
    assert release_log(world) == ["cannot migrate"]
    for _ in range(5):
        world.step()
        assert world.serving() == [1]
    with world.ctx.db.session() as s:
        app = repo.require(s, App, "app", id=world.app_id)
        assert str(app.status) == "running"
        assert repo.require(s, Release, "release", id=app.current_release_id).version == 1


def test_a_newer_release_stops_a_release_command_and_claims_are_taken_over(
    released: tuple[World, str],
) -> None:
    world, digest = released
    _, first = release(world, digest, "sleep 600")
    (claim,) = releasephase.claim_due(world.ctx)

    async def superseded() -> bool:
        running = asyncio.ensure_future(releasephase.run(world.ctx, claim))
        await asyncio.sleep(0.2)
        release(world, digest, "true")  # a newer release supersedes the first
        return await running  # the sleeping command is stopped, not waited for

    assert asyncio.run(superseded()) is False
    assert world.deployment(first).status == DeploymentStatus.SUPERSEDED
    assert world.events("release.failed") == world.events("release.succeeded") == []

    # a claim left unrenewed (its control plane died) is taken over; one handed back
    # (its control plane stopped) is due again at once
    (newer,) = releasephase.claim_due(world.ctx)
    assert releasephase.claim_due(world.ctx) == []
    world.clock.advance(releasephase.CLAIM_SECONDS + 1)
    assert releasephase.claim_due(world.ctx) == [newer]
    releasephase.release_claims(world.ctx, [newer.deployment_id])
    with world.ctx.db.session() as s:
        dep = repo.require(s, Deployment, "deployment", id=newer.deployment_id)
        assert dep.status == DeploymentStatus.PENDING
    assert releasephase.claim_due(world.ctx) == [newer]
