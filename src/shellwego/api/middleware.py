"""ASGI middleware: request ids, body size limits, and the audit trail."""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable
from typing import Any

from starlette.concurrency import run_in_threadpool
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from shellwego.services import audit
from shellwego.services.context import Context

from .problems import problem

MUTATING = {"POST", "PUT", "PATCH", "DELETE"}


class BodyLimit:
    """Refuse bodies above the limit (413) before the route reads them."""

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
        headers = dict(scope.get("headers") or [])
        declared = headers.get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > limit:
            await problem(
                413,
                "payload-too-large",
                "Payload too large",
                f"request body exceeds {limit} bytes",
                scope["path"],
            )(scope, receive, send)
            return
        seen = 0

        async def limited() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > limit:
                    raise BodyTooLarge(limit)
            return message

        try:
            await self.app(scope, limited, send)
        except BodyTooLarge:
            await problem(
                413,
                "payload-too-large",
                "Payload too large",
                f"request body exceeds {limit} bytes",
                scope["path"],
            )(scope, receive, send)


class BodyTooLarge(Exception):
    def __init__(self, limit: int) -> None:
        super().__init__(f"request body exceeds {limit} bytes")


class Audit:
    """One audit entry per mutating request under /v1 (actor, action, target, result, IP)."""

    def __init__(self, app: ASGIApp, ctx_of: Callable[[], Context]) -> None:
        self.app = app
        self.ctx_of = ctx_of

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (
            scope["type"] != "http"
            or scope["method"] not in MUTATING
            or not scope["path"].startswith("/v1/")
            or scope["path"].startswith("/v1/agent/")
        ):
            await self.app(scope, receive, send)
            return
        request_id = uuid.uuid4().hex
        status = 500

        async def send_wrapper(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message.setdefault("headers", []).append((b"x-request-id", request_id.encode()))
            await send(message)

        try:
            await self.app(scope, receive, send_wrapper)
        finally:
            await self._record(scope, status, request_id)

    async def _record(self, scope: Scope, status: int, request_id: str) -> None:
        route: Any = scope.get("route")
        params: dict[str, str] = scope.get("path_params") or {}
        state = scope.get("state") or {}
        who = state.get("principal")
        segments = [p for p in scope["path"].split("/") if p][1:]
        action = getattr(route, "name", None) or f"{scope['method']} {scope['path']}"
        target_type = segments[0] if segments else "platform"
        target_id = next(reversed(params.values()), None) if params else None
        client = scope.get("client")
        record: Callable[..., Awaitable[None]] | Callable[..., None] = audit.record
        await run_in_threadpool(
            record,
            self.ctx_of(),
            who=who,
            action=action,
            target_type=target_type,
            target_id=target_id,
            status_code=status,
            source_ip=client[0] if client else None,
            request_id=request_id,
            user_agent=dict(scope.get("headers") or []).get(b"user-agent", b"").decode("latin-1"),
        )
