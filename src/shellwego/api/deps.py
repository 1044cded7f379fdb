"""Dependencies every route shares: the context, the caller, pagination."""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Query, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from starlette.concurrency import run_in_threadpool

from shellwego.services import auth
from shellwego.services.context import Context, Principal

from .contract import raises


def context(request: Request) -> Context:
    ctx: Context = request.app.state.ctx
    return ctx


def bearer(request: Request) -> str | None:
    header = request.headers.get("authorization", "")
    scheme, _, value = header.partition(" ")
    if scheme.lower() != "bearer" or not value.strip():
        return None
    return value.strip()


def credentials(request: Request) -> str | None:
    """The API token of a request: a bearer token, or the password of HTTP Basic auth
    (what git sends; the user name is ignored)."""
    token = bearer(request)
    if token is not None:
        return token
    scheme, _, value = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() != "basic":
        return None
    try:
        decoded = base64.b64decode(value.strip(), validate=True).decode()
    except (binascii.Error, UnicodeDecodeError):
        return None
    _user, sep, password = decoded.partition(":")
    return password if sep and password else None


def token_scheme(name: str, description: str) -> HTTPBearer:
    """A bearer token the OpenAPI document names; a request without one gets ``None``
    (the dependency that checks it answers 401)."""
    return HTTPBearer(scheme_name=name, description=description, auto_error=False)


Bearer = HTTPAuthorizationCredentials | None
api_token = token_scheme("apiToken", "a user's API token (swg_…), from POST /v1/auth/token")


def token_of(credentials: Bearer) -> str | None:
    return (credentials.credentials.strip() or None) if credentials else None


@raises(403)  # every signed-in operation checks the caller's role
async def principal(
    request: Request,
    ctx: Annotated[Context, Depends(context)],
    credentials: Annotated[Bearer, Depends(api_token)],
) -> Principal:
    who = await run_in_threadpool(auth.authenticate, ctx, token_of(credentials))
    request.state.principal = who
    return who


@dataclass(frozen=True, slots=True)
class PageParams:
    cursor: str | None
    limit: int


def page_params(
    cursor: Annotated[
        str | None, Query(max_length=26, description="id of the last item seen")
    ] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
) -> PageParams:
    return PageParams(cursor=cursor, limit=limit)


Ctx = Annotated[Context, Depends(context)]
Who = Annotated[Principal, Depends(principal)]
Paging = Annotated[PageParams, Depends(page_params)]
