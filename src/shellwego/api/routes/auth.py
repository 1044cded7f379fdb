"""Bootstrap, login, the current user and personal API tokens."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Request, status
from pydantic import BaseModel, Field

from shellwego.api.contract import raises
from shellwego.api.deps import Bearer, Ctx, Paging, Who, token_of
from shellwego.api.pages import PageOut, out
from shellwego.api.routes.agent import join_token_scheme
from shellwego.models import (
    ApiToken,
    ApiTokenCreate,
    Input,
    Organization,
    OrganizationCreate,
    User,
    UserCreate,
)
from shellwego.models.scalars import Email
from shellwego.models.tenancy import IssuedApiToken
from shellwego.services import auth

router = APIRouter(tags=["auth"])


class BootstrapIn(Input):
    user: UserCreate
    organization: OrganizationCreate


class BootstrapOut(BaseModel):
    user: User
    organization: Organization
    token: IssuedApiToken


class LoginIn(Input):
    email: Email
    password: str = Field(max_length=256)
    organization: str | None = Field(default=None, max_length=40)


def _token_out(issued: auth.IssuedToken) -> IssuedApiToken:
    return IssuedApiToken.model_validate({**issued.token.model_dump(), "token": issued.secret})


def _address(request: Request) -> str | None:
    """The client's address: the connection's peer, or the X-Forwarded-For of a proxy on
    the same host (uvicorn trusts that header from 127.0.0.1 only)."""
    return request.client.host if request.client else None


def _signed_in(request: Request, issued: auth.IssuedToken) -> None:
    """Name who just signed in as the actor of this request's audit entry."""
    request.state.principal = issued.principal


@router.post(
    "/v1/bootstrap",
    status_code=status.HTTP_201_CREATED,
    name="platform.bootstrap",
    response_model=BootstrapOut,
)
@raises(401, 429)  # no join token where one is needed; too many refused attempts
def bootstrap(
    body: BootstrapIn,
    request: Request,
    ctx: Ctx,
    joining: Annotated[Bearer, Depends(join_token_scheme)],
) -> BootstrapOut:
    """Create the first organization and its owner (only on an empty platform).

    On `shellwego server` the request must carry the platform's join token as its bearer
    token (`shellwego bootstrap` is the other way); the all-in-one needs none."""
    result = auth.bootstrap(
        ctx,
        body.user,
        body.organization,
        source=_address(request),
        join_token=token_of(joining),
    )
    _signed_in(request, result.token)
    return BootstrapOut(
        user=result.user, organization=result.organization, token=_token_out(result.token)
    )


@router.post(
    "/v1/auth/token",
    status_code=status.HTTP_201_CREATED,
    name="auth.login",
    response_model=IssuedApiToken,
)
@raises(401, 403, 429)  # wrong credentials; a user in no organization; too many failures
def login(body: LoginIn, request: Request, ctx: Ctx) -> IssuedApiToken:
    """Log in with email and password; returns a new API token.

    Failed attempts are limited per source address and per account: past the limit the
    answer is 429 with Retry-After, and the wait doubles with each further failure."""
    issued = auth.login(
        ctx, body.email, body.password, body.organization, source=_address(request)
    )
    _signed_in(request, issued)
    return _token_out(issued)


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
    response_model=IssuedApiToken,
    name="tokens.create",
)
def create_token(body: ApiTokenCreate, who: Who, ctx: Ctx) -> IssuedApiToken:
    return _token_out(auth.create_token(ctx, who, body))


@router.delete(
    "/v1/user/tokens/{token_id}", status_code=status.HTTP_204_NO_CONTENT, name="tokens.revoke"
)
def revoke_token(token_id: str, who: Who, ctx: Ctx) -> None:
    auth.revoke_token(ctx, who, token_id)
