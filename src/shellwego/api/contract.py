"""The API contract: which errors each operation can answer, derived in one place.

Every error is an RFC 9457 problem (``application/problem+json``, the ``Problem`` schema).
The statuses an operation declares come from how its route is built, never from a list
kept beside it:

* a security dependency (a bearer token: ``apiToken``, ``nodeToken``, ``joinToken``):
  401, with ``WWW-Authenticate``;
* path parameters name things that may not exist: 404;
* a mutating method (POST, PUT, PATCH, DELETE) may conflict with the current state: 409;
* a body may be too large (the body limit): 413;
* parameters, a body or a mutating method may be invalid: 422;
* every operation: 503 with Retry-After when the database stays busy;
* and whatever a dependency or the endpoint itself declares with :func:`raises`: the
  user-token dependency can refuse the caller's role (403), a body or query naming an app
  gets 404, a rate limit says 429, a DNS lookup 503. Mark the function where the error
  is raised and every route that uses it declares the status.

The OpenAPI document also gets the Problem schema, and dictionaries whose keys have a
pattern say that other keys are refused (pydantic refuses them; JSON Schema's
``patternProperties`` alone would allow them).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from http import HTTPStatus
from typing import Any, TypeVar

from fastapi import FastAPI
from fastapi.dependencies.models import Dependant
from fastapi.routing import APIRoute, RouteContext, iter_route_contexts
from fastapi.security.base import SecurityBase

from .problems import MEDIA_TYPE, Problem

MUTATING = frozenset({"POST", "PUT", "PATCH", "DELETE"})
PROBLEM_REF = {"$ref": "#/components/schemas/Problem"}
_MARK = "__shellwego_raises__"

F = TypeVar("F", bound=Callable[..., Any])


def raises(*statuses: int) -> Callable[[F], F]:
    """Declare the error statuses a dependency or an endpoint can answer beyond those
    derived from its route (see the module's docstring)."""

    def mark(func: F) -> F:
        setattr(func, _MARK, (*getattr(func, _MARK, ()), *statuses))
        return func

    return mark


def _dependants(root: Dependant) -> Iterator[Dependant]:
    yield root
    for sub in root.dependencies:
        yield from _dependants(sub)


def statuses(route: APIRoute | RouteContext) -> set[int]:
    """The error statuses ``route`` (an API route, or one as included in an app) can
    answer."""
    found: set[int] = set()
    has_path = has_params = False
    for dep in _dependants(route.dependant):
        found.update(getattr(dep.call, _MARK, ()))
        if isinstance(dep.call, SecurityBase):
            found.add(401)
        has_path = has_path or bool(dep.path_params)
        has_params = has_params or bool(dep.path_params or dep.query_params or dep.header_params)
    has_body = route.body_field is not None or "requestBody" in (route.openapi_extra or {})
    mutating = bool((route.methods or set()) & MUTATING)
    if has_path:
        found.add(404)
    if mutating:
        found.add(409)
    if has_body:
        found.add(413)
    if has_params or has_body or mutating:
        found.add(422)
    found.add(503)  # the database stayed busy (Retry-After): any operation, never a 500
    return found


def _response(status: int) -> dict[str, Any]:
    response: dict[str, Any] = {
        "description": HTTPStatus(status).phrase,
        "content": {MEDIA_TYPE: {"schema": PROBLEM_REF}},
    }
    if status == 401:
        response["headers"] = {
            "WWW-Authenticate": {
                "description": "how to authenticate",
                "required": True,
                "schema": {"type": "string"},
            }
        }
    if status in (429, 503):
        response["headers"] = {
            "Retry-After": {
                "description": "seconds to wait before trying again",
                "required": status == 429,
                "schema": {"type": "integer", "minimum": 0},
            }
        }
    return response


def declare(route: RouteContext) -> None:
    """Add the route's error responses to its OpenAPI operation: to the route as the app
    includes it and to the route itself (which an app re-reads when it re-includes)."""
    for status in sorted(statuses(route)):
        for responses in (route.responses, route.original_route.responses):  # type: ignore[attr-defined]
            responses.setdefault(status, _response(status))


def _exclusive_patterns(node: Any) -> None:
    """``patternProperties`` with no ``additionalProperties``: pydantic refuses the keys
    that match no pattern, so the schema says so too."""
    if isinstance(node, dict):
        if "patternProperties" in node:
            node.setdefault("additionalProperties", False)
        for value in node.values():
            _exclusive_patterns(value)
    elif isinstance(node, list):
        for value in node:
            _exclusive_patterns(value)


def _complete(schema: dict[str, Any]) -> None:
    schemas = schema.setdefault("components", {}).setdefault("schemas", {})
    problem = Problem.model_json_schema(ref_template="#/components/schemas/{model}")
    schemas.update(problem.pop("$defs", {}))
    schemas["Problem"] = problem
    _exclusive_patterns(schema)


def install(app: FastAPI) -> None:
    """Declare every operation's errors and complete the OpenAPI document; call once all
    routers are included."""
    for route in iter_route_contexts(app.routes):
        if isinstance(route.original_route, APIRoute) and route.include_in_schema:
            declare(route)
    generate = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            _complete(generate())
        assert app.openapi_schema is not None
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
