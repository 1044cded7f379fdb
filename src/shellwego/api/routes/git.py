"""Git smart HTTP: ``git push`` an app's repository to build and deploy it.

HTTP Basic auth: any user name, an API token as the password. Reading needs any role in
the app's organization, pushing needs member or above.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterable, AsyncIterator
from pathlib import Path
from typing import Any

import anyio
from fastapi import APIRouter, Request, Response
from fastapi.responses import StreamingResponse
from starlette.concurrency import run_in_threadpool

from shellwego.api.deps import Ctx, credentials
from shellwego.api.problems import problem
from shellwego.build import git
from shellwego.errors import NotFound, ShellWeGoError, Unauthenticated
from shellwego.models import Role
from shellwego.services import apps as app_service
from shellwego.services import auth
from shellwego.services.context import Context, Principal
from shellwego.services.organizations import require_role
from shellwego.store.locks import cluster_lock

log = logging.getLogger(__name__)
router = APIRouter(tags=["git"])

REALM = 'Basic realm="ShellWeGo"'
PUSH = "git-receive-pack"


def _challenge(detail: str, path: str) -> Response:
    response = problem(401, "unauthenticated", "Authentication required", detail, path)
    response.headers["WWW-Authenticate"] = REALM
    return response


def _api_url(request: Request, fallback: str) -> str:
    """Where the hook reaches this API: the address this request came in on."""
    server = request.scope.get("server")
    if not server or server[1] is None:
        return fallback
    host, port = server
    if ":" in host:
        host = f"[{host}]"
    return f"{request.url.scheme}://{host}:{port}"


def _content_length(request: Request) -> int | None:
    raw = request.headers.get("content-length")
    return int(raw) if raw is not None and raw.isdigit() else None


@router.api_route(
    "/git/{app}.git/{path:path}",
    methods=["GET", "POST"],
    name="git.http_backend",
    include_in_schema=False,
)
async def git_http(app: str, path: str, request: Request, ctx: Ctx) -> Response:
    """git's smart HTTP protocol for the app's repository, through ``git http-backend``."""
    token = credentials(request)
    if token is None:
        return _challenge("log in with an API token as the password", request.url.path)
    try:
        who = await run_in_threadpool(auth.authenticate, ctx, token)
    except Unauthenticated as exc:
        return _challenge(exc.detail, request.url.path)
    request.state.principal = who  # the audit's actor for a push
    row = await run_in_threadpool(app_service.get, ctx, who, app)
    if path.startswith("/") or any(part in ("", ".", "..") for part in path.split("/")):
        raise NotFound("no such path in the repository")
    service = request.query_params.get("service") if path == "info/refs" else path
    if service == PUSH:
        require_role(who, Role.MEMBER)
    root = git.repos_root(ctx.settings.data_dir)
    store = ctx.artifacts
    if store is None or not getattr(store, "shared", False):
        await run_in_threadpool(git.ensure_repo, root, row.id)
        return await _serve(ctx, request, token, who, row.id, path, root)
    if service != PUSH:
        # a fetch or clone: brought up to the stored copy (one sync at a time here), never
        # waiting for a push elsewhere; a failed sync serves what this replica has
        async with _read_lock(ctx, row.id):
            try:
                await run_in_threadpool(git.pull_repo, store, root, row.id)
            except ShellWeGoError as exc:
                log.warning("app %s: its repository was not synced before a read: %s", row.id, exc)
                await run_in_threadpool(git.ensure_repo, root, row.id)
        return await _serve(ctx, request, token, who, row.id, path, root)
    # a push: the repository is brought up to the stored copy first, and stored again
    # after it, all under the app's cluster-wide repository lock
    held = contextlib.AsyncExitStack()
    await held.enter_async_context(cluster_lock(ctx.db, f"git:{row.id}"))
    try:
        before = await run_in_threadpool(git.pull_repo, store, root, row.id)
        if path != PUSH:  # the refs a push starts from: no need to hold on
            await held.aclose()
        response = await _serve(ctx, request, token, who, row.id, path, root)
    except BaseException:
        await held.aclose()
        raise
    if path != PUSH:
        return response

    async def stored_after(body: AsyncIterable[Any]) -> AsyncIterator[Any]:
        try:
            async for chunk in body:
                yield chunk
        finally:
            with anyio.CancelScope(shield=True):  # also when the pusher went away
                try:
                    await run_in_threadpool(git.push_repo, store, root, row.id, before)
                except ShellWeGoError as exc:
                    log.warning("app %s: its pushed repository was not stored: %s", row.id, exc)
                finally:
                    await held.aclose()

    response.body_iterator = stored_after(response.body_iterator)
    return response


def _read_lock(ctx: Context, app_id: str) -> asyncio.Lock:
    locks = ctx.git_read_locks
    for other in [k for k, lock in locks.items() if k != app_id and not lock.locked()]:
        del locks[other]
    return locks.setdefault(app_id, asyncio.Lock())


async def _serve(
    ctx: Context, request: Request, token: str, who: Principal, app_id: str, path: str, root: Path
) -> StreamingResponse:
    cgi = git.CgiRequest(
        method=request.method,
        path_info=f"/{app_id}.git/{path}",
        query=request.url.query,
        content_type=request.headers.get("content-type"),
        content_length=_content_length(request),
        content_encoding=request.headers.get("content-encoding"),
        git_protocol=request.headers.get("git-protocol"),
        remote_user=who.user_id,
        remote_addr=request.client.host if request.client else "",
        may_push=who.at_least(Role.MEMBER),
    )
    extra = {
        "SHELLWEGO_API_URL": _api_url(request, ctx.settings.api_url),
        "SHELLWEGO_APP": app_id,
        "SHELLWEGO_TOKEN": token,
    }
    result = await git.http_backend(root, cgi, request.stream(), extra)
    return StreamingResponse(result.body, status_code=result.status, headers=result.headers)
