"""The on-demand TLS "ask" endpoint: Caddy asks before it gets a certificate."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Request
from fastapi.responses import PlainTextResponse

from shellwego.api.deps import Ctx
from shellwego.errors import Forbidden, NotFound
from shellwego.services import domains

router = APIRouter(tags=["edge"])

LOOPBACK = {"127.0.0.1", "::1", "localhost"}


@router.get("/v1/edge/ask", name="edge.ask", response_class=PlainTextResponse)
def ask(
    request: Request, ctx: Ctx, domain: Annotated[str, Query(min_length=1, max_length=253)]
) -> PlainTextResponse:
    """200 when the platform serves ``domain`` (an active custom domain or an app host)."""
    client = request.client.host if request.client else ""
    if client not in LOOPBACK and not client.startswith("127."):
        raise Forbidden("the ask endpoint answers the local edge only")
    if not domains.allowed_for_tls(ctx, domain):
        raise NotFound(f"{domain} is not served here")
    return PlainTextResponse("ok")
