"""HTTP client of the agent protocol (docs/agent-protocol.md).

Transient failures (connection refused, timeouts, 5xx) raise :class:`Unavailable`: the
caller retries with backoff while the node's instances keep running. A rejected token
raises :class:`Unauthenticated`; other refusals raise the matching error class.

The client knows every replica of the control plane (``--server URL1,URL2``): a transient
failure moves it to the next one at once (:class:`shellwego.replicas.Replicas`), so the
caller's retry goes to a replica that may answer, and a blocking query waiting on the
failed replica gives up at once instead of holding its connection.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import httpx
from pydantic import BaseModel, ValidationError

from shellwego import replicas
from shellwego.errors import (
    BadRequest,
    Conflict,
    Forbidden,
    InvalidInput,
    NotFound,
    PayloadTooLarge,
    RuntimeFailure,
    ShellWeGoError,
    Unauthenticated,
    Unavailable,
)
from shellwego.models.agentprotocol import (
    Assignment,
    Heartbeat,
    HeartbeatAnswer,
    Registered,
)

# how much longer than the server's ``wait`` the client waits for a blocking query
WAIT_MARGIN = 10.0
ARTIFACT_READ_TIMEOUT = 60.0
DIGEST_LENGTH = 64

_BY_STATUS: dict[int, type[ShellWeGoError]] = {
    400: BadRequest,
    401: Unauthenticated,
    403: Forbidden,
    404: NotFound,
    409: Conflict,
    413: PayloadTooLarge,
    422: InvalidInput,
}


@dataclass(frozen=True, slots=True)
class AssignmentSet:
    index: int
    instances: list[Assignment]
    errors: list[str] = field(default_factory=list)  # the items skipped, and why


def _problem(exc: ValidationError) -> str:
    """The first error of a malformed item, naming its field and never its value."""
    first = exc.errors(include_url=False, include_input=False)[0]
    where = ".".join(str(p) for p in first["loc"]) or "the item"
    return f"field {where!r}: {first['msg']}"


def parse_assignments(items: Sequence[object]) -> tuple[list[Assignment], list[str]]:
    """Parse the protocol's list item by item: a malformed item is skipped and described
    in the errors (never with its values: ``env`` carries secrets)."""
    good: list[Assignment] = []
    errors: list[str] = []
    for item in items:
        try:
            good.append(Assignment.model_validate(item))
        except ValidationError as exc:
            ident = item.get("instance_id") if isinstance(item, Mapping) else None
            errors.append(f"assignment {ident!r}: {_problem(exc)}")
    return good, errors


def _detail(response: httpx.Response) -> str:
    try:
        body = response.json()
    except ValueError:
        return response.reason_phrase or f"HTTP {response.status_code}"
    if isinstance(body, dict) and isinstance(body.get("detail"), str):
        return str(body["detail"])
    return response.reason_phrase or f"HTTP {response.status_code}"


def _raise_for(response: httpx.Response, what: str) -> None:
    code = response.status_code
    if code < 400:
        return
    detail = _detail(response)
    if code >= 500 or code in (408, 429):
        raise Unavailable(f"{what}: control plane answered {code}: {detail}")
    cls = _BY_STATUS.get(code, BadRequest)
    raise cls(f"{what}: {detail}")


M = TypeVar("M", bound=BaseModel)


def _parsed(model: type[M], response: httpx.Response, what: str) -> M:
    try:
        return model.model_validate_json(response.content)
    except ValidationError as exc:
        raise Unavailable(
            f"{what}: malformed answer from the control plane ({_problem(exc)})"
        ) from exc


class ControlPlaneClient:
    """One connection pool to the control plane's replicas; the node token is set after
    registering. ``server_url``: one base URL, several separated by commas, or a list."""

    def __init__(
        self,
        server_url: str | Sequence[str],
        *,
        node_token: str | None = None,
        timeout: float = replicas.REQUEST_TIMEOUT,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.replicas = replicas.Replicas(server_url, who="agent")
        self.node_token = node_token
        self._http = httpx.AsyncClient(
            timeout=replicas.timeout(timeout),
            transport=transport or replicas.transport(),
            headers={"User-Agent": "shellwego-agent"},
        )

    @property
    def server_url(self) -> str:
        """The replica in use."""
        return self.replicas.current

    async def aclose(self) -> None:
        await self._http.aclose()

    def _auth(self, token: str | None) -> dict[str, str]:
        return {"Authorization": f"Bearer {token}"} if token else {}

    async def _request(
        self,
        method: str,
        path: str,
        what: str,
        *,
        token: str | None,
        json: Any = None,
        params: Mapping[str, Any] | None = None,
        timeout: float | None = None,
        abandon: bool = False,
        blocking: bool = False,
    ) -> httpx.Response:
        """One request to the replica in use; a transient failure moves to the next one.
        ``abandon``: an idempotent request, abandoned as soon as another request found
        this replica failed. ``blocking``: a blocking query, abandoned likewise, and
        meanwhile its replica is probed (see :meth:`Replicas.unless_moved`)."""
        base = self.replicas.current
        request = self._http.request(
            method,
            f"{base}{path}",
            json=json,
            params=params,
            headers=self._auth(token),
            timeout=replicas.timeout(timeout) if timeout is not None else httpx.USE_CLIENT_DEFAULT,
        )
        try:
            if blocking:
                response = await self.replicas.unless_moved(
                    base, request, what, probe=lambda: replicas.health(self._http, base)
                )
            elif abandon:
                response = await self.replicas.unless_moved(base, request, what)
            else:
                response = await request
        except httpx.TransportError as exc:
            self.replicas.failed(base, type(exc).__name__)
            raise Unavailable(
                f"{what}: control plane at {base} unreachable ({type(exc).__name__})"
            ) from exc
        if response.status_code >= 500:
            self.replicas.failed(base, f"HTTP {response.status_code}")
        else:
            self.replicas.answered(base)
        _raise_for(response, what)
        return response

    async def register(
        self,
        join_token: str,
        *,
        hostname: str,
        capacity: Mapping[str, int],
        runtimes: Sequence[str],
        labels: Mapping[str, str],
        agent_version: str,
        address: str,
        machine: Mapping[str, Any] | None = None,
        runtime_reasons: Mapping[str, str] | None = None,
    ) -> Registered:
        response = await self._request(
            "POST",
            "/v1/agent/register",
            "register",
            token=join_token,
            json={
                "hostname": hostname,
                "capacity": dict(capacity),
                "runtimes": list(runtimes),
                "labels": dict(labels),
                "agent_version": agent_version,
                "address": address,
                "runtime_reasons": dict(runtime_reasons or {}),
                **(machine or {}),
            },
        )
        return _parsed(Registered, response, "register")

    async def heartbeat(self, body: Heartbeat) -> HeartbeatAnswer:
        response = await self._request(
            "POST",
            "/v1/agent/heartbeat",
            "heartbeat",
            token=self.node_token,
            json=body.model_dump(mode="json", exclude_none=True),
            abandon=True,
        )
        return _parsed(HeartbeatAnswer, response, "heartbeat")

    async def assignments(self, index: int, wait: float) -> AssignmentSet:
        """Blocking query: returns when the node's index passes ``index`` or after ``wait``."""
        response = await self._request(
            "GET",
            "/v1/agent/assignments",
            "assignments",
            token=self.node_token,
            params={"index": index, "wait": wait},
            timeout=wait + WAIT_MARGIN,
            blocking=True,
        )
        try:
            body = response.json()
        except ValueError:
            body = None
        now = body.get("index") if isinstance(body, dict) else None
        instances = body.get("instances") if isinstance(body, dict) else None
        if not isinstance(now, int) or isinstance(now, bool) or not isinstance(instances, list):
            raise Unavailable("assignments: malformed answer from the control plane")
        parsed, errors = parse_assignments(instances)
        return AssignmentSet(index=now, instances=parsed, errors=errors)

    async def download_artifact(self, digest: str, dest: Path) -> Path:
        """Stream the slug to ``dest``, verifying its sha256 against ``digest``."""
        if len(digest) != DIGEST_LENGTH or any(c not in "0123456789abcdef" for c in digest):
            raise InvalidInput(f"invalid artifact digest {digest[:80]!r}")
        dest.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp_name = tempfile.mkstemp(prefix=".download-", dir=dest.parent)
        tmp = Path(tmp_name)
        what = f"artifact {digest[:12]}"
        try:
            sha = hashlib.sha256()
            base = self.replicas.current
            with os.fdopen(fd, "wb") as handle:
                try:
                    async with self._http.stream(
                        "GET",
                        f"{base}/v1/agent/artifacts/{digest}",
                        headers=self._auth(self.node_token),
                        timeout=replicas.timeout(ARTIFACT_READ_TIMEOUT),
                    ) as response:
                        if response.status_code >= 400:
                            await response.aread()
                            if response.status_code >= 500:
                                self.replicas.failed(base, f"HTTP {response.status_code}")
                            _raise_for(response, what)
                        async for chunk in response.aiter_bytes(1 << 16):
                            sha.update(chunk)
                            handle.write(chunk)
                except httpx.TransportError as exc:
                    self.replicas.failed(base, type(exc).__name__)
                    raise Unavailable(
                        f"{what}: download interrupted ({type(exc).__name__})"
                    ) from exc
            if sha.hexdigest() != digest:
                raise RuntimeFailure(
                    f"{what}: downloaded data has sha256 {sha.hexdigest()[:12]}, "
                    "not the expected digest; refusing it"
                )
            os.replace(tmp, dest)
        except BaseException:
            with contextlib.suppress(OSError):
                tmp.unlink()
            raise
        return dest

    async def ship_logs(self, lines: Sequence[Mapping[str, Any]]) -> None:
        if not lines:
            return
        await self._request(
            "POST", "/v1/agent/logs", "logs", token=self.node_token, json={"lines": list(lines)}
        )
