"""Builds (source upload), releases, rollbacks and deployments."""

from __future__ import annotations

import asyncio
import json
import tempfile
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query, Request, status
from fastapi import Path as InPath
from fastapi.responses import StreamingResponse
from pydantic import Field
from starlette.concurrency import run_in_threadpool

from shellwego.api.deps import Ctx, Paging, Who
from shellwego.api.pages import PageOut, out
from shellwego.errors import InvalidInput
from shellwego.models import Deployment, Event, Input, Release
from shellwego.models.scalars import Version
from shellwego.models.values import MAX_SURGE
from shellwego.services import apps as app_service
from shellwego.services import builds, deployments, releases
from shellwego.services.context import Context, Principal
from shellwego.tasks import spawn_background

router = APIRouter(tags=["deploys"])


class RollbackIn(Input):
    version: Version
    # this rollout only; the app's deploy settings otherwise
    surge: int | None = Field(default=None, ge=1, le=MAX_SURGE)
    max_unavailable: int | None = Field(default=None, ge=0, le=MAX_SURGE)


Surge = Annotated[
    int | None,
    Query(ge=1, le=MAX_SURGE, description="new instances started at once (app setting if unset)"),
]
MaxUnavailable = Annotated[
    int | None,
    Query(ge=0, le=MAX_SURGE, description="serving instances that may be missing (app setting)"),
]


class ImageDeployIn(Input):
    # the service refuses what is not a reference, naming the value; the schema says so
    image: str = Field(
        min_length=1, max_length=512, json_schema_extra={"pattern": builds.IMAGE_REF.pattern}
    )


async def _receive(request: Request, ctx: Context) -> Path:
    tmp_dir = ctx.settings.data_dir / "tmp"
    tmp_dir.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(prefix="upload-", suffix=".tar.gz", dir=tmp_dir)
    path = Path(name)
    size = 0
    with open(fd, "wb") as handle:
        async for chunk in request.stream():
            size += len(chunk)
            await run_in_threadpool(handle.write, chunk)
    if size == 0:
        path.unlink(missing_ok=True)
        raise InvalidInput("empty upload: send the app's source as a gzipped tarball")
    return path


def ndjson_stream(
    ctx: Context,
    who: Principal,
    app: str,
    source: Path,
    surge: int | None = None,
    max_unavailable: int | None = None,
) -> StreamingResponse:
    async def work(emit: builds.Emit) -> None:
        try:
            await builds.build_and_deploy(
                ctx, who, app, source, emit, surge=surge, max_unavailable=max_unavailable
            )
        finally:
            source.unlink(missing_ok=True)

    return event_stream(work)


def event_stream(work: Callable[[builds.Emit], Awaitable[Any]]) -> StreamingResponse:
    """Stream what ``work`` emits as NDJSON; the stream always ends with one done line.

    If the client goes away the build and rollout carry on without it, and what they
    emit from then on is dropped rather than queued for nobody."""
    queue: asyncio.Queue[dict[str, Any] | None] = asyncio.Queue()
    listening = True

    def put(event: dict[str, Any] | None) -> None:
        if listening:
            queue.put_nowait(event)

    async def emit(event: dict[str, Any]) -> None:
        put(event)

    async def run() -> None:
        try:
            await work(emit)
        except Exception as exc:  # the stream must always end with one done line
            put(
                {
                    "type": "done",
                    "status": "failed",
                    "detail": f"internal error: {type(exc).__name__}",
                }
            )
            raise
        finally:
            put(None)

    async def lines() -> AsyncIterator[bytes]:
        nonlocal listening
        spawn_background(run())
        try:
            while (event := await queue.get()) is not None:
                yield (json.dumps(event) + "\n").encode()
        finally:
            listening = False
            while not queue.empty():
                queue.get_nowait()

    return StreamingResponse(lines(), media_type="application/x-ndjson")


@router.post(
    "/v1/apps/{app}/builds",
    name="builds.create",
    response_class=StreamingResponse,
    responses={200: {"content": {"application/x-ndjson": {}}}},
    openapi_extra={
        "requestBody": {
            "required": True,
            "description": "the app's source as a gzipped tarball",
            "content": {
                "application/gzip": {
                    "schema": {"type": "string", "format": "binary", "minLength": 1}
                }
            },
        }
    },
)
async def create_build(
    app: str,
    request: Request,
    who: Who,
    ctx: Ctx,
    surge: Surge = None,
    max_unavailable: MaxUnavailable = None,
) -> StreamingResponse:
    """Upload the app's source (a gzipped tarball); streams the build and rollout as NDJSON.

    ``surge`` and ``max_unavailable`` set this deploy's rollout (the app's otherwise)."""
    from shellwego.models import Role
    from shellwego.services.organizations import require_role

    await run_in_threadpool(app_service.get, ctx, who, app)
    require_role(who, Role.MEMBER)
    source = await _receive(request, ctx)
    return ndjson_stream(ctx, who, app, source, surge, max_unavailable)


@router.post(
    "/v1/apps/{app}/deploy",
    name="deploys.image",
    response_class=StreamingResponse,
    responses={200: {"content": {"application/x-ndjson": {}}}},
)
async def deploy_image(
    app: str,
    body: ImageDeployIn,
    who: Who,
    ctx: Ctx,
    surge: Surge = None,
    max_unavailable: MaxUnavailable = None,
) -> StreamingResponse:
    """Deploy a container image (``{"image": "nginx:1.27"}``); streams the rollout as NDJSON.

    ``surge`` and ``max_unavailable`` set this deploy's rollout (the app's otherwise).
    Refused with a problem when no node offers an image-capable runtime (oci or microvm).
    """
    await run_in_threadpool(builds.check_image_deploy, ctx, who, app, body.image)
    return event_stream(
        lambda emit: builds.deploy_image(
            ctx, who, app, body.image, emit, surge=surge, max_unavailable=max_unavailable
        )
    )


@router.get("/v1/apps/{app}/releases", response_model=PageOut[Release], name="releases.list")
def list_releases(app: str, who: Who, ctx: Ctx, paging: Paging) -> PageOut[Release]:
    return out(releases.list_page(ctx, who, app, paging.cursor, paging.limit))


@router.get("/v1/apps/{app}/releases/{version}", response_model=Release, name="releases.get")
def get_release(app: str, version: Annotated[Version, InPath()], who: Who, ctx: Ctx) -> Release:
    return releases.get(ctx, who, app, version)


@router.get(
    "/v1/apps/{app}/releases/{version}/rollout",
    name="releases.rollout",
    response_class=StreamingResponse,
    responses={200: {"content": {"application/x-ndjson": {}}}},
)
async def follow_rollout(app: str, version: int, who: Who, ctx: Ctx) -> StreamingResponse:
    """Follow the rollout of release vN (its newest deployment) until it ends, as NDJSON
    lines like a deploy's: its release command's output (``log``), ``deployment``
    progress, then one ``done`` line. Ended already: the outcome at once."""
    dep, name = await run_in_threadpool(deployments.of_release, ctx, who, app, version)
    return event_stream(lambda emit: builds.follow_deployment(ctx, dep.id, emit, name))


@router.post(
    "/v1/apps/{app}/rollback",
    status_code=status.HTTP_201_CREATED,
    response_model=Release,
    name="releases.rollback",
)
def rollback(app: str, body: RollbackIn, who: Who, ctx: Ctx) -> Release:
    """Make a new release copying vN's slug and config vars, and roll it out: the app's
    config becomes vN's (secrets keep their current versions). Follow the rollout at
    ``GET /v1/apps/{app}/releases/{new version}/rollout``."""
    with ctx.db.session() as s:
        row = app_service.find(s, who.organization_id, app)
        release = releases.rollback(ctx, s, who, row, body.version)
        deployments.start(
            ctx,
            s,
            who,
            row,
            release,
            reason=f"rollback to v{body.version}",
            surge=body.surge,
            max_unavailable=body.max_unavailable,
        )
        return release


@router.get(
    "/v1/apps/{app}/deployments", response_model=PageOut[Deployment], name="deployments.list"
)
def list_deployments(app: str, who: Who, ctx: Ctx, paging: Paging) -> PageOut[Deployment]:
    return out(deployments.list_page(ctx, who, app, paging.cursor, paging.limit))


@router.get(
    "/v1/apps/{app}/deployments/{deployment_id}", response_model=Deployment, name="deployments.get"
)
def get_deployment(app: str, deployment_id: str, who: Who, ctx: Ctx) -> Deployment:
    """Status and progress (``instances_ready`` of ``instances_total``) of one rollout."""
    return deployments.get(ctx, who, app, deployment_id)


@router.get("/v1/apps/{app}/events", response_model=PageOut[Event], name="events.list")
def list_events(
    app: str,
    who: Who,
    ctx: Ctx,
    paging: Paging,
    deployment: Annotated[
        str | None, Query(max_length=26, description="only this deployment's events")
    ] = None,
    order: Annotated[
        Literal["asc", "desc"], Query(description="asc: oldest first; desc: newest first")
    ] = "asc",
) -> PageOut[Event]:
    """What happened to the app (deploys, failures, placement problems), oldest first
    (``order=desc``: newest first; the cursor then pages on to older events)."""
    return out(
        deployments.events_page(
            ctx,
            who,
            app,
            paging.cursor,
            paging.limit,
            deployment,
            newest_first=order == "desc",
        )
    )
