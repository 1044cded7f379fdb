"""Commands that run platform roles: ``up``, ``server``, ``agent``, ``db``."""

from __future__ import annotations

import typer


def register(app: typer.Typer) -> None:
    """Attach the role commands to the CLI."""
    db = typer.Typer(help="Database schema management.", no_args_is_help=True)

    @db.command("upgrade")
    def upgrade() -> None:
        """Migrate the database at DATABASE_URL to the newest schema."""
        from shellwego.settings import Settings
        from shellwego.store import Database

        settings = Settings.from_env()
        database = Database(settings.database_url)
        database.migrate()
        typer.echo(f"database at revision {database.current_revision()} ({database.backend})")

    app.add_typer(db, name="db")
