"""``config``: list, get, set and unset an app's config vars."""

from __future__ import annotations

import re
from typing import Annotated, Any

import typer

from shellwego.cli.context import AppOption, JsonOption, client, path_of, resolve_app, wants_json
from shellwego.cli.output import emit_json, fail, line

NAME_PATTERN = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def register(app: typer.Typer) -> None:
    group = typer.Typer(
        help="Config vars (each change makes a new release).", invoke_without_command=True
    )
    group.callback()(list_config)
    group.command("set")(set_config)
    group.command("unset")(unset_config)
    group.command("get")(get_config)
    app.add_typer(group, name="config")
    # the topic:command spellings of Heroku, Dokku and Piku
    app.command("config:set", hidden=True)(set_config)
    app.command("config:unset", hidden=True)(unset_config)
    app.command("config:get", hidden=True)(get_config)


def parse_assignments(items: list[str], what: str = "KEY=VALUE") -> dict[str, str]:
    """``K=V`` pairs; the value may be empty or contain ``=``. Never echoes a value."""
    found: dict[str, str] = {}
    for item in items:
        name, sep, value = item.partition("=")
        if not sep:
            fail(f"expected {what}: an argument has no '='")
        if not NAME_PATTERN.match(name):
            fail(f"{name!r} is not a valid name (letters, digits and _, not first a digit)")
        found[name] = value
    return found


def list_config(ctx: typer.Context, app: AppOption = None, json_: JsonOption = False) -> None:
    """Without a subcommand: list the config vars."""
    if ctx.invoked_subcommand is not None:
        return
    target = resolve_app(app)
    values: dict[str, Any] = client().get(f"{path_of(target)}/config")
    if wants_json(json_):
        emit_json(values)
        return
    if not values:
        line(f"{target} has no config vars.")
        return
    for name in sorted(values):
        line(f"{name}={values[name]}")


def set_config(
    assignments: Annotated[list[str], typer.Argument(metavar="KEY=VALUE...")],
    app: AppOption = None,
) -> None:
    """Set config vars."""
    changes = parse_assignments(assignments)
    target = resolve_app(app)
    client().patch(f"{path_of(target)}/config", changes)
    line(f"Set {', '.join(sorted(changes))} on {target}.")


def unset_config(
    names: Annotated[list[str], typer.Argument(metavar="KEY...")],
    app: AppOption = None,
) -> None:
    """Remove config vars."""
    for name in names:
        if not NAME_PATTERN.match(name):
            fail(f"{name!r} is not a config var name")
    target = resolve_app(app)
    client().patch(f"{path_of(target)}/config", dict.fromkeys(names))
    line(f"Unset {', '.join(sorted(set(names)))} on {target}.")


def get_config(
    name: Annotated[str, typer.Argument(metavar="KEY")],
    app: AppOption = None,
) -> None:
    """Print one config var's value."""
    target = resolve_app(app)
    values: dict[str, Any] = client().get(f"{path_of(target)}/config")
    if name not in values:
        fail(f"{name} is not set on {target}")
    line(str(values[name]))
