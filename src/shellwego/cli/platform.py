"""Commands that run platform roles: ``up``, ``server``, ``agent``, ``db``."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Annotated, Any, Literal

import typer

from shellwego.errors import ShellWeGoError
from shellwego.logconfig import configure


def _serve_until_signal(
    start: Callable[[], Awaitable[Any]], stop: Callable[[], Awaitable[Any]]
) -> None:
    """Start a role, wait for Ctrl-C or SIGTERM, stop it cleanly."""

    async def main() -> None:
        stopping = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stopping.set)
        try:
            await start()
            await stopping.wait()
            typer.echo("stopping…", err=True)
        finally:
            await stop()

    try:
        asyncio.run(main())
    except ShellWeGoError as exc:
        typer.echo(f"Error: {exc}", err=True)
        raise typer.Exit(1) from None
    except OSError as exc:
        typer.echo(f"Error: {exc.strerror or exc}", err=True)
        raise typer.Exit(1) from None


def _private_files() -> None:
    """Whatever the role creates from here on (database, WAL, uploads, builds, Git
    repositories, Caddy's state), and the tools it runs, is readable by its owner only."""
    from shellwego.files import UMASK

    os.umask(UMASK)


# agents and edge nodes: the control plane, or every replica of it (tried in turn)
SERVER_OPTION = typer.Option(
    "--server",
    envvar="SHELLWEGO_SERVER_URLS",
    help="Control plane URL, or its replicas' URLs separated by commas "
    "(a failed replica is left for the next one).",
)

LogFormat = Annotated[
    Literal["text", "json"],
    typer.Option(
        "--log-format",
        envvar="SHELLWEGO_LOG_FORMAT",
        help="One line per API request and deploy step (and the rest), as text or JSON.",
    ),
]


def _logging(verbose: bool, log_format: str) -> None:
    configure(log_format, verbose=verbose)


def _labels(raw: list[str]) -> dict[str, str]:
    labels = {}
    for item in raw:
        key, sep, value = item.partition("=")
        if not sep or not key:
            typer.echo(f"Error: label {item!r} must look like key=value", err=True)
            raise typer.Exit(2)
        labels[key] = value
    return labels


def register(app: typer.Typer) -> None:
    """Attach the role commands to the CLI."""
    db = typer.Typer(help="Database schema management.", no_args_is_help=True)

    @db.command("upgrade")
    def upgrade() -> None:
        """Migrate the database at DATABASE_URL to the newest schema."""
        from shellwego.settings import Settings
        from shellwego.store import Database

        try:
            settings = Settings.from_env()
            database = Database(settings.database_url)
            database.migrate()
        except ShellWeGoError as exc:
            typer.echo(f"Error: {exc}", err=True)
            raise typer.Exit(1) from None
        typer.echo(f"database at revision {database.current_revision()} ({database.backend})")

    app.add_typer(db, name="db")

    @app.command("up")
    def up(
        data_dir: Annotated[
            Path | None, typer.Option(help="Where everything is kept (default: XDG data home).")
        ] = None,
        api_port: Annotated[int | None, typer.Option(help="API port (default 8400).")] = None,
        http_port: Annotated[
            int | None, typer.Option(help="Edge HTTP port (80 as root, else 8080).")
        ] = None,
        https_port: Annotated[
            int | None, typer.Option(help="Edge HTTPS port (443 as root, else 8443).")
        ] = None,
        base_domain: Annotated[
            str | None, typer.Option(help="Apps answer at <app>.<base domain>.")
        ] = None,
        email: Annotated[str, typer.Option(help="The owner account made on first start.")] = (
            "owner@example.com"
        ),
        verbose: Annotated[bool, typer.Option("--verbose", "-v")] = False,
        log_format: LogFormat = "text",
    ) -> None:
        """Run the whole platform on this machine: API, a local agent and the edge."""
        from shellwego.roles.allinone import AllInOne
        from shellwego.settings import Settings

        _logging(verbose, log_format)
        _private_files()
        try:
            settings = Settings.from_env(
                data_dir=data_dir,
                api_port=api_port,
                http_port=http_port,
                https_port=https_port,
                base_domain=base_domain,
            )
            platform = AllInOne(settings, email=email)
        except ShellWeGoError as exc:
            typer.echo(f"Error: {exc}", err=True)
            raise typer.Exit(1) from None

        saved: list[Path] = []

        def log_the_cli_in(first: Any) -> None:
            # at once, before the edge and the API start: a failed first start keeps it
            from shellwego.cli.config import save_login

            saved.append(save_login(settings.api_url, first.token))

        async def start() -> None:
            first = await platform.start(on_first_start=log_the_cli_in)
            _announce(platform, first, saved[0] if saved else None)

        async def stop() -> None:
            await platform.stop()

        _serve_until_signal(start, stop)

    @app.command("server")
    def server(
        edge: Annotated[
            bool, typer.Option(help="Also run the edge (Caddy) on this machine.")
        ] = True,
        verbose: Annotated[bool, typer.Option("--verbose", "-v")] = False,
        log_format: LogFormat = "text",
    ) -> None:
        """Run the control plane (DATABASE_URL selects the database, NATS_URL the bus)."""
        from shellwego.roles.server import ServerRole
        from shellwego.settings import Settings

        _logging(verbose, log_format)
        _private_files()
        try:
            role = ServerRole(Settings.from_env(), edge=edge)
        except ShellWeGoError as exc:
            typer.echo(f"Error: {exc}", err=True)
            raise typer.Exit(1) from None

        async def start() -> None:
            token = await role.start()
            typer.echo(f"ShellWeGo API listening on {role.settings.api_url}")
            typer.echo(
                f"join agents with: shellwego agent --server {role.settings.api_url} "
                f"--join-token {token}"
            )

        _serve_until_signal(start, role.stop)

    @app.command("agent")
    def agent(
        server_url: Annotated[str, SERVER_OPTION],
        join_token: Annotated[
            str | None,
            typer.Option(envvar="SHELLWEGO_JOIN_TOKEN", help="Needed on the first start only."),
        ] = None,
        state_dir: Annotated[
            Path | None, typer.Option(help="Node identity, slugs and instances.")
        ] = None,
        address: Annotated[
            str, typer.Option(help="Address the edge uses to reach this node's instances.")
        ] = "127.0.0.1",
        label: Annotated[
            list[str] | None, typer.Option(help="Node label key=value (repeatable).")
        ] = None,
        cpu_overcommit: Annotated[
            float,
            typer.Option(min=0.1, max=100, help="Offer this many times the host's CPUs."),
        ] = 1.0,
        verbose: Annotated[bool, typer.Option("--verbose", "-v")] = False,
        log_format: LogFormat = "text",
    ) -> None:
        """Run a node agent: registers once, then runs what the control plane assigns."""
        from shellwego.agent.daemon import Agent
        from shellwego.agent.settings import AgentSettings
        from shellwego.files import make_private_tree
        from shellwego.roles.server import AGENT_APP_TREES, process_driver
        from shellwego.runtime.host import offered_runtimes
        from shellwego.settings import Settings

        _logging(verbose, log_format)
        _private_files()
        servers = _server_urls(server_url)
        settings = Settings.from_env()
        state = (state_dir or settings.data_dir / "agent").absolute()
        if join_token is None and not (state / "node.json").exists():
            typer.echo(
                "Error: this node has not joined yet: pass --join-token (printed by "
                "`shellwego server`)",
                err=True,
            )
            raise typer.Exit(2)
        make_private_tree(state, leave=AGENT_APP_TREES)
        driver = process_driver(
            settings,
            state / "instances",
            [settings.data_dir, state],
            reachable_from=settings.data_dir if state.is_relative_to(settings.data_dir) else state,
        )
        daemon = Agent(
            AgentSettings(
                server_url=",".join(servers),
                join_token=join_token,
                state_dir=state,
                hostname=socket.gethostname(),
                labels=_labels(label or []),
                runtimes=offered_runtimes([driver]),
                address=address,
                cpu_overcommit=cpu_overcommit,
            ),
            driver,
        )
        task: dict[str, asyncio.Task[None]] = {}

        async def start() -> None:
            task["run"] = asyncio.create_task(daemon.run())
            typer.echo(f"agent running for {', '.join(servers)} (state in {state})")

        async def stop() -> None:
            await daemon.stop()
            run = task.get("run")
            if run is not None:
                run.cancel()
                await asyncio.gather(run, return_exceptions=True)

        _serve_until_signal(start, stop)

    @app.command("edge")
    def edge(
        server_url: Annotated[str, SERVER_OPTION],
        join_token: Annotated[
            str | None,
            typer.Option(
                envvar="SHELLWEGO_JOIN_TOKEN",
                help="Join token (printed by `shellwego server`) or a node's token.",
            ),
        ] = None,
        data_dir: Annotated[
            Path | None, typer.Option(help="Where the edge keeps Caddy's state and last table.")
        ] = None,
        http_port: Annotated[
            int | None, typer.Option(help="HTTP port (80 as root, else 8080).")
        ] = None,
        https_port: Annotated[
            int | None, typer.Option(help="HTTPS port (443 as root, else 8443).")
        ] = None,
        verbose: Annotated[bool, typer.Option("--verbose", "-v")] = False,
        log_format: LogFormat = "text",
    ) -> None:
        """Run an edge node: Caddy serving every app's hostnames, as the control plane says."""
        from shellwego.files import make_private_tree
        from shellwego.roles.edge import EdgeNode, edge_node_settings
        from shellwego.settings import Settings

        _logging(verbose, log_format)
        _private_files()
        servers = _server_urls(server_url)
        if not join_token:
            typer.echo(
                "Error: an edge node needs --join-token (printed by `shellwego server`)",
                err=True,
            )
            raise typer.Exit(2)
        try:
            settings = Settings.from_env(
                data_dir=data_dir, http_port=http_port, https_port=https_port
            )
        except ShellWeGoError as exc:
            typer.echo(f"Error: {exc}", err=True)
            raise typer.Exit(1) from None
        node = EdgeNode(servers, join_token, edge_node_settings(settings))
        make_private_tree(node.settings.data_dir)  # Caddy's keys and certificates

        async def start() -> None:
            await node.start()
            typer.echo(
                f"edge running for {', '.join(servers)}: http port {settings.http_port}, "
                f"https port {settings.https_port}, ask endpoint {node.ask.url} "
                f"(state in {node.settings.data_dir})"
            )

        _serve_until_signal(start, node.stop)


def _server_urls(raw: str) -> tuple[str, ...]:
    """``--server``'s URLs (exit 2 when malformed)."""
    from shellwego.replicas import parse_urls

    try:
        return parse_urls(raw)
    except ShellWeGoError as exc:
        typer.echo(f"Error: {exc}", err=True)
        raise typer.Exit(2) from None


def _announce(platform: Any, first: Any, login: Path | None) -> None:
    from shellwego.cli import config

    settings = platform.settings
    http = "" if settings.http_port == 80 else f":{settings.http_port}"
    https = "" if settings.https_port == 443 else f":{settings.https_port}"
    credentials = settings.data_dir / "credentials.txt"
    typer.echo(f"ShellWeGo is up. API: {settings.api_url}  (docs: {settings.api_url}/docs)")
    typer.echo(f"Apps answer at http://<app>.{settings.base_domain}{http}/")
    typer.echo(
        f"and at https://<app>.{settings.base_domain}{https}/ "
        f"(trust the edge's local CA: {platform.caddy.internal_root})"
    )
    if first is not None:
        # never the password itself: this output ends up in service logs
        typer.echo(f"Owner account: {first.email}  (its password is in {first.credentials})")
        typer.echo(f"The CLI is logged in ({login}); try: shellwego apps create myapp")
    else:
        saved = config.load()
        if saved.get("api_url") != settings.api_url or not saved.get("token"):
            where = (
                f"the owner account's email and password are in {credentials}"
                if credentials.exists()
                else "with an account of this platform"
            )
            typer.echo(
                f"The CLI is not logged in to {settings.api_url}: "
                f"run shellwego login --api-url {settings.api_url} ({where})"
            )
    typer.echo(f"Data directory: {settings.data_dir}. Press Ctrl-C to stop.")
