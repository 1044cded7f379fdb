"""ASGI middleware: the request log, body size limits and the audit trail (with request
ids).

Order (outermost first): :class:`RequestLog`, :class:`Audit`, then :class:`BodyLimit`,
then the routes. The log and the audit therefore see every answer, the 413s of the body
limit included.
"""

from __future__ import annotations

import json
import logging
import time
import uuid
from collections.abc import Callable, Sequence
from typing import Any

import anyio
from fastapi.routing import iter_route_contexts
from pydantic import BaseModel
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.routing import Match
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from shellwego.errors import ShellWeGoError, Unavailable
from shellwego.logconfig import REQUESTS
from shellwego.services import audit, auth
from shellwego.services.context import Context, Principal

from .deps import bearer, credentials
from .problems import error_response, problem

MUTATING = {"POST", "PUT", "PATCH", "DELETE"}
GIT_PUSH = "/git-receive-pack"


# the agents' and edge nodes' own calls (heartbeats, long polls): logged only when debugging
_MACHINE_PATHS = ("/v1/agent/", "/v1/edge/")
request_log = logging.getLogger(REQUESTS)


class RequestLog:
    """One line per request: method, path, status and duration (never the query string,
    a header or the body, any of which may hold a secret)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        began = time.perf_counter()
        status = 500  # what the client gets when nothing was sent

        async def tracked(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, tracked)
        finally:
            path = str(scope.get("path", ""))
            level = logging.DEBUG if path.startswith(_MACHINE_PATHS) else logging.INFO
            if request_log.isEnabledFor(level):
                ms = round((time.perf_counter() - began) * 1000, 1)
                method = str(scope.get("method", ""))
                client = (scope.get("client") or ("", 0))[0]
                request_log.log(
                    level,
                    "%s %s %d %.1f ms",
                    method,
                    path,
                    status,
                    ms,
                    extra={
                        "method": method,
                        "path": path,
                        "status": status,
                        "duration_ms": ms,
                        "client": client,
                    },
                )


class BodyTooLarge(HTTPException):
    """The request body passed the limit while it was being read.

    An HTTPException, so FastAPI lets it through its body parsing (anything else would
    become a 400) and the error handlers answer 413 for JSON and streamed routes alike.
    """

    def __init__(self, limit: int) -> None:
        super().__init__(413, f"request body exceeds {limit} bytes")


class BodyLimit:
    """Refuse bodies above the limit with 413: by their Content-Length before the route
    runs, or (chunked, no Content-Length) as soon as the bytes read pass the limit."""

    def __init__(
        self, app: ASGIApp, limit: int, upload_limit: int, is_upload: Callable[[str], bool]
    ) -> None:
        self.app = app
        self.limit = limit
        self.upload_limit = upload_limit
        self.is_upload = is_upload

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = self.upload_limit if self.is_upload(scope["path"]) else self.limit
        declared = dict(scope.get("headers") or []).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > limit:
            await _too_large(limit, scope["path"])(scope, receive, send)
            return
        seen = 0
        started = False

        async def limited() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > limit:
                    raise BodyTooLarge(limit)
            return message

        async def tracked(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, limited, tracked)
        except BodyTooLarge:
            # raised where no error handler answered it (outside a route)
            if started:
                raise
            await _too_large(limit, scope["path"])(scope, receive, send)


def _too_large(limit: int, path: str) -> Any:
    return problem(
        413, "payload-too-large", "Payload too large", f"request body exceeds {limit} bytes", path
    )


def audited(scope: Scope) -> bool:
    """Mutating user requests: every POST/PUT/PATCH/DELETE under /v1 except the agent
    protocol (nodes, not users), and git pushes. Fetches and clones are reads."""
    if scope["type"] != "http" or scope["method"] not in MUTATING:
        return False
    path: str = scope["path"]
    if path.startswith("/v1/"):
        return not path.startswith("/v1/agent/")
    return path.startswith("/git/") and path.endswith(GIT_PUSH)


class Audit:
    """Exactly one audit entry per mutating user request, written before the response
    goes out: actor, action (the route's name), target, result, source IP and time.

    The response's start is held until its first body chunk: a create's target is the
    ``id`` in its response body (read only from routes whose response model declares
    one), everything else is named by its path. Nothing from a request body, a query
    string or any other part of a response is recorded, so no secret value can be.
    If the entry cannot be written, the client gets a 500 (a 503 with Retry-After when the
    database is too busy), never an unaudited success.
    """

    def __init__(
        self, app: ASGIApp, ctx_of: Callable[[], Context], routes_of: Callable[[], Sequence[Any]]
    ) -> None:
        self.app = app
        self.ctx_of = ctx_of
        self.routes_of = routes_of

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if not audited(scope):
            await self.app(scope, receive, send)
            return
        request_id = uuid.uuid4().hex
        recorded = False
        held: Message | None = None
        refused = False

        async def write(status: int, body: bytes | None) -> None:
            nonlocal recorded
            if recorded:
                return
            recorded = True
            with anyio.CancelScope(shield=True):
                await self._record(scope, status, body, request_id)

        async def answer(start: Message, body: bytes | None) -> bool:
            """Record, then let the answer go; a database too busy to record it turns the
            answer into its 503 (Retry-After): never an unaudited success."""
            nonlocal refused
            try:
                await write(start["status"], body)
            except Unavailable as exc:
                refused = True
                await error_response(exc, scope["path"])(scope, receive, send)
                return False
            await send(start)
            return True

        async def send_wrapper(message: Message) -> None:
            nonlocal held
            if refused:
                return  # the app's answer was replaced by the 503
            if message["type"] == "http.response.start":
                message.setdefault("headers", []).append((b"x-request-id", request_id.encode()))
                held = message
                return
            if held is not None:
                start, held = held, None
                whole = message["type"] == "http.response.body" and not message.get("more_body")
                if not await answer(start, message.get("body", b"") if whole else None):
                    return
            await send(message)

        try:
            await self.app(scope, receive, send_wrapper)
        except BaseException:
            await write(500, None)
            raise
        if held is not None:
            await answer(held, None)

    async def _record(self, scope: Scope, status: int, body: bytes | None, request_id: str) -> None:
        route, params = self._route(scope)
        ctx = self.ctx_of()
        who = (scope.get("state") or {}).get("principal")
        if who is None:
            who = await run_in_threadpool(_caller, ctx, Request(scope))
        path: str = scope["path"]
        if path.startswith("/git/"):
            action, target_type = "git.push", "apps"
        else:
            segments = [p for p in path.split("/") if p][1:]
            action = getattr(route, "name", None) or f"{scope['method']} {path}"
            target_type = segments[0] if segments else "platform"
        client = scope.get("client")
        await run_in_threadpool(
            audit.record,
            ctx,
            who=who,
            action=action,
            target_type=target_type,
            target_id=_created_id(route, status, body) or _named(params),
            status_code=status,
            source_ip=client[0] if client else None,
            request_id=request_id,
            user_agent=dict(scope.get("headers") or []).get(b"user-agent", b"").decode("latin-1"),
        )

    def _route(self, scope: Scope) -> tuple[Any, dict[str, Any]]:
        """The route that served the request; found by matching when no route ran
        (a 413 answered before routing)."""
        if scope.get("route") is not None:
            return scope["route"], dict(scope.get("path_params") or {})
        for context in iter_route_contexts(self.routes_of()):
            route = context.original_route
            match, child = route.matches(scope)
            if match == Match.FULL:
                return route, dict(child.get("path_params") or {})
        return None, {}


def _caller(ctx: Context, request: Request) -> Principal | None:
    """Who sent a request that was answered before a route identified them (HTTP Basic
    auth counts only where the routes accept it: git's)."""
    token = credentials(request) if request.url.path.startswith("/git/") else bearer(request)
    if token is None:
        return None
    try:
        return auth.authenticate(ctx, token)
    except ShellWeGoError:
        return None


def _created_id(route: Any, status: int, body: bytes | None) -> str | None:
    model = getattr(route, "response_model", None)
    if not (body and 200 <= status < 300 and isinstance(model, type)):
        return None
    if not (issubclass(model, BaseModel) and "id" in model.model_fields):
        return None
    try:
        found = json.loads(body).get("id")
    except (ValueError, AttributeError):
        return None
    return found if isinstance(found, str) and len(found) <= 255 else None


def _named(params: dict[str, Any]) -> str | None:
    """The path's last resource reference (a repository path inside it is not one)."""
    refs = [str(v) for k, v in params.items() if k != "path"]
    return refs[-1][:255] if refs else None
