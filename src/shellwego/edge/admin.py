"""Caddy's admin API over its unix socket."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx

from shellwego.errors import EdgeError


class CaddyAdmin:
    def __init__(self, socket_path: Path, timeout: float = 10.0) -> None:
        self.socket_path = socket_path
        self.timeout = timeout

    def _client(self) -> httpx.AsyncClient:
        transport = httpx.AsyncHTTPTransport(uds=str(self.socket_path))
        # the admin endpoint checks the Host header; a unix socket has no host
        return httpx.AsyncClient(
            transport=transport,
            base_url="http://localhost",
            timeout=self.timeout,
            headers={"Host": ""},
        )

    async def load(self, config: dict[str, Any]) -> None:
        """Replace the running config; Caddy swaps it without dropping connections."""
        async with self._client() as client:
            try:
                r = await client.post(
                    "/load",
                    content=json.dumps(config),
                    headers={"Content-Type": "application/json"},
                )
            except httpx.HTTPError as exc:
                raise EdgeError(f"cannot reach Caddy's admin API: {exc}") from exc
        if r.status_code != 200:
            raise EdgeError(f"Caddy refused the config: {_message(r)}")

    async def config(self) -> Any:
        async with self._client() as client:
            try:
                r = await client.get("/config/")
            except httpx.HTTPError as exc:
                raise EdgeError(f"cannot reach Caddy's admin API: {exc}") from exc
        if r.status_code != 200:
            raise EdgeError(f"Caddy's admin API answered {r.status_code}: {_message(r)}")
        return r.json()

    async def ping(self) -> bool:
        try:
            await self.config()
        except EdgeError:
            return False
        return True


def _message(r: httpx.Response) -> str:
    try:
        body = r.json()
    except ValueError:
        return r.text.strip()[:500]
    if isinstance(body, dict) and "error" in body:
        return str(body["error"])[:500]
    return r.text.strip()[:500]
