"""``logs``: the app's recent lines, or a live stream with ``-f``."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any

import typer

from shellwego.cli.client import sse_events
from shellwego.cli.context import AppOption, client, path_of, resolve_app
from shellwego.cli.output import line


def register(app: typer.Typer) -> None:
    app.command("logs")(logs)


def render(event: dict[str, Any]) -> str:
    """``<timestamp> app[<type>.<instance>]: <line>`` (``app[build]`` for build output).

    The timestamp is UTC to the second, e.g. ``2026-11-25T03:00:00Z``.
    """
    stamp = str(event.get("timestamp") or "")
    try:
        moment = datetime.fromisoformat(stamp.replace("Z", "+00:00"))
    except ValueError:
        pass
    else:
        if moment.tzinfo is not None:
            moment = moment.astimezone(UTC)
        stamp = moment.strftime("%Y-%m-%dT%H:%M:%SZ")
    source = str(event.get("source") or event.get("process_type") or "app")
    instance = event.get("instance_id")
    where = f"{source}.{instance}" if instance else source
    return f"{stamp} app[{where}]: {event.get('line', '')}"


def logs(
    app: AppOption = None,
    follow: Annotated[
        bool, typer.Option("--follow", "-f", "-t", help="Keep streaming (-t as in dokku).")
    ] = False,
    tail: Annotated[int, typer.Option("--tail", "-n", help="Lines of history.")] = 100,
    process: Annotated[
        str | None, typer.Option("--process", "-p", help="Only this process type (or build).")
    ] = None,
) -> None:
    """Print the app's logs (build and instances)."""
    target = resolve_app(app)
    params: dict[str, Any] = {"tail": tail, "follow": 1 if follow else 0}
    if process:
        params["process"] = process
    api = client()
    try:
        with api.stream(
            "GET",
            f"{path_of(target)}/logs",
            params=params,
            headers={"Accept": "text/event-stream"},
            read_timeout=None if follow else 60.0,
        ) as response:
            for event in sse_events(response):
                line(render(event))
    except KeyboardInterrupt:
        raise typer.Exit(0) from None
