"""The ``shellwego`` command: root options and every command group."""

from __future__ import annotations

from typing import Annotated

import typer

from shellwego.cli import (
    accounts,
    apps,
    configs,
    deploys,
    domains,
    events,
    keys,
    logs,
    nodes,
    platform,
    processes,
    secrets,
    status,
    tokens,
)
from shellwego.cli.context import Globals, set_globals
from shellwego.cli.errors import RootGroup


def root(
    json_: Annotated[
        bool, typer.Option("--json", help="Print JSON instead of tables (every command).")
    ] = False,
    api_url: Annotated[
        str | None,
        typer.Option(
            "--api-url", envvar="SHELLWEGO_API_URL", help="API address (default: saved login)."
        ),
    ] = None,
    token: Annotated[
        str | None,
        typer.Option("--token", envvar="SHELLWEGO_TOKEN", help="API token (default: saved login)."),
    ] = None,
    app_name: Annotated[
        str | None,
        typer.Option("--app", "-a", envvar="SHELLWEGO_APP", help="App for app commands."),
    ] = None,
) -> None:
    """ShellWeGo: deploy, scale, configure and watch your apps."""
    set_globals(Globals(api_url=api_url, token=token, app=app_name, json=json_))


def build() -> typer.Typer:
    """The CLI with every command attached."""
    app = typer.Typer(
        name="shellwego",
        cls=RootGroup,
        help="ShellWeGo: deploy, scale, configure and watch your apps.",
        no_args_is_help=True,
        pretty_exceptions_enable=False,
    )
    app.callback()(root)
    for module in (
        accounts,
        tokens,
        apps,
        deploys,
        processes,
        logs,
        events,
        configs,
        secrets,
        domains,
        nodes,
        status,
    ):
        module.register(app)
    platform.register(app)
    keys.register(app)
    return app


app = build()


def main() -> None:
    """The console entry point: usage errors are one line (see :mod:`shellwego.cli.errors`)."""
    app()


if __name__ == "__main__":
    main()
