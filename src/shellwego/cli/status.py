"""``status`` (the platform at a glance) and ``top`` (live per-app usage)."""

from __future__ import annotations

import sys
import time
from typing import Annotated, Any

import typer
from rich import box
from rich.live import Live
from rich.table import Table

from shellwego.cli.client import Client
from shellwego.cli.context import JsonOption, client, path_of, wants_json
from shellwego.cli.output import console, emit_json, pairs, show, size

REFRESH_SECONDS = 2.0


def register(app: typer.Typer) -> None:
    app.command("status")(status)
    app.command("top")(top)


def _counts(counts: dict[str, int]) -> str:
    return ", ".join(f"{n} {state}" for state, n in sorted(counts.items())) or "none"


def status(json_: JsonOption = False) -> None:
    """The platform: version, database, nodes, apps, instances."""
    found = client().get("/v1/status")
    if wants_json(json_):
        emit_json(found)
        return
    pairs(
        "ShellWeGo " + str(found.get("version", "")),
        [
            ("API", found.get("api_url")),
            ("Database", found.get("backend")),
            ("Apps URL", found.get("apps_url_template")),
            ("Nodes", _counts(found.get("nodes") or {})),
            ("Apps", found.get("apps")),
            ("Instances", _counts(found.get("instances") or {})),
        ],
    )


def _snapshot(api: Client) -> list[dict[str, Any]]:
    return [api.get(f"{path_of(a['id'])}/metrics") for a in api.items("/v1/apps")]


def _render(rows: list[dict[str, Any]]) -> Table:
    grid = Table(box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False, header_style="bold")
    for name in ("APP", "INSTANCES", "CPU", "MEMORY", "REQUESTS", "5XX", "P50", "P99"):
        grid.add_column(name, justify="left" if name == "APP" else "right")
    for m in sorted(rows, key=lambda r: str(r.get("app"))):
        p50, p99 = m.get("latency_p50_ms"), m.get("latency_p99_ms")
        grid.add_row(
            str(m.get("app")),
            str(m.get("instances", 0)),
            f"{float(m.get('cpu_millis_used') or 0) / 1000:.2f}",
            size(int(m.get("memory_bytes") or 0)),
            str(m.get("requests", 0)),
            str(m.get("status_5xx", 0)),
            "-" if p50 is None else f"{p50:g} ms",
            "-" if p99 is None else f"{p99:g} ms",
        )
    return grid


def top(
    once: Annotated[bool, typer.Option("--once", help="Print one table and exit.")] = False,
    json_: JsonOption = False,
) -> None:
    """Live CPU, memory and requests per app (refreshes every 2 s; Ctrl-C to quit).
    Not on a terminal (piped), or with --once: one plain table."""
    api = client()
    if wants_json(json_):
        emit_json(_snapshot(api))
        return
    if once or not sys.stdout.isatty():
        show(_render(_snapshot(api)))
        return
    out = console()
    try:
        with Live(_render(_snapshot(api)), console=out, auto_refresh=False) as live:
            while True:
                time.sleep(REFRESH_SECONDS)
                live.update(_render(_snapshot(api)), refresh=True)
    except KeyboardInterrupt:
        raise typer.Exit(0) from None
