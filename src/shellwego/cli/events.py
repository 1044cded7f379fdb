"""``events``: what happened to an app (deploys, failures, placement problems)."""

from __future__ import annotations

from itertools import islice
from typing import Annotated, Any

import typer

from shellwego.cli.client import Client
from shellwego.cli.context import AppOption, JsonOption, client, path_of, resolve_app, wants_json
from shellwego.cli.output import emit_json, line, table, when

PAGE = 500  # the API's largest page


def register(app: typer.Typer) -> None:
    app.command("events")(events)


def latest(api: Client, path: str, params: dict[str, Any], count: int) -> list[dict[str, Any]]:
    """The newest ``count`` events, oldest of them first: read newest first, then reversed."""
    newest = api.walk(path, {**params, "order": "desc"}, page_size=min(count, PAGE))
    return list(islice(newest, count))[::-1]


def events(
    app: AppOption = None,
    deployment: Annotated[
        str | None, typer.Option("--deployment", metavar="ID", help="Only this rollout's events.")
    ] = None,
    limit: Annotated[
        int, typer.Option("--limit", "-n", min=1, help="How many of the latest events.")
    ] = 100,
    json_: JsonOption = False,
) -> None:
    """The app's latest events (deploys, failures, placement problems), newest last."""
    target = resolve_app(app)
    params = {"deployment": deployment} if deployment else {}
    found = latest(client(), f"{path_of(target)}/events", params, limit)
    if wants_json(json_):
        emit_json(found)
        return
    if not found:
        line(
            f"Deployment {deployment} of {target} has no events."
            if deployment
            else f"{target} has no events yet."
        )
        return
    table(
        ["TIME", "TYPE", "MESSAGE"],
        [[when(e.get("created_at")), e.get("type"), e.get("message")] for e in found],
    )
