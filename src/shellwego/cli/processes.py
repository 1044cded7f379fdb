"""``ps``, ``scale``, ``restart``/``stop``/``start`` and one-off ``run``."""

from __future__ import annotations

import re
import sys
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
from shellwego.cli.output import emit_json, line, table

SCALE_PATTERN = re.compile(r"^([a-zA-Z][a-zA-Z0-9_-]{0,29})=(\d{1,4})(?::([a-zA-Z0-9_-]+))?$")


def register(app: typer.Typer) -> None:
    app.command("ps")(ps)
    app.command("scale")(scale)
    app.command("restart")(restart)
    app.command("stop")(stop)
    app.command("start")(start)
    # the topic:command spellings of Heroku, Dokku and Piku
    app.command("ps:scale", hidden=True)(scale)
    app.command("ps:restart", hidden=True)(restart)
    app.command("ps:stop", hidden=True)(stop)
    app.command("ps:start", hidden=True)(start)
    app.command(
        "run", context_settings={"allow_interspersed_args": False, "ignore_unknown_options": True}
    )(run)


def ps(app: AppOption = None, json_: JsonOption = False) -> None:
    """The app's instances: state, health, node, address, release."""
    target = resolve_app(app)
    found = client().get(f"{path_of(target)}/instances")
    if wants_json(json_):
        emit_json(found)
        return
    if not found:
        line(f"{target} has no instances.")
        return
    table(
        ["ID", "TYPE", "STATE", "HEALTHY", "RESTARTS", "NODE", "ADDRESS", "RELEASE"],
        [
            [
                i["id"],
                i["process_type"],
                i["state"] + (" (draining)" if i.get("draining") else ""),
                i["healthy"],
                i["restarts"],
                i.get("node_hostname") or i.get("node_id"),
                i.get("address"),  # its own address, or its node's: the port it listens on
                f"v{i['release_version']}",
            ]
            for i in found
        ],
    )
    for i in found:
        if i.get("last_error"):
            line(f"{i['id']}: {i['last_error']}")


def parse_formation(items: list[str]) -> dict[str, Any]:
    """``web=3 worker=2:medium`` → ``{"web": 3, "worker": {"count": 2, "size": "medium"}}``."""
    body: dict[str, Any] = {}
    for item in items:
        match = SCALE_PATTERN.match(item)
        if match is None:
            usage(f"{item!r} is not TYPE=COUNT[:SIZE] (e.g. web=3 or worker=2:medium)")
        kind, count, size = match.group(1), int(match.group(2)), match.group(3)
        body[kind] = {"count": count, "size": size} if size else count
    return body


def scale(
    formation: Annotated[list[str], typer.Argument(metavar="TYPE=COUNT[:SIZE]...")],
    app: AppOption = None,
    json_: JsonOption = False,
) -> None:
    """Set how many instances of each process type run (and their size)."""
    body = parse_formation(formation)
    target = resolve_app(app)
    answer = client().patch(f"{path_of(target)}/formation", body)
    if wants_json(json_):
        emit_json(answer)
        return
    shown = ", ".join(
        f"{kind}={spec['count']}:{spec['size']}" for kind, spec in sorted(answer.items())
    )
    line(f"Scaled {target}: {shown}")


def _action(app: str | None, action: str, done: str) -> None:
    target = resolve_app(app)
    answer = client().post(f"{path_of(target)}/actions/{action}")
    line(f"{done} {target} ({answer.get('status', 'accepted')}).")


def restart(app: AppOption = None, no_wait: NoWaitOption = False) -> None:
    """Replace every instance with a fresh one (rolling); followed until it ends."""
    target = resolve_app(app)
    api = client()
    answer = api.post(f"{path_of(target)}/actions/restart")
    follow_release(api, target, int(answer["release"]), f"Restarting {target}", wait=not no_wait)


def stop(app: AppOption = None) -> None:
    """Stop every instance (the formation is kept for start)."""
    _action(app, "stop", "Stopping")


def start(app: AppOption = None) -> None:
    """Start a stopped app again."""
    _action(app, "start", "Starting")


def run(
    command: Annotated[list[str], typer.Argument(metavar="-- COMMAND...")],
    app: AppOption = None,
    timeout: Annotated[float, typer.Option(help="Seconds before the command is stopped.")] = 60.0,
) -> None:
    """Run a one-off command in the current release's environment; exits with its code."""
    target = resolve_app(app)
    answer = client().post(
        f"{path_of(target)}/run",
        {"command": command, "timeout": timeout},
        timeout=timeout + 30.0,
    )
    output = str(answer.get("output", ""))
    sys.stdout.write(output)
    if output and not output.endswith("\n"):
        sys.stdout.write("\n")
    sys.stdout.flush()
    raise typer.Exit(int(answer.get("exit_code", 1)))
