"""``tokens create|list|revoke``: personal API tokens."""

from __future__ import annotations

import socket
from typing import Annotated

import typer

from shellwego.cli.context import JsonOption, client, wants_json
from shellwego.cli.output import emit_json, line, table, when

MAX_NAME = 100  # what the API takes


def register(app: typer.Typer) -> None:
    group = typer.Typer(help="Personal API tokens (for CI and scripts).", no_args_is_help=True)
    group.command("create")(create)
    group.command("list")(list_tokens)
    group.command("revoke")(revoke)
    app.add_typer(group, name="tokens")


def default_name() -> str:
    """What a token made without a name is called: where it was made."""
    return f"cli@{socket.gethostname() or 'localhost'}"[:MAX_NAME]


def create(
    name: Annotated[
        str | None,
        typer.Argument(
            metavar="[NAME]", help="A name to recognise the token by (default: cli@HOSTNAME)."
        ),
    ] = None,
    json_: JsonOption = False,
) -> None:
    """Make a new token; it is shown once."""
    made = client().post("/v1/user/tokens", {"name": name or default_name()})
    if wants_json(json_):
        emit_json(made)
        return
    line(f"Created token {made['name']} ({made['id']}). It is shown only once:")
    line(str(made["token"]))


def list_tokens(json_: JsonOption = False) -> None:
    """Your tokens (never their secret part)."""
    found = client().items("/v1/user/tokens")
    if wants_json(json_):
        emit_json(found)
        return
    if not found:
        line("No tokens.")
        return
    table(
        ["ID", "NAME", "PREFIX", "CREATED", "LAST USED", "EXPIRES", "REVOKED"],
        [
            [
                t["id"],
                t["name"],
                t.get("prefix"),
                when(t.get("created_at")),
                when(t.get("last_used_at")),
                when(t.get("expires_at")),
                when(t.get("revoked_at")),
            ]
            for t in found
        ],
    )


def revoke(token_id: Annotated[str, typer.Argument(metavar="ID")]) -> None:
    """Revoke a token: it stops working at once."""
    client().delete(f"/v1/user/tokens/{token_id}")
    line(f"Revoked token {token_id}.")
