"""Route tables to and from JSON, so the edge restarts with what it last served."""

from __future__ import annotations

import json
from dataclasses import asdict

from .routes import AppRoute, RouteTable, Upstream


def dump_table(table: RouteTable) -> str:
    return json.dumps(asdict(table), indent=1, sort_keys=True)


def load_table(text: str) -> RouteTable:
    raw = json.loads(text)
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
