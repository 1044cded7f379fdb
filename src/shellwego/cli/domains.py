"""``domains add|list|verify|rm``: custom hostnames for an app."""

from __future__ import annotations

from typing import Annotated, Any
from urllib.parse import quote

import typer

from shellwego.cli.context import AppOption, JsonOption, client, resolve_app, wants_json
from shellwego.cli.output import emit_json, line, table, when


def register(app: typer.Typer) -> None:
    group = typer.Typer(help="Custom domains (DNS-verified, automatic TLS).", no_args_is_help=True)
    group.command("add")(add)
    group.command("list")(list_domains)
    group.command("verify")(verify)
    group.command("rm")(remove)
    app.add_typer(group, name="domains")
    # the topic:command spellings of Heroku and Dokku
    app.command("domains:add", hidden=True)(add)
    app.command("domains:remove", hidden=True)(remove)


def _path(host: str) -> str:
    return f"/v1/domains/{quote(host, safe='')}"


def _instructions(domain: dict[str, Any]) -> None:
    records = domain.get("dns") or []
    if not records:
        return
    host = domain["hostname"]
    line("Add these DNS records, then run: shellwego domains verify " + host)
    table(
        ["TYPE", "NAME", "VALUE"],
        [[r["record_type"], r["name"], r["value"]] for r in records],
    )
    if not any(r["record_type"] == "CNAME" for r in records):
        # the platform's own app names are local (e.g. hello.localhost): no CNAME to them
        line(
            f"Then point {host} at this platform's edge: an A (or AAAA) record to this "
            "server's address, or a line in /etc/hosts while you try it locally."
        )


def add(
    hostname: Annotated[str, typer.Argument(metavar="HOST")],
    app: AppOption = None,
    json_: JsonOption = False,
) -> None:
    """Attach a hostname to the app; prints the DNS records that prove you own it."""
    target = resolve_app(app)
    made = client().post("/v1/domains", {"hostname": hostname, "app": target})
    if wants_json(json_):
        emit_json(made)
        return
    line(f"Added {made['hostname']} to {target} (status: {made['status']}).")
    _instructions(made)


def list_domains(app: AppOption = None, json_: JsonOption = False) -> None:
    """The app's custom domains."""
    target = resolve_app(app)
    found = client().items("/v1/domains", params={"app": target})
    if wants_json(json_):
        emit_json(found)
        return
    if not found:
        line(f"{target} has no custom domains.")
        return
    # a pending domain holds its hostname until it expires (unverified by then: removed)
    table(
        ["HOSTNAME", "STATUS", "TLS", "EXPIRES", "ERROR"],
        [
            [
                d["hostname"],
                d["status"],
                d["tls_status"],
                when(d.get("expires_at")),
                d.get("last_error"),
            ]
            for d in found
        ],
    )


def verify(
    hostname: Annotated[str, typer.Argument(metavar="HOST")],
    json_: JsonOption = False,
) -> None:
    """Check the DNS records now; exits 1 while the domain is not verified."""
    found = client().post(f"{_path(hostname)}/actions/verify")
    if wants_json(json_):
        emit_json(found)
        if found["status"] != "active":
            raise typer.Exit(1)
        return
    line(f"{found['hostname']}: {found['status']} (TLS: {found['tls_status']})")
    if found.get("last_error"):
        line(f"  {found['last_error']}")
    if found["status"] != "active":
        _instructions(found)
        raise typer.Exit(1)  # not verified: a failed check, for scripts too


def remove(hostname: Annotated[str, typer.Argument(metavar="HOST")]) -> None:
    """Detach a hostname."""
    client().delete(_path(hostname))
    line(f"Removed {hostname}.")
