"""App and build logs: the last lines, then (with ``follow=1``) a live stream over SSE."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Annotated

from fastapi import APIRouter, Query, Request
from fastapi.responses import StreamingResponse
from starlette.concurrency import run_in_threadpool

from shellwego.api.deps import Ctx, Who
from shellwego.models import LogLine
from shellwego.services import logs

router = APIRouter(tags=["logs"])


def _event(line: LogLine) -> bytes:
    body = {
        "id": line.id,
        "timestamp": line.timestamp.isoformat(),
        "source": line.source,
        "instance_id": line.instance_id,
        "stream": line.stream,
        "line": line.line,
    }
    return f"id: {line.id}\ndata: {json.dumps(body)}\n\n".encode()


@router.get(
    "/v1/apps/{app}/logs",
    name="logs.get",
    response_class=StreamingResponse,
    responses={200: {"content": {"text/event-stream": {}}}},
)
async def get_logs(
    app: str,
    request: Request,
    who: Who,
    ctx: Ctx,
    tail: Annotated[int, Query(ge=0, le=10000)] = 100,
    follow: Annotated[bool, Query()] = False,
    process: Annotated[str | None, Query(max_length=30)] = None,
) -> StreamingResponse:
    app_id = await run_in_threadpool(logs.app_id_of, ctx, who, app)
    first = await run_in_threadpool(logs.tail, ctx, app_id, tail, process)

    async def stream() -> AsyncIterator[bytes]:
        cursor = first[-1].id if first else await run_in_threadpool(logs.newest_id, ctx, app_id)
        for line in first:
            yield _event(line)
        if not follow:
            return
        yield b": following\n\n"
        # subscribed before each read: a line stored while reading wakes the next wait
        with ctx.bus.subscribe(f"logs:{app_id}") as new_lines:
            while not ctx.bus.closed and not await request.is_disconnected():
                fresh = await run_in_threadpool(logs.after, ctx, app_id, cursor, process)
                for line in fresh:
                    cursor = line.id
                    yield _event(line)
                if not fresh and not await new_lines.wait(10.0):
                    yield b": keep-alive\n\n"

    return StreamingResponse(
        stream(), media_type="text/event-stream", headers={"Cache-Control": "no-cache"}
    )
