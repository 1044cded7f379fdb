"""``config``: list, get, set and unset an app's config vars."""

from __future__ import annotations

import re
from typing import Annotated, Any

import typer

from shellwego.cli.context import (
    AppOption,
    JsonOption,
    NoWaitOption,
    client,
    path_of,
    resolve_app,
    wants_json,
)
from shellwego.cli.deploys import follow_release
from shellwego.cli.errors import usage
from shellwego.cli.output import emit_json, fail, line

RELEASE_HEADER = "ShellWeGo-Release"  # the version of the release a config change made

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
    """``K=V`` pairs; the value may be empty or contain ``=``. Never echoes a value: an
    argument without ``=`` is named by its position, as it may be a value typed alone."""
    found: dict[str, str] = {}
    for number, item in enumerate(items, start=1):
        name, sep, value = item.partition("=")
        if not sep:
            usage(f"argument {number} has no '=': expected {what}")
        if not NAME_PATTERN.match(name):
            usage(f"{name!r} is not a valid name (letters, digits and _, not first a digit)")
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


def _change(
    app: str | None, changes: dict[str, str | None], verb: tuple[str, str], wait: bool
) -> None:
    """PATCH the config and follow the release it made: ``Setting K and restarting
    APP... done, vN`` (``verb``: "Setting", "Set")."""
    target = resolve_app(app)
    api = client()
    answer = api.request_answer("PATCH", f"{path_of(target)}/config", json_body=changes)
    names = ", ".join(sorted(changes))
    version = answer.headers.get(RELEASE_HEADER)
    if version is None:  # nothing deployed yet: the first deploy takes the change
        line(f"{verb[1]} {names} on {target}.")
        return
    doing = f"{verb[0]} {names} and restarting {target}"
    follow_release(api, target, int(version), doing, wait=wait)


def set_config(
    assignments: Annotated[list[str], typer.Argument(metavar="KEY=VALUE...")],
    app: AppOption = None,
    no_wait: NoWaitOption = False,
) -> None:
    """Set config vars: a new release, rolled out (followed until it ends)."""
    changes: dict[str, str | None] = dict(parse_assignments(assignments))
    _change(app, changes, ("Setting", "Set"), not no_wait)


def unset_config(
    names: Annotated[list[str], typer.Argument(metavar="KEY...")],
    app: AppOption = None,
    no_wait: NoWaitOption = False,
) -> None:
    """Remove config vars: a new release, rolled out (followed until it ends)."""
    for name in names:
        if not NAME_PATTERN.match(name):
            usage(f"{name!r} is not a config var name")
    _change(app, dict.fromkeys(names), ("Unsetting", "Unset"), not no_wait)


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
