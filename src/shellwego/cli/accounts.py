"""``login``, ``logout`` and ``whoami``."""

from __future__ import annotations

import sys
from dataclasses import replace
from typing import Annotated

import typer

from shellwego.cli import config
from shellwego.cli.client import ApiError
from shellwego.cli.context import (
    JsonOption,
    api_url,
    client,
    globals_,
    set_globals,
    wants_json,
)
from shellwego.cli.errors import usage
from shellwego.cli.output import emit_json, fail, line


def register(app: typer.Typer) -> None:
    app.command("login")(login)
    app.command("logout")(logout)
    app.command("whoami")(whoami)


def login(
    email: Annotated[str | None, typer.Option("--email", "-e", help="Account email.")] = None,
    password: Annotated[
        str | None, typer.Option("--password", "-p", help="Asked for when not given.")
    ] = None,
    organization: Annotated[
        str | None, typer.Option("--org", help="Organization slug (when you are in several).")
    ] = None,
    url: Annotated[
        str | None,
        typer.Option("--api-url", help="The API to log in to (default: saved login or local)."),
    ] = None,
) -> None:
    """Log in with email and password; the token is saved for later commands."""
    if url:
        set_globals(replace(globals_(), api_url=url))
    if not email:
        email = typer.prompt("Email")
    if not password:
        password = _password()
    body: dict[str, str] = {"email": email, "password": password}
    if organization:
        body["organization"] = organization
    api = client(anonymous=True)
    try:
        answer = api.send("POST", "/v1/auth/token", json_body=body)
    except ApiError as error:
        fail(error.message)  # no "run: shellwego login" hint: this is the login
    path = config.save_login(api.base_url, str(answer["token"]))
    line(f"Logged in as {email} at {api.base_url}.")
    line(f"Token saved in {path}")


def _password() -> str:
    """Asked for on a terminal; otherwise the first line of standard input (as in
    ``echo "$PW" | shellwego login -e me@example.com``)."""
    if sys.stdin.isatty():
        return str(typer.prompt("Password", hide_input=True))
    typer.echo("Reading the password from standard input (no terminal to ask on).", err=True)
    password = sys.stdin.readline().rstrip("\r\n")
    if not password:
        usage("no password given: pass --password, or the password on standard input")
    return password


def logout() -> None:
    """Revoke the saved token and forget it."""
    token = globals_().token or config.load().get("token")
    if not token:
        line("Not logged in.")
        return
    api = client()
    try:
        api.send("DELETE", "/v1/auth/token")
        revoked = True
    except ApiError as error:
        revoked = error.status == 401  # already invalid on the server
    config.clear_token()
    line("Logged out." if revoked else "Logged out here (the API did not revoke the token).")


def whoami(json_: JsonOption = False) -> None:
    """The account the saved token belongs to."""
    if not (globals_().token or config.load().get("token")):
        fail(f"not logged in to {api_url()} (run: shellwego login)")
    user = client().get("/v1/user")
    if wants_json(json_):
        emit_json(user)
        return
    line(str(user["email"]))
