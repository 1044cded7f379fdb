"""Route tables to and from JSON: the edge restarts with what it last served, and edge
nodes receive the table from the control plane in this form."""

from __future__ import annotations

import json
from dataclasses import asdict
from typing import Any

from .routes import AppRoute, RouteTable, Upstream


def table_to_dict(table: RouteTable) -> dict[str, Any]:
    return asdict(table)


def table_from_dict(raw: Any) -> RouteTable:
    """The table from its JSON form; KeyError, TypeError or ValueError when malformed."""
    return RouteTable(
        routes=[
            AppRoute(
                app_id=str(r["app_id"]),
                app_name=str(r["app_name"]),
                hostnames=[str(h) for h in r["hostnames"]],
                upstreams=[Upstream(address=str(u["address"])) for u in r["upstreams"]],
                health_path=r.get("health_path"),
                redirect_https=bool(r.get("redirect_https", False)),
            )
            for r in raw["routes"]
        ]
    )


def dump_table(table: RouteTable) -> str:
    return json.dumps(table_to_dict(table), indent=1, sort_keys=True)


def load_table(text: str) -> RouteTable:
    return table_from_dict(json.loads(text))
