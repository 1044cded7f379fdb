"""HTTP client of the ShellWeGo API: bearer auth and problem+json errors turned into one line."""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterable, Iterator
from typing import Any, NoReturn

import httpx

from shellwego.cli.output import fail

DEFAULT_API_URL = "http://127.0.0.1:8400"


class ApiError(Exception):
    """An API answer with an error status; ``message`` is ``<title>: <detail>`` of the problem."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def problem_message(response: httpx.Response) -> str:
    """``<title>: <detail>`` of a problem+json answer (either alone when the other is missing)."""
    try:
        body = response.json()
    except ValueError:
        body = None
    if isinstance(body, dict):
        title = str(body.get("title") or "").strip()
        detail = str(body.get("detail") or "").strip()
        if title and detail and detail.lower() != title.lower():
            return f"{title}: {detail}"
        if title or detail:
            return title or detail
    return f"the API answered {response.status_code} {response.reason_phrase}".strip()


class Client:
    """One API endpoint and token; every failure ends the command with one line on stderr."""

    def __init__(self, base_url: str, token: str | None, *, timeout: float = 30.0) -> None:
        self.base_url = base_url.rstrip("/")
        self.token = token
        headers = {"User-Agent": "shellwego-cli", "Accept": "application/json"}
        if token:
            headers["Authorization"] = f"Bearer {token}"
        self._http = httpx.Client(base_url=self.base_url, headers=headers, timeout=timeout)

    def close(self) -> None:
        self._http.close()

    def unreachable(self, exc: httpx.TransportError) -> NoReturn:
        if isinstance(exc, httpx.TimeoutException):
            fail(f"the ShellWeGo API at {self.base_url} did not answer in time")
        fail(
            f"cannot reach the ShellWeGo API at {self.base_url}. Is it running? "
            "Start one with: shellwego up"
        )

    def failed(self, error: ApiError) -> NoReturn:
        if error.status == 401 and "shellwego login" not in error.message:
            fail(f"{error.message} (run: shellwego login)")
        fail(error.message)

    def answer(
        self,
        method: str,
        path: str,
        *,
        json_body: Any = None,
        params: dict[str, Any] | None = None,
        timeout: float | None = None,
    ) -> httpx.Response:
        """The whole answer (headers too), or raise :class:`ApiError` on an error status."""
        kwargs: dict[str, Any] = {"params": params}
        if json_body is not None:
            kwargs["json"] = json_body
        if timeout is not None:
            kwargs["timeout"] = timeout
        try:
            response = self._http.request(method, path, **kwargs)
        except httpx.TransportError as exc:
            self.unreachable(exc)
        if response.status_code >= 400:
            raise ApiError(response.status_code, problem_message(response))
        return response

    def send(self, method: str, path: str, **kwargs: Any) -> Any:
        """The decoded answer, or raise :class:`ApiError` (for callers that handle a status);
        ``kwargs`` as for :meth:`answer`."""
        return decoded(self.answer(method, path, **kwargs))

    def request(self, method: str, path: str, **kwargs: Any) -> Any:
        """Like :meth:`send`, but an error status ends the command."""
        try:
            return self.send(method, path, **kwargs)
        except ApiError as error:
            self.failed(error)

    def request_answer(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        """Like :meth:`answer`, but an error status ends the command."""
        try:
            return self.answer(method, path, **kwargs)
        except ApiError as error:
            self.failed(error)


    def get(self, path: str, **kwargs: Any) -> Any:
        return self.request("GET", path, **kwargs)

    def post(self, path: str, body: Any = None, **kwargs: Any) -> Any:
        return self.request("POST", path, json_body=body if body is not None else {}, **kwargs)

    def patch(self, path: str, body: Any, **kwargs: Any) -> Any:
        return self.request("PATCH", path, json_body=body, **kwargs)

    def delete(self, path: str, **kwargs: Any) -> Any:
        return self.request("DELETE", path, **kwargs)

    def items(self, path: str, params: dict[str, Any] | None = None) -> list[Any]:
        """Every item of a paged list (``{"items", "next_cursor"}``)."""
        return list(self.walk(path, params))

    def walk(
        self, path: str, params: dict[str, Any] | None = None, *, page_size: int = 100
    ) -> Iterator[Any]:
        """The items of a paged list in the API's order, following ``next_cursor``."""
        query = {"limit": page_size, **(params or {})}
        while True:
            page = self.get(path, params=query)
            yield from page.get("items", [])
            cursor = page.get("next_cursor")
            if not cursor:
                return
            query["cursor"] = cursor

    @contextlib.contextmanager
    def stream(
        self,
        method: str,
        path: str,
        *,
        content: Iterable[bytes] | None = None,
        params: dict[str, Any] | None = None,
        headers: dict[str, str] | None = None,
        read_timeout: float | None = None,
    ) -> Iterator[httpx.Response]:
        """A streamed answer; error statuses end the command before the body is used."""
        timeout = httpx.Timeout(30.0, read=read_timeout)
        request = self._http.build_request(
            method, path, content=content, params=params, headers=headers, timeout=timeout
        )
        try:
            response = self._http.send(request, stream=True)
        except httpx.TransportError as exc:
            self.unreachable(exc)
        try:
            if response.status_code >= 400:
                response.read()
                self.failed(ApiError(response.status_code, problem_message(response)))
            yield response
        except httpx.TransportError as exc:
            self.unreachable(exc)
        finally:
            response.close()


def decoded(response: httpx.Response) -> Any:
    """An answer's JSON (its text when it is not JSON; None when empty)."""
    if response.status_code == 204 or not response.content:
        return None
    try:
        return response.json()
    except ValueError:
        return response.text


def json_lines(response: httpx.Response) -> Iterator[dict[str, Any]]:
    """Objects of an NDJSON answer as they arrive."""
    for raw in response.iter_lines():
        if raw.strip():
            event = json.loads(raw)
            if isinstance(event, dict):
                yield event


def sse_events(response: httpx.Response) -> Iterator[dict[str, Any]]:
    """The JSON ``data`` of each server-sent event as it arrives."""
    data: list[str] = []
    for raw in response.iter_lines():
        if raw == "":
            if data:
                event = json.loads("\n".join(data))
                data = []
                if isinstance(event, dict):
                    yield event
            continue
        if raw.startswith("data:"):
            data.append(raw[5:].removeprefix(" "))
    if data:
        event = json.loads("\n".join(data))
        if isinstance(event, dict):
            yield event
