"""Apps, addressable by name or id; their config vars."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Body, Query, Response, status
from starlette.concurrency import run_in_threadpool

from shellwego.api.deps import Ctx, Paging, Who
from shellwego.api.pages import PageOut, out
from shellwego.models import App, AppCreate, AppStatus, AppUpdate
from shellwego.models.secrets import ConfigChanges
from shellwego.services import apps as app_service
from shellwego.services import config as config_service
from shellwego.services import edges

router = APIRouter(tags=["apps"])


@router.get("/v1/apps", response_model=PageOut[App], name="apps.list")
def list_apps(
    who: Who, ctx: Ctx, paging: Paging, status: Annotated[AppStatus | None, Query()] = None
) -> PageOut[App]:
    return out(
        app_service.list_page(
            ctx, who, paging.cursor, paging.limit, status.value if status else None
        )
    )


@router.post(
    "/v1/apps", status_code=status.HTTP_201_CREATED, response_model=App, name="apps.create"
)
def create_app(body: AppCreate, who: Who, ctx: Ctx) -> App:
    return app_service.create(ctx, who, body)


@router.get("/v1/apps/{app}", response_model=App, name="apps.get")
def get_app(app: str, who: Who, ctx: Ctx) -> App:
    return app_service.get(ctx, who, app)


@router.patch("/v1/apps/{app}", response_model=App, name="apps.update")
def update_app(app: str, body: AppUpdate, who: Who, ctx: Ctx) -> App:  # type: ignore[valid-type]
    changes = {k: getattr(body, k) for k in body.model_fields_set}  # type: ignore[attr-defined]
    return app_service.update(ctx, who, app, changes)


@router.delete("/v1/apps/{app}", status_code=status.HTTP_204_NO_CONTENT, name="apps.delete")
async def delete_app(app: str, who: Who, ctx: Ctx) -> None:
    deleted = await run_in_threadpool(app_service.delete, ctx, who, app)
    # answered once this process's edge no longer serves it: its URL is a 404 from now on
    await edges.until_unrouted(ctx, deleted.id)


@router.get("/v1/apps/{app}/config", response_model=dict[str, str], name="config.get")
def get_config(app: str, who: Who, ctx: Ctx) -> dict[str, str]:
    """The app's config vars with their values."""
    return config_service.get(ctx, who, app)


RELEASE_HEADER = "ShellWeGo-Release"


@router.patch(
    "/v1/apps/{app}/config",
    response_model=dict[str, str],
    name="config.update",
    responses={
        200: {
            "headers": {
                RELEASE_HEADER: {
                    "description": "the version of the release the change made (absent "
                    "before the first deploy); follow its rollout at "
                    "/v1/apps/{app}/releases/{version}/rollout",
                    "schema": {"type": "integer"},
                }
            }
        }
    },
)
def update_config(
    app: str, who: Who, ctx: Ctx, response: Response, body: Annotated[ConfigChanges, Body()]
) -> dict[str, str]:
    """Set (``"KEY": "value"``) or unset (``"KEY": null``) config vars; a deployed app gets
    a new release, rolled out (its version in the ``ShellWeGo-Release`` header)."""
    values, version = config_service.update(ctx, who, app, body)
    if version is not None:
        response.headers[RELEASE_HEADER] = str(version)
    return values
