"""``secrets``: write-only values; only ``reveal`` ever prints one."""

from __future__ import annotations

from typing import Annotated, Any
from urllib.parse import quote

import typer

from shellwego.cli.client import ApiError
from shellwego.cli.configs import parse_assignments
from shellwego.cli.context import AppOption, JsonOption, client, resolve_app, wants_json
from shellwego.cli.output import emit_json, line, table, when

HTTP_CONFLICT = 409


def register(app: typer.Typer) -> None:
    group = typer.Typer(help="App secrets (encrypted, write-only).", no_args_is_help=True)
    group.command("set")(set_secrets)
    group.command("list")(list_secrets)
    group.command("rotate")(rotate)
    group.command("rm")(remove)
    group.command("reveal")(reveal)
    app.add_typer(group, name="secrets")


def _path(name: str) -> str:
    return f"/v1/secrets/{quote(name, safe='')}"


def set_secrets(
    assignments: Annotated[list[str], typer.Argument(metavar="NAME=VALUE...")],
    app: AppOption = None,
) -> None:
    """Create secrets (an existing one gets a new version)."""
    values = parse_assignments(assignments, "NAME=VALUE")
    target = resolve_app(app)
    api = client()
    for name, value in values.items():
        try:
            made = api.send(
                "POST", "/v1/secrets", json_body={"name": name, "value": value, "app": target}
            )
        except ApiError as error:
            if error.status != HTTP_CONFLICT:
                api.failed(error)
            made = api.post(f"{_path(name)}/versions", {"value": value}, params={"app": target})
        line(f"Set secret {name} on {target} (version {made['current_version']}).")


def list_secrets(app: AppOption = None, json_: JsonOption = False) -> None:
    """The app's secrets: names and versions, never values."""
    target = resolve_app(app)
    found = client().items("/v1/secrets", params={"app": target})
    if wants_json(json_):
        emit_json(found)
        return
    if not found:
        line(f"{target} has no secrets.")
        return
    table(
        ["NAME", "VERSION", "UPDATED", "LAST USED"],
        [
            [
                s["name"],
                s["current_version"],
                when(s.get("updated_at")),
                when(s.get("last_used_at")),
            ]
            for s in found
        ],
    )


def rotate(
    assignment: Annotated[str, typer.Argument(metavar="NAME=VALUE")],
    app: AppOption = None,
) -> None:
    """Give a secret a new value (a new version; the app picks it up on its next release)."""
    ((name, value),) = parse_assignments([assignment], "NAME=VALUE").items()
    target = resolve_app(app)
    made = client().post(f"{_path(name)}/versions", {"value": value}, params={"app": target})
    line(f"Rotated secret {name} on {target} (version {made['current_version']}).")


def remove(
    name: Annotated[str, typer.Argument(metavar="NAME")],
    app: AppOption = None,
) -> None:
    """Delete a secret."""
    target = resolve_app(app)
    client().delete(_path(name), params={"app": target})
    line(f"Removed secret {name} from {target}.")


def reveal(
    name: Annotated[str, typer.Argument(metavar="NAME")],
    app: AppOption = None,
    version: Annotated[int | None, typer.Option(help="An older version.")] = None,
    json_: JsonOption = False,
) -> None:
    """Print a secret's value (admins and owners only)."""
    target = resolve_app(app)
    params: dict[str, Any] = {"app": target}
    if version is not None:
        params["version"] = version
    shown = client().post(f"{_path(name)}/reveal", params=params)
    if wants_json(json_):
        emit_json(shown)
        return
    line(str(shown["value"]))
