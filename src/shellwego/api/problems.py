"""RFC 7807 problem+json for every error, mapped in one place."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.routing import iter_route_contexts
from pydantic import BaseModel, ConfigDict, Field
from starlette.exceptions import HTTPException
from starlette.routing import Match

from shellwego.errors import ShellWeGoError
from shellwego.models.scalars import HttpStatus

PROBLEM_BASE = "https://shellwego.dev/problems/"
MEDIA_TYPE = "application/problem+json"


class FieldError(BaseModel):
    """One reason a request was invalid; never the value that was given."""

    loc: list[str] = Field(description="where: body, query or path, then the field")
    msg: str
    type: str


class Problem(BaseModel):
    """An error, as RFC 9457 (formerly 7807) problem details."""

    model_config = ConfigDict(extra="allow")  # a problem type may add members

    type: str = Field(description="a URI naming the kind of problem")
    title: str
    status: HttpStatus
    detail: str
    instance: str = Field(description="the request's path")
    errors: list[FieldError] | None = Field(
        default=None, description="what was invalid (invalid-input problems only)"
    )
    retry_after: int | None = Field(
        default=None, ge=0, description="seconds to wait before trying again (429, 503)"
    )


def problem(
    status: int,
    slug: str,
    title: str,
    detail: str,
    instance: str,
    *,
    retry_after: int | None = None,
    headers: Mapping[str, str] | None = None,
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
    sent = dict(headers or {})
    if status == 401:
        sent.setdefault("WWW-Authenticate", "Bearer")
    if retry_after is not None:
        sent["Retry-After"] = str(retry_after)
        body["retry_after"] = retry_after
    return JSONResponse(body, status_code=status, media_type=MEDIA_TYPE, headers=sent or None)


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


def _allowed(request: Request) -> str:
    """Every method some route of the request's path answers (RFC 9110 ``Allow``); the
    router's own 405 names only the first route that matched the path."""
    methods: set[str] = set()
    for route in iter_route_contexts(request.app.router.routes):
        match, _ = route.matches(request.scope)
        if match != Match.NONE:
            methods |= route.methods or set()
    return ", ".join(sorted(methods))


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
        if exc.status_code == 400:
            # the framework could not read the body (not UTF-8): as invalid as bad JSON
            return problem(
                422,
                "invalid-input",
                "Invalid input",
                "the request body is not valid JSON",
                request.url.path,
                errors=[{"loc": ["body"], "msg": "not valid JSON", "type": "json_invalid"}],
            )
        titles = {
            404: "Not found",
            405: "Method not allowed",
            401: "Authentication required",
            413: "Payload too large",
        }
        slugs = {413: "payload-too-large"}
        headers = dict(exc.headers or {})
        if exc.status_code == 405:
            headers["Allow"] = _allowed(request)
        return problem(
            exc.status_code,
            slugs.get(exc.status_code, f"http-{exc.status_code}"),
            titles.get(exc.status_code, "Error"),
            str(exc.detail),
            request.url.path,
            headers=headers,
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
