"""Route table → Caddy's JSON config. Pure: the same table always gives the same config."""

from __future__ import annotations

import html
from pathlib import Path
from typing import Any

from shellwego.models.hostnames import is_local_name

from .routes import AppRoute, EdgeSettings, RouteTable

LETSENCRYPT_STAGING = "https://acme-staging-v02.api.letsencrypt.org/directory"
# how long a request may wait for a reachable instance before it gets the 503 page: longer
# than a dial timeout plus a passive-failure period, so one retry always fits in it
RETRY_FOR = "2s"
DIAL_TIMEOUT = "1s"
FAIL_DURATION = "1s"  # an instance that refused a connection is skipped this long
RETRY_AFTER = {"Retry-After": ["5"]}
IDLE_CONNS_PER_INSTANCE = 64  # Caddy's default is 32


def storage_root(settings: EdgeSettings) -> Path:
    return settings.data_dir / "storage"


def internal_root_cert(settings: EdgeSettings) -> Path:
    """The internal CA's root certificate (clients trust it to verify local HTTPS)."""
    return storage_root(settings) / "pki" / "authorities" / "local" / "root.crt"


def access_log_path(settings: EdgeSettings) -> Path:
    return settings.data_dir / "access.log"


def _page(
    status: int | str, title: str, message: str, headers: dict[str, list[str]] | None = None
) -> dict[str, Any]:
    body = (
        "<!doctype html><html><head><meta charset='utf-8'>"
        f"<title>{html.escape(title)}</title></head>"
        f"<body><h1>{html.escape(title)}</h1><p>{html.escape(message)}</p>"
        "<hr><small>ShellWeGo</small></body></html>\n"
    )
    return {
        "handler": "static_response",
        "status_code": status,
        "headers": {
            "Content-Type": ["text/html; charset=utf-8"],
            "Cache-Control": ["no-store"],
            **(headers or {}),
        },
        "body": body,
    }


def _proxy(route: AppRoute) -> dict[str, Any]:
    # shorter than RETRY_FOR: an app whose only instance blipped is tried again within the
    # same request
    health: dict[str, Any] = {"passive": {"fail_duration": FAIL_DURATION, "max_fails": 1}}
    if route.health_path:
        health["active"] = {
            "uri": route.health_path,
            "interval": "2s",
            "timeout": "1s",
            "passes": 1,
            "fails": 2,
        }
    return {
        "handler": "reverse_proxy",
        "upstreams": [{"dial": u.address} for u in route.upstreams],
        "load_balancing": {
            "selection_policy": {"policy": "round_robin"},
            "try_duration": RETRY_FOR,
            "try_interval": "50ms",
        },
        "health_checks": health,
        "transport": {
            "protocol": "http",
            "dial_timeout": DIAL_TIMEOUT,
            # kept-alive connections to the instances: enough for a busy app's concurrency,
            # so a burst does not open (and close) fresh connections per request
            "keep_alive": {"max_idle_conns_per_host": IDLE_CONNS_PER_INSTANCE},
        },
    }


def _app_handler(route: AppRoute) -> dict[str, Any]:
    if route.upstreams:
        return _proxy(route)
    return _page(
        503,
        "Service unavailable",
        f"{route.app_name} has no running instances right now.",
        RETRY_AFTER,
    )


def _errors(table: RouteTable) -> dict[str, Any]:
    """What a request gets when the proxy fails: every instance of the app is unreachable
    (refused, timed out, gone) even after retrying for RETRY_FOR."""
    routes: list[Any] = []
    for route in table.routes:
        if not route.hostnames or not route.upstreams:
            continue
        routes.append(
            {
                "match": [
                    {
                        "host": sorted({h.lower() for h in route.hostnames}),
                        "expression": "{http.error.status_code} in [502, 503, 504]",
                    }
                ],
                "handle": [
                    _page(
                        503,
                        "Service unavailable",
                        f"{route.app_name} is not answering right now; try again shortly.",
                        RETRY_AFTER,
                    )
                ],
                "terminal": True,
            }
        )
    routes.append(
        {
            "handle": [
                _page(
                    "{http.error.status_code}", "Error", "The edge could not complete this request."
                )
            ],
            "terminal": True,
        }
    )
    return {"routes": routes}


def _routes(table: RouteTable, settings: EdgeSettings, *, plain_http: bool) -> list[Any]:
    out: list[Any] = []
    for route in table.routes:
        if not route.hostnames:
            continue
        if plain_http and route.redirect_https:
            port = "" if settings.https_port == 443 else f":{settings.https_port}"
            handler: dict[str, Any] = {
                "handler": "static_response",
                "status_code": 308,
                "headers": {
                    "Location": [f"https://{{http.request.host}}{port}{{http.request.uri}}"]
                },
            }
        else:
            handler = _app_handler(route)
        out.append(
            {
                "match": [{"host": sorted({h.lower() for h in route.hostnames})}],
                "handle": [handler],
                "terminal": True,
            }
        )
    out.append(
        {"handle": [_page(404, "Not found", "No app is served at this address.")], "terminal": True}
    )
    return out


def _tls(table: RouteTable, settings: EdgeSettings) -> dict[str, Any]:
    names = sorted({h.lower() for r in table.routes for h in r.hostnames})
    local = [n for n in names if is_local_name(n)]
    public = [n for n in names if not is_local_name(n)]
    policies: list[dict[str, Any]] = []
    if local:
        policies.append({"subjects": local, "issuers": [{"module": "internal"}]})
    if public:
        acme: dict[str, Any] = {"module": "acme"}
        if settings.acme_email:
            acme["email"] = settings.acme_email
        if settings.acme_ca:
            acme["ca"] = settings.acme_ca
        elif settings.acme_staging:
            acme["ca"] = LETSENCRYPT_STAGING
        # challenges are answered by our own listeners: Caddy never binds 80/443 itself
        acme["challenges"] = {
            "http": {"alternate_port": settings.http_port},
            "tls-alpn": {"alternate_port": settings.https_port},
        }
        policies.append({"subjects": public, "issuers": [acme], "on_demand": True})
    automation: dict[str, Any] = {"policies": policies}
    if public:
        automation["on_demand"] = {"permission": {"module": "http", "endpoint": settings.ask_url}}
    return {"automation": automation}


def render(table: RouteTable, settings: EdgeSettings) -> dict[str, Any]:
    """The complete Caddy config for ``table``."""
    host = settings.bind_host
    http_listen, https_listen = settings.listen or (
        f"{host}:{settings.http_port}",
        f"{host}:{settings.https_port}",
    )
    access = {"default_logger_name": "access"}
    errors = _errors(table)  # the same on both servers
    return {
        # the socket file is created 0600: only the supervisor's user may program the edge
        "admin": {"listen": f"unix/{settings.admin_socket}|0600", "config": {"persist": False}},
        "storage": {"module": "file_system", "root": str(storage_root(settings))},
        "logging": {
            "logs": {
                "default": {"level": "WARN", "exclude": ["http.log.access.access"]},
                "access": {
                    "level": "INFO",
                    "include": ["http.log.access.access"],
                    "writer": {
                        "output": "file",
                        "filename": str(access_log_path(settings)),
                        "roll_size_mb": 20,
                        "roll_keep": 2,
                    },
                    "encoder": {"format": "json"},
                },
            }
        },
        "apps": {
            "http": {
                "http_port": settings.http_port,
                "https_port": settings.https_port,
                "grace_period": "10s",
                "servers": {
                    "https": {
                        "listen": [https_listen],
                        "routes": _routes(table, settings, plain_http=False),
                        "errors": errors,
                        "automatic_https": {"disable_redirects": True},
                        "protocols": ["h1", "h2"],
                        "logs": access,
                    },
                    "http": {
                        "listen": [http_listen],
                        "routes": _routes(table, settings, plain_http=True),
                        "errors": errors,
                        "automatic_https": {"disable": True},
                        # plain HTTP/1.1 only: no h2c upgrade check on every request
                        # (instances are reached over HTTP/1.1 anyway)
                        "protocols": ["h1"],
                        "logs": access,
                    },
                },
            },
            "tls": _tls(table, settings),
            "pki": {"certificate_authorities": {"local": {"install_trust": False}}},
        },
    }
