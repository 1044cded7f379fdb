"""What the edge serves: every app's hostnames and the healthy instances behind them."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path


@dataclass(frozen=True, slots=True)
class Upstream:
    address: str  # "host:port"


@dataclass(frozen=True, slots=True)
class AppRoute:
    app_id: str
    app_name: str
    hostnames: list[str]
    upstreams: list[Upstream]
    health_path: str | None = None
    redirect_https: bool = False


@dataclass(frozen=True, slots=True)
class RouteTable:
    routes: list[AppRoute] = field(default_factory=list)

    def app_ids_by_host(self) -> dict[str, str]:
        """hostname (lower case) → app id."""
        return {h.lower(): r.app_id for r in self.routes for h in r.hostnames}


@dataclass(frozen=True, slots=True)
class EdgeSettings:
    http_port: int
    https_port: int
    admin_socket: Path
    base_domain: str
    acme_email: str | None
    acme_ca: str | None
    acme_staging: bool
    ask_url: str
    data_dir: Path
    caddy_binary: str | None = None
    bind_host: str = ""  # "" = every interface
    # Caddy's listen addresses (http, https) when they differ from bind_host:port, e.g.
    # ("fd/7", "fd/8") for sockets the supervisor opened and passed to Caddy
    listen: tuple[str, str] | None = None
