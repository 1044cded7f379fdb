"""Source in, running release out: extract, build, store the slug, release, roll out."""

from __future__ import annotations

import asyncio
import re
import shutil
import tempfile
from collections.abc import Awaitable, Callable
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy.orm import Session
from starlette.concurrency import run_in_threadpool

from shellwego.build.builder import BUILD_CONFIG
from shellwego.errors import Conflict, InvalidInput, RuntimeUnavailable, ShellWeGoError
from shellwego.models import (
    App,
    Deployment,
    DeploymentStatus,
    DesiredState,
    Instance,
    Node,
    NodeStatus,
    Role,
)
from shellwego.store import repository as repo
from shellwego.store.locks import cluster_lock

from . import apps as app_service
from . import deployments, logs, releasephase, releases, secrets
from .context import Context, Principal
from .organizations import require_role

Emit = Callable[[dict[str, Any]], Awaitable[None]]

TERMINAL = {DeploymentStatus.SUCCEEDED, DeploymentStatus.FAILED, DeploymentStatus.SUPERSEDED}
IN_RELEASE_PHASE = {DeploymentStatus.PENDING, DeploymentStatus.RELEASING}

IMAGE_RUNTIMES = ("oci", "microvm")
IMAGE_REF = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._/:@+-]{0,511}$")


def app_url(ctx: Context, app_name: str) -> str:
    return ctx.settings.app_url(app_name)


def _store_build_lines(ctx: Context, app_id: str, lines: list[str]) -> None:
    with ctx.db.session() as s:
        logs.add_lines(ctx, s, app_id, "build", lines)


def build_lock(ctx: Context, app_id: str) -> AbstractAsyncContextManager[None]:
    """One build of an app at a time in the whole cluster (every replica on this database)."""
    return cluster_lock(ctx.db, f"build:{app_id}")


async def build_and_deploy(
    ctx: Context,
    who: Principal,
    app_ref: str,
    source: Path,
    emit: Emit,
    *,
    surge: int | None = None,
    max_unavailable: int | None = None,
) -> bool:
    """Build ``source`` (an uploaded tarball), release it and roll it out (with ``surge``
    and ``max_unavailable`` where given, else the app's settings when the rollout starts).
    The build's steps run as the app's own uid, with the app's own build cache.

    Every step is reported through ``emit``; the last call is always a ``done`` line.
    Returns True when the new release is serving.
    """
    from shellwego.build.archive import safe_extract

    require_role(who, Role.MEMBER)
    app = await run_in_threadpool(app_service.get, ctx, who, app_ref)
    builder = ctx.builder
    if builder is None:
        raise RuntimeUnavailable("this control plane does not build apps")
    artifacts = ctx.require_artifacts()
    pending: list[str] = []

    async def log(line: str) -> None:
        pending.append(line)
        await emit({"type": "log", "line": line})
        if len(pending) >= 50:
            batch = pending[:]
            pending.clear()
            await run_in_threadpool(_store_build_lines, ctx, app.id, batch)

    user = None if app.uid is None else (app.uid, app.uid)
    work = Path(tempfile.mkdtemp(prefix="build-", dir=ctx.settings.data_dir / "tmp"))
    work.chmod(0o711)  # unsandboxed build steps reach their source in it (a 0700 directory)
    try:
        async with build_lock(ctx, app.id):
            src = work / "src"
            src.mkdir()
            with source.open("rb") as stream:
                await run_in_threadpool(
                    safe_extract, stream, src, max_bytes=ctx.settings.max_upload_bytes * 4
                )
            await log(f"-----> Building {app.name}")
            # the build sees the app's build switches (DISABLE_COLLECTSTATIC), no other config
            config = await run_in_threadpool(secrets.config, ctx, who, app.id, BUILD_CONFIG)
            result = await builder.build(src, work / "out", log, user=user, config=config)
            digest = await run_in_threadpool(artifacts.put, result.slug_path)
            await log(
                f"-----> Slug {digest[:12]} ({result.size_bytes // 1024} KiB), "
                f"process types: {', '.join(sorted(result.process_types)) or 'none'}"
            )
            await run_in_threadpool(_store_build_lines, ctx, app.id, pending[:])
            pending.clear()
            artifact = releases.Artifact(
                slug_digest=digest,
                stack=result.stack,
                process_types=dict(result.process_types),
                slug_env=dict(result.env),
            )

            rolling = await run_in_threadpool(
                _release_and_roll_out,
                ctx,
                who,
                lambda s: app_service.find(s, who.organization_id, app.id),
                artifact,
                f"Deploy {digest[:12]}",
                "new build",
                surge,
                max_unavailable,
            )
            await emit({"type": "release", "version": rolling.version, "id": rolling.release_id})
        return await follow_deployment(ctx, rolling.deployment_id, emit, rolling.app_name)
    except ShellWeGoError as exc:
        await run_in_threadpool(_store_build_lines, ctx, app.id, [*pending, f"error: {exc}"])
        await emit({"type": "done", "status": "failed", "detail": str(exc)})
        return False
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _image_app(s: Session, who: Principal, app_ref: str, image: str) -> App:
    """The app, unless nothing here could run ``image`` for it."""
    require_role(who, Role.MEMBER)
    app = app_service.find(s, who.organization_id, app_ref)
    if not IMAGE_REF.match(image):
        raise InvalidInput(f"{image!r} is not an image reference (e.g. nginx:1.27)")
    offered = {
        runtime
        for node in repo.find_all(s, Node, status=NodeStatus.READY.value)
        for runtime in node.runtimes
    }
    if offered.isdisjoint(IMAGE_RUNTIMES):
        raise RuntimeUnavailable("no node offers an image-capable runtime (oci or microvm)")
    if app.runtime not in IMAGE_RUNTIMES:
        raise Conflict(
            f"app {app.name} uses the {app.runtime} runtime, which runs built source; "
            "image deploys need an app on the oci or microvm runtime"
        )
    return app


def check_image_deploy(ctx: Context, who: Principal, app_ref: str, image: str) -> None:
    """Refuse, before anything is made, an image deploy that nothing here could run."""
    with ctx.db.session() as s:
        _image_app(s, who, app_ref, image)


async def deploy_image(
    ctx: Context,
    who: Principal,
    app_ref: str,
    image: str,
    emit: Emit,
    *,
    surge: int | None = None,
    max_unavailable: int | None = None,
) -> bool:
    """Release ``image`` (its own entrypoint is the web process) and roll it out (with
    ``surge`` and ``max_unavailable`` where given, else the app's settings)."""
    artifact = releases.Artifact(
        slug_digest=None, stack="image", process_types={"web": ""}, slug_env={}, image=image
    )

    try:
        rolling = await run_in_threadpool(
            _release_and_roll_out,
            ctx,
            who,
            lambda s: _image_app(s, who, app_ref, image),
            artifact,
            f"Deploy image {image}",
            "image deploy",
            surge,
            max_unavailable,
        )
    except ShellWeGoError as exc:
        await emit({"type": "done", "status": "failed", "detail": str(exc)})
        return False
    await emit({"type": "release", "version": rolling.version, "id": rolling.release_id})
    return await follow_deployment(ctx, rolling.deployment_id, emit, rolling.app_name)


@dataclass(frozen=True, slots=True)
class Rolling:
    """A new release and the deployment rolling it out."""

    release_id: str
    version: int
    deployment_id: str
    app_name: str


def _release_and_roll_out(
    ctx: Context,
    who: Principal,
    find_app: Callable[[Session], App],
    artifact: releases.Artifact,
    description: str,
    reason: str,
    surge: int | None,
    max_unavailable: int | None,
) -> Rolling:
    """In one transaction: the app (``find_app`` refuses what may not be deployed), a new
    release of ``artifact``, and its deployment (the app's rollout settings unless
    ``surge``/``max_unavailable`` are given)."""
    with ctx.db.session() as s:
        app = find_app(s)
        rel = releases.create(ctx, s, who, app, artifact=artifact, description=description)
        dep = deployments.start(
            ctx, s, who, app, rel, reason=reason, surge=surge, max_unavailable=max_unavailable
        )
        return Rolling(rel.id, rel.version, dep.id, app.name)


def _web_addresses(ctx: Context, release_id: str) -> set[str]:
    with ctx.db.session() as s:
        nodes = {n.id: n.address for n in repo.find_all(s, Node)}
        return {
            f"{nodes.get(i.node_id, '127.0.0.1')}:{i.port}"
            for i in repo.find_all(
                s,
                Instance,
                release_id=release_id,
                process_type="web",
                desired_state=DesiredState.RUNNING.value,
            )
        }


async def _until_routed(ctx: Context, release_id: str, app_name: str, limit: float = 5.0) -> None:
    """Wait (briefly) until the edge routes to the new web instances, so the URL works."""
    from shellwego.controllers.edge import serves

    addresses = await run_in_threadpool(_web_addresses, ctx, release_id)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + limit
    while addresses and not serves(ctx, app_name, addresses) and loop.time() < deadline:
        await ctx.bus.wait("edge-applied", 0.25)


class _ReleasePhaseReport:
    """The release phase in a deployment's stream: a line when its command starts, then
    its output and how it ended (also when the stream began after it had ended)."""

    def __init__(self, ctx: Context, emit: Emit) -> None:
        self.ctx, self.emit = ctx, emit
        self.started = False
        self.ended = False

    async def _start(self, release_id: str) -> None:
        command = await run_in_threadpool(releasephase.command_of, self.ctx, release_id)
        await self.emit({"type": "log", "line": f"-----> Running release command: {command}"})
        self.started = True

    async def update(self, dep: Deployment) -> bool:
        """Report what changed; True while the release phase goes on."""
        if dep.status in IN_RELEASE_PHASE:
            if not self.started:
                await self._start(dep.release_id)
            return True
        if not self.ended:
            self.ended = True  # looked up once, when the phase is over (or never was)
            ended = await run_in_threadpool(releasephase.output_of, self.ctx, dep.id)
            if ended is not None:
                if not self.started:
                    await self._start(dep.release_id)
                message, output = ended
                for text in output:
                    await self.emit({"type": "log", "line": f"       {text}"})
                await self.emit(
                    {"type": "log", "line": f"-----> {message[:1].upper()}{message[1:]}"}
                )
        return False


async def follow_deployment(ctx: Context, deployment_id: str, emit: Emit, app_name: str) -> bool:
    """Report a deployment's progress until it ends: its release phase (the release
    command's output), then the rollout."""
    last: tuple[str, int] | None = None
    phase = _ReleasePhaseReport(ctx, emit)
    while True:
        dep = await run_in_threadpool(deployments.status_of, ctx, deployment_id)
        releasing = await phase.update(dep)
        now = (str(dep.status), dep.instances_ready)
        if not releasing and now != last:
            last = now
            await emit(
                {
                    "type": "deployment",
                    "id": dep.id,
                    "status": str(dep.status),
                    "instances_total": dep.instances_total,
                    "instances_ready": dep.instances_ready,
                }
            )
        if dep.status in TERMINAL:
            if dep.status == DeploymentStatus.SUCCEEDED:
                await _until_routed(ctx, dep.release_id, app_name)
                await emit({"type": "done", "status": "succeeded", "url": app_url(ctx, app_name)})
                return True
            await emit(
                {
                    "type": "done",
                    "status": "failed",
                    "detail": dep.error or f"deployment {dep.status}",
                }
            )
            return False
        await ctx.bus.wait("rollout", 0.25)
