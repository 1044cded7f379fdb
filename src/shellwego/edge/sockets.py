"""The edge's listening sockets, opened by the supervisor and handed to Caddy.

Caddy binds a fresh SO_REUSEPORT socket at every config reload and closes the old one;
connections the kernel had queued on the old socket are then reset. With one socket that
the supervisor opens and passes to Caddy (``fd/N`` listen addresses), every reload keeps
accepting from the same queue, and a Caddy that is being restarted finds the connections
that arrived meanwhile waiting instead of refused.
"""

from __future__ import annotations

import socket
from typing import Any

from shellwego.errors import EdgeError

BACKLOG = 1024


def open_listener(host: str, port: int) -> socket.socket:
    """A TCP socket listening on ``host:port`` ("" = every interface, IPv6 too if present)."""
    try:
        if host == "" and socket.has_dualstack_ipv6():
            return socket.create_server(
                ("", port), family=socket.AF_INET6, dualstack_ipv6=True, backlog=BACKLOG
            )
        return socket.create_server((host, port), backlog=BACKLOG)
    except OSError as exc:
        where = f"{host or '*'}:{port}"
        raise EdgeError(f"the edge cannot listen on {where}: {exc.strerror or exc}") from exc


def fd_listen(sock: socket.socket) -> str:
    return f"fd/{sock.fileno()}"


def listen_of(config: Any) -> tuple[str, str] | None:
    """The (http, https) listen addresses of a rendered config, if they are ``fd/N``."""
    try:
        servers = config["apps"]["http"]["servers"]
        found = (str(servers["http"]["listen"][0]), str(servers["https"]["listen"][0]))
    except (KeyError, IndexError, TypeError):
        return None
    return found if all(a.startswith("fd/") for a in found) else None
