"""``apps create|list|info|delete`` and ``open``."""

from __future__ import annotations

import webbrowser
from pathlib import Path
from typing import Annotated, Any, Literal

import typer

from shellwego.cli.client import Client
from shellwego.cli.context import (
    APP_FILE,
    AppOption,
    JsonOption,
    MaxUnavailableOption,
    SurgeOption,
    client,
    path_of,
    resolve_app,
    rollout_settings,
    wants_json,
    write_app_file,
)
from shellwego.cli.errors import usage
from shellwego.cli.output import emit_json, line, pairs, table, when


def register(app: typer.Typer) -> None:
    group = typer.Typer(help="Create, list, inspect and delete apps.", no_args_is_help=True)
    group.command("create")(create)
    group.command("list")(list_apps)
    group.command("info")(info)
    group.command("update")(update)
    group.command("delete")(delete)
    app.add_typer(group, name="apps")
    app.command("open")(open_app)
    # the topic:command spellings of Heroku, Dokku and Piku
    app.command("apps:create", hidden=True)(create)
    app.command("apps:info", hidden=True)(info)
    app.command("apps:destroy", hidden=True)(delete)


def formation_text(formation: dict[str, Any]) -> str:
    parts = [f"{kind}={spec['count']}:{spec['size']}" for kind, spec in sorted(formation.items())]
    return " ".join(parts) or "-"


def deploy_text(deploy: dict[str, Any]) -> str:
    return f"surge {deploy['surge']}, max unavailable {deploy['max_unavailable']}"


def placement_text(placement: dict[str, Any]) -> str:
    constraints = placement.get("constraints") or {}
    labels = " ".join(f"{key}={value}" for key, value in sorted(constraints.items()))
    return f"{placement['strategy']}, " + (f"nodes with {labels}" if labels else "any node")


def parse_constraints(items: list[str]) -> dict[str, str]:
    """``region=eu`` sets a constraint, ``region=`` removes it (the later of two wins)."""
    found: dict[str, str] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            usage(f"{item!r} is not LABEL=VALUE (e.g. region=eu; region= removes it)")
        found[key] = value
    return found


def app_url(api: Client, name: str) -> str:
    template = api.get("/v1/status").get("apps_url_template") or ""
    return str(template).replace("{app}", name.lower())


def release_versions(api: Client, app: str) -> dict[str, int]:
    return {r["id"]: r["version"] for r in api.items(f"{path_of(app)}/releases")}


def create(
    name: Annotated[str, typer.Argument(metavar="NAME", help="Letters, digits and dashes.")],
    runtime: Annotated[str | None, typer.Option(help="process (default), oci or microvm.")] = None,
    json_: JsonOption = False,
) -> None:
    """Create an app. In a directory that looks like an app's (its Procfile, requirements,
    package.json, Dockerfile, git repository, or nothing yet) and has no .shellwego,
    writes one naming the app, so commands there target it."""
    body: dict[str, Any] = {"name": name}
    if runtime:
        body["runtime"] = runtime
    api = client()
    made = api.post("/v1/apps", body)
    here = Path.cwd()
    written = write_app_file(here, made["name"])
    if wants_json(json_):
        emit_json(made)
        return
    line(f"Created app {made['name']}: {app_url(api, made['name'])}")
    if written is not None:
        line(f"Wrote {written}: commands in this directory now target {made['name']}.")
    elif not (here / APP_FILE).exists():
        line(
            f"{here} does not look like an app's directory, so no {APP_FILE} was written "
            f"there: pass -a {made['name']}, or deploy with: "
            f"shellwego deploy PATH -a {made['name']}"
        )


def list_apps(json_: JsonOption = False) -> None:
    """Every app of your organization."""
    found = client().items("/v1/apps")
    if wants_json(json_):
        emit_json(found)
        return
    if not found:
        line("No apps yet. Create one with: shellwego apps create NAME")
        return
    table(
        ["NAME", "STATUS", "RUNTIME", "FORMATION", "CREATED"],
        [
            [
                a["name"],
                a["status"],
                a["runtime"],
                formation_text(a["formation"]),
                when(a["created_at"]),
            ]
            for a in found
        ],
    )


def info(
    name: Annotated[str | None, typer.Argument(metavar="[NAME]")] = None,
    app: AppOption = None,
    json_: JsonOption = False,
) -> None:
    """What an app runs and where it answers."""
    target = name or resolve_app(app)
    api = client()
    found = api.get(path_of(target))
    if wants_json(json_):
        emit_json(found)
        return
    release = "none"
    if found.get("current_release_id"):
        versions = release_versions(api, target)
        version = versions.get(found["current_release_id"])
        release = f"v{version}" if version else found["current_release_id"]
    rows: list[tuple[str, Any]] = [
        ("ID", found["id"]),
        ("Status", found["status"]),
        ("Runtime", found["runtime"]),
        ("Release", release),
        ("Formation", formation_text(found["formation"])),
    ]
    if found.get("formation_error"):
        rows.append(("Unplaced", found["formation_error"]))
    rows += [
        ("Deploy", deploy_text(found["deploy"])),
        ("Placement", placement_text(found["placement"])),
        ("URL", app_url(api, found["name"])),
        ("Redirect", "HTTP to HTTPS" if found.get("redirect_https") else "no"),
        ("Created", when(found["created_at"])),
    ]
    pairs(found["name"], rows)


def update(
    name: Annotated[str | None, typer.Argument(metavar="[NAME]")] = None,
    app: AppOption = None,
    redirect_https: Annotated[
        bool | None,
        typer.Option(
            "--redirect-https/--no-redirect-https",
            help="Answer plain HTTP with a redirect to HTTPS (or serve it as is).",
        ),
    ] = None,
    surge: SurgeOption = None,
    max_unavailable: MaxUnavailableOption = None,
    strategy: Annotated[
        Literal["binpack", "spread"] | None,
        typer.Option(
            "--strategy",
            help="Placement: binpack fills the fullest node that fits, spread the emptiest.",
        ),
    ] = None,
    constraint: Annotated[
        list[str] | None,
        typer.Option(
            "--constraint",
            metavar="LABEL=VALUE",
            help="Run only on nodes with this label (repeatable); LABEL= removes it.",
        ),
    ] = None,
    json_: JsonOption = False,
) -> None:
    """Change an app's settings: the HTTPS redirect (the edge applies it at once), rolling
    deploy settings, and placement (instances on nodes that no longer match move)."""
    deploy = rollout_settings(surge, max_unavailable)
    constraints = parse_constraints(constraint or [])
    if redirect_https is None and not deploy and strategy is None and not constraints:
        usage(
            "nothing to change: pass --[no-]redirect-https, --surge, --max-unavailable, "
            "--strategy or --constraint"
        )
    target = name or resolve_app(app)
    api = client()
    body: dict[str, Any] = {}
    if redirect_https is not None:
        body["redirect_https"] = redirect_https
    if deploy or strategy or constraints:
        # settings are replaced whole: keep what this command does not change
        current = api.get(path_of(target))
        if deploy:
            body["deploy"] = {**current["deploy"], **deploy}
        if strategy or constraints:
            placement = dict(current["placement"])
            if strategy:
                placement["strategy"] = strategy
            labels = {**placement.get("constraints", {}), **constraints}
            placement["constraints"] = {k: v for k, v in labels.items() if v}
            body["placement"] = placement
    changed = api.patch(path_of(target), body)
    if wants_json(json_):
        emit_json(changed)
        return
    updated = f"Updated {changed['name']}:"
    if "redirect_https" in body:
        if changed["redirect_https"]:
            line(f"{updated} plain HTTP now redirects to HTTPS.")
        else:
            line(f"{updated} plain HTTP is served without a redirect.")
    if "deploy" in body:
        line(f"{updated} deploy {deploy_text(changed['deploy'])}.")
    if "placement" in body:
        line(f"{updated} placement {placement_text(changed['placement'])}.")


def delete(
    name: Annotated[str, typer.Argument(metavar="NAME", help="The app to delete.")],
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Really delete it.")] = False,
) -> None:
    """Delete an app with its releases, config, secrets and domains."""
    if not yes:
        usage(f"deleting {name} cannot be undone: run again with --yes to confirm")
    client().delete(path_of(name))
    line(f"Deleted app {name}.")


def open_app(
    app: AppOption = None,
    print_only: Annotated[
        bool, typer.Option("--print", help="Print the URL without opening a browser.")
    ] = False,
) -> None:
    """Open the app in a browser (and print its URL)."""
    target = resolve_app(app)
    api = client()
    name = api.get(path_of(target))["name"]
    url = app_url(api, name)
    line(url)
    if not print_only:
        webbrowser.open(url)
