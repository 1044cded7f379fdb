"""Bootstrap, login, the current user and personal API tokens."""

from __future__ import annotations

from datetime import datetime

from fastapi import APIRouter, status
from pydantic import BaseModel, EmailStr, Field

from shellwego.api.deps import Ctx, Paging, Who
from shellwego.api.pages import PageOut, out
from shellwego.models import (
    ApiToken,
    ApiTokenCreate,
    Input,
    Organization,
    OrganizationCreate,
    User,
    UserCreate,
)
from shellwego.services import auth

router = APIRouter(tags=["auth"])


class BootstrapIn(Input):
    user: UserCreate
    organization: OrganizationCreate


class TokenOut(BaseModel):
    id: str
    name: str
    token: str = Field(description="the secret token; shown only once")
    organization_id: str
    expires_at: datetime | None = None


class BootstrapOut(BaseModel):
    user: User
    organization: Organization
    token: TokenOut


class LoginIn(Input):
    email: EmailStr
    password: str = Field(max_length=256)
    organization: str | None = Field(default=None, max_length=40)


def _token_out(issued: auth.IssuedToken) -> TokenOut:
    t = issued.token
    return TokenOut(
        id=t.id,
        name=t.name,
        token=issued.secret,
        organization_id=t.organization_id,
        expires_at=t.expires_at,
    )


@router.post(
    "/v1/bootstrap",
    status_code=status.HTTP_201_CREATED,
    name="platform.bootstrap",
    response_model=BootstrapOut,
)
def bootstrap(body: BootstrapIn, ctx: Ctx) -> BootstrapOut:
    """Create the first organization and its owner (only on an empty platform)."""
    result = auth.bootstrap(ctx, body.user, body.organization)
    return BootstrapOut(
        user=result.user, organization=result.organization, token=_token_out(result.token)
    )


@router.post(
    "/v1/auth/token",
    status_code=status.HTTP_201_CREATED,
    name="auth.login",
    response_model=TokenOut,
)
def login(body: LoginIn, ctx: Ctx) -> TokenOut:
    """Log in with email and password; returns a new API token."""
    return _token_out(auth.login(ctx, body.email, body.password, body.organization))


@router.delete("/v1/auth/token", status_code=status.HTTP_204_NO_CONTENT, name="auth.logout")
def logout(who: Who, ctx: Ctx) -> None:
    """Revoke the token used for this request."""
    if who.token_id:
        auth.revoke_token(ctx, who, who.token_id)


@router.get("/v1/user", response_model=User, name="user.get")
def current_user(who: Who, ctx: Ctx) -> User:
    return auth.current_user(ctx, who)


@router.get("/v1/user/tokens", response_model=PageOut[ApiToken], name="tokens.list")
def list_tokens(who: Who, ctx: Ctx, paging: Paging) -> PageOut[ApiToken]:
    return out(auth.list_tokens(ctx, who, paging.cursor, paging.limit))


@router.post(
    "/v1/user/tokens",
    status_code=status.HTTP_201_CREATED,
    response_model=TokenOut,
    name="tokens.create",
)
def create_token(body: ApiTokenCreate, who: Who, ctx: Ctx) -> TokenOut:
    return _token_out(auth.create_token(ctx, who, body))


@router.delete(
    "/v1/user/tokens/{token_id}", status_code=status.HTTP_204_NO_CONTENT, name="tokens.revoke"
)
def revoke_token(token_id: str, who: Who, ctx: Ctx) -> None:
    auth.revoke_token(ctx, who, token_id)
