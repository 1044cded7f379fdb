"""Secrets: write-only values, versions, rotation, and the explicit reveal."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, status
from pydantic import BaseModel

from shellwego.api.contract import raises
from shellwego.api.deps import Ctx, Paging, Who
from shellwego.api.pages import PageOut, out
from shellwego.models import Secret, SecretCreate, SecretRotate, SecretVersionInfo
from shellwego.models.scalars import Version
from shellwego.services import secrets

router = APIRouter(tags=["secrets"])

AppQuery = Annotated[str | None, Query(max_length=63, description="app name or id")]


class RevealOut(BaseModel):
    name: str
    version: int
    value: str


@router.get("/v1/secrets", response_model=PageOut[Secret], name="secrets.list")
@raises(404)  # the app it filters by
def list_secrets(who: Who, ctx: Ctx, paging: Paging, app: AppQuery = None) -> PageOut[Secret]:
    return out(secrets.list_page(ctx, who, paging.cursor, paging.limit, app))


@router.post(
    "/v1/secrets", status_code=status.HTTP_201_CREATED, response_model=Secret, name="secrets.create"
)
@raises(404)  # the app it belongs to
def create_secret(body: SecretCreate, who: Who, ctx: Ctx) -> Secret:
    return secrets.create(ctx, who, body)


@router.get("/v1/secrets/{secret}", response_model=Secret, name="secrets.get")
def get_secret(secret: str, who: Who, ctx: Ctx, app: AppQuery = None) -> Secret:
    return secrets.get(ctx, who, secret, app)


@router.delete(
    "/v1/secrets/{secret}", status_code=status.HTTP_204_NO_CONTENT, name="secrets.delete"
)
def delete_secret(secret: str, who: Who, ctx: Ctx, app: AppQuery = None) -> None:
    secrets.delete(ctx, who, secret, app)


@router.get(
    "/v1/secrets/{secret}/versions",
    response_model=PageOut[SecretVersionInfo],
    name="secrets.versions",
)
def list_versions(
    secret: str, who: Who, ctx: Ctx, paging: Paging, app: AppQuery = None
) -> PageOut[SecretVersionInfo]:
    return out(secrets.versions(ctx, who, secret, app, paging.cursor, paging.limit))


@router.post(
    "/v1/secrets/{secret}/versions",
    status_code=status.HTTP_201_CREATED,
    response_model=Secret,
    name="secrets.rotate",
)
def rotate_secret(
    secret: str, body: SecretRotate, who: Who, ctx: Ctx, app: AppQuery = None
) -> Secret:
    return secrets.rotate(ctx, who, secret, app, body.value)


@router.post("/v1/secrets/{secret}/reveal", response_model=RevealOut, name="secrets.reveal")
def reveal_secret(
    secret: str,
    who: Who,
    ctx: Ctx,
    app: AppQuery = None,
    version: Annotated[Version | None, Query()] = None,
) -> RevealOut:
    """The one place a secret value leaves the platform (admin and above)."""
    row, value = secrets.reveal(ctx, who, secret, app, version)
    return RevealOut(name=row.name, version=version or row.current_version, value=value)
