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


JOIN_TOKEN_ENV = "SHELLWEGO_JOIN_TOKEN"

JoinTokenFile = Annotated[
    Path | None,
    typer.Option(
        "--join-token-file",
        help=f"A file holding the join token (or set {JOIN_TOKEN_ENV}); never on the "
        "command line, where every user of the host sees it.",
    ),
]
# refused: the process list shows every argument to every user of the host
JoinTokenArgv = Annotated[
    str | None, typer.Option("--join-token", hidden=True, show_default=False)
]


def _join_token(argv: str | None, path: Path | None) -> str | None:
    """The join token, from ``--join-token-file`` or the environment; never from argv."""
    if argv is not None:
        typer.echo(
            "Error: --join-token is not accepted (the process list shows it to every user "
            f"of the host): pass --join-token-file FILE or set {JOIN_TOKEN_ENV}",
            err=True,
        )
        raise typer.Exit(2)
    if path is not None:
        try:
            token = path.read_text().strip()
        except OSError as exc:
            typer.echo(f"Error: cannot read the join token file {path}: {exc.strerror}", err=True)
            raise typer.Exit(2) from None
        if not token:
            typer.echo(f"Error: the join token file {path} is empty", err=True)
            raise typer.Exit(2)
        return token
    return os.environ.get(JOIN_TOKEN_ENV, "").strip() or None


def _join_hint(settings: Any) -> str:
    """How agents get this server's join token: its file, or the variable it came from."""
    path = settings.data_dir / "join-token"
    if settings.join_token is None and path.exists():
        return f"--join-token-file {path}  (copy that file to the node)"
    return f"with {JOIN_TOKEN_ENV} set to the join token this server was given"


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

    @app.command("bootstrap")
    def bootstrap(
        email: Annotated[str, typer.Option(help="The first owner's email.")],
        org: Annotated[
            str, typer.Option(help="Slug of the first organization (its name too).")
        ] = "default",
        json_: Annotated[bool, typer.Option("--json", help="Print a JSON object.")] = False,
    ) -> None:
        """Make the platform's first owner, organization and API token (once).

        Run against the database at DATABASE_URL, like `shellwego server`, on a cluster
        whose replicas refuse unauthenticated bootstraps. Prints the token and a generated
        password, once; a second run changes nothing and fails."""
        import secrets

        from pydantic import ValidationError

        from shellwego.cli.context import wants_json
        from shellwego.models import OrganizationCreate, UserCreate
        from shellwego.services import auth
        from shellwego.services.bootstrap import operator_context
        from shellwego.settings import Settings

        password = secrets.token_urlsafe(18)
        try:
            user = UserCreate(email=email, name="Owner", password=password)
            organization = OrganizationCreate(name=org.capitalize(), slug=org)
        except ValidationError as exc:
            problem = exc.errors()[0]
            where = ".".join(str(p) for p in problem["loc"]) or "input"
            typer.echo(f"Error: {where}: {problem['msg']}", err=True)
            raise typer.Exit(2) from None
        try:
            ctx = operator_context(Settings.from_env())
            try:
                made = auth.bootstrap(ctx, user, organization)
            finally:
                ctx.db.dispose()
        except ShellWeGoError as exc:
            typer.echo(f"Error: {exc}", err=True)
            raise typer.Exit(1) from None
        if wants_json(json_):
            import json

            typer.echo(
                json.dumps(
                    {
                        "user": {"id": made.user.id, "email": made.user.email},
                        "organization": {
                            "id": made.organization.id,
                            "slug": made.organization.slug,
                        },
                        "token": made.token.secret,
                        "password": password,
                    },
                    indent=2,
                )
            )
            return
        typer.echo(f"owner {made.user.email} of organization {made.organization.slug} made")
        typer.echo(f"API token (shown once): {made.token.secret}")
        typer.echo(f"password (shown once): {password}")

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
            await role.start()
            typer.echo(f"ShellWeGo API listening on {role.settings.api_url}")
            apps = role.settings.apps_url_template
            if not edge and role.settings.apps_url is None:
                typer.echo(
                    f"apps answer at {apps} as far as this replica knows (it runs no edge): "
                    "set SHELLWEGO_APPS_URL to the edges' public address"
                )
            else:
                typer.echo(f"apps answer at {apps}")
            # never the token itself: this output ends up in service logs
            typer.echo(
                f"join agents with: shellwego agent --server {role.settings.api_url} "
                f"{_join_hint(role.settings)}"
            )

        _serve_until_signal(start, role.stop)

    @app.command("agent")
    def agent(
        server_url: Annotated[str, SERVER_OPTION],
        join_token_file: JoinTokenFile = None,
        join_token_argv: JoinTokenArgv = None,
        state_dir: Annotated[
            Path | None, typer.Option(help="Node identity, slugs and instances.")
        ] = None,
        hostname: Annotated[
            str | None,
            typer.Option(
                help="The node's name on its first start (default: the host's name); two "
                "agents on one host need two names.",
            ),
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
        from shellwego.settings import Settings

        _logging(verbose, log_format)
        _private_files()
        join_token = _join_token(join_token_argv, join_token_file)
        if hostname is not None and not hostname.strip():
            typer.echo("Error: --hostname must not be empty", err=True)
            raise typer.Exit(2)
        servers = _server_urls(server_url)
        settings = Settings.from_env()
        state = (state_dir or settings.data_dir / "agent").absolute()
        if join_token is None and not (state / "node.json").exists():
            typer.echo(
                "Error: this node has not joined yet: pass --join-token-file FILE or set "
                f"{JOIN_TOKEN_ENV} (the join token of `shellwego server`)",
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
                hostname=(hostname or socket.gethostname()).strip(),
                labels=_labels(label or []),
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
        join_token_file: JoinTokenFile = None,
        join_token_argv: JoinTokenArgv = None,
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
        join_token = _join_token(join_token_argv, join_token_file)
        servers = _server_urls(server_url)
        if not join_token:
            typer.echo(
                "Error: an edge node needs a join token: pass --join-token-file FILE or set "
                f"{JOIN_TOKEN_ENV} (the join token of `shellwego server`, or a node's token)",
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
