"""RFC 7807 problem+json for every error, mapped in one place."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException

from shellwego.errors import ShellWeGoError

PROBLEM_BASE = "https://shellwego.dev/problems/"
MEDIA_TYPE = "application/problem+json"


def problem(
    status: int,
    slug: str,
    title: str,
    detail: str,
    instance: str,
    *,
    retry_after: int | None = None,
    **extra: Any,
) -> JSONResponse:
    """A problem+json answer; ``retry_after`` (seconds) becomes a Retry-After header and a
    ``retry_after`` member."""
    body = {
        "type": PROBLEM_BASE + slug,
        "title": title,
        "status": status,
        "detail": detail,
        "instance": instance,
        **extra,
    }
    headers = {"WWW-Authenticate": "Bearer"} if status == 401 else {}
    if retry_after is not None:
        headers["Retry-After"] = str(retry_after)
        body["retry_after"] = retry_after
    return JSONResponse(body, status_code=status, media_type=MEDIA_TYPE, headers=headers)


def _validation_errors(exc: RequestValidationError) -> list[dict[str, Any]]:
    # never echo the input back: it may hold a secret value
    return [
        {
            "loc": [str(p) for p in err.get("loc", ())],
            "msg": err.get("msg", ""),
            "type": err.get("type", ""),
        }
        for err in exc.errors()
    ]


def _summary(errors: list[dict[str, Any]]) -> str:
    parts = []
    for err in errors[:3]:
        where = ".".join(p for p in err["loc"] if p not in ("body", "query", "path"))
        parts.append(f"{where}: {err['msg']}" if where else err["msg"])
    return "; ".join(parts) or "invalid request"


def error_response(exc: ShellWeGoError, instance: str) -> JSONResponse:
    """The problem+json answer of one of the platform's errors."""
    return problem(
        exc.status,
        exc.slug,
        exc.title,
        exc.detail,
        instance,
        retry_after=exc.retry_after,
        **exc.extra,
    )


def install(app: FastAPI) -> None:
    @app.exception_handler(ShellWeGoError)
    async def _domain(request: Request, exc: ShellWeGoError) -> JSONResponse:
        return error_response(exc, request.url.path)

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = _validation_errors(exc)
        return problem(
            422, "invalid-input", "Invalid input", _summary(errors), request.url.path, errors=errors
        )

    @app.exception_handler(HTTPException)
    async def _http(request: Request, exc: HTTPException) -> JSONResponse:
        titles = {
            404: "Not found",
            405: "Method not allowed",
            401: "Authentication required",
            413: "Payload too large",
        }
        slugs = {413: "payload-too-large"}
        return problem(
            exc.status_code,
            slugs.get(exc.status_code, f"http-{exc.status_code}"),
            titles.get(exc.status_code, "Error"),
            str(exc.detail),
            request.url.path,
        )

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        return problem(
            500,
            "internal",
            "Internal error",
            "an unexpected error occurred; see the server log",
            request.url.path,
        )
