"""``shellwego keys``: master-key rotation and status, run by the operator on the server.

Like ``shellwego db upgrade`` these commands talk to the database at ``DATABASE_URL``
and read the master keys the server is configured with; they never go through the API.
Nothing here prints key material: keys are named by their id (a hash prefix).
"""

from __future__ import annotations

from typing import Annotated

import typer

from shellwego.cli.context import JsonOption, wants_json
from shellwego.cli.output import emit_json, fail, line, table
from shellwego.errors import ShellWeGoError
from shellwego.settings import Settings


def _where(settings: Settings) -> str:
    if settings.master_key:
        return "SHELLWEGO_MASTER_KEY"
    return f"key file {settings.key_file}"


def register(app: typer.Typer) -> None:
    keys = typer.Typer(help="Master keys that wrap the data keys of secrets.", no_args_is_help=True)

    @keys.command("rotate")
    def rotate(
        batch_size: Annotated[
            int, typer.Option(min=1, max=100000, help="Data keys re-wrapped per transaction.")
        ] = 500,
        settle_seconds: Annotated[
            float,
            typer.Option(
                min=0,
                max=3600,
                help="Wait this long after the new key joins the keyring before the old "
                "one is retired, so writes servers began under it land and are re-wrapped.",
            ),
        ] = 10.0,
    ) -> None:
        """Re-wrap every data key under the current master key (values stay as they are).

        With a key file: makes a new key, re-wraps, then retires the old one. With
        SHELLWEGO_MASTER_KEY: re-wraps what the keys in SHELLWEGO_MASTER_KEY_OLD (or the
        keyring in SHELLWEGO_MASTER_KEY_FILE) wrap. Safe to run again after a crash.
        """
        from shellwego.services.bootstrap import key_provider
        from shellwego.services.secrets import rotate_master_key
        from shellwego.store import Database

        try:
            settings = Settings.from_env()
            db = Database(settings.database_url)
            try:
                result = rotate_master_key(
                    db, key_provider(settings), batch_size=batch_size,
                    settle_seconds=settle_seconds,
                )
            finally:
                db.dispose()
        except ShellWeGoError as exc:
            fail(str(exc))
        kind = "new master key" if result.new_key else "master key"
        line(
            f"{kind} {result.current_key_id} ({_where(settings)}) is current; "
            f"re-wrapped {result.rewrapped} data key(s)"
        )
        for kid in result.retired:
            line(f"retired master key {kid}")
        sources = [
            name
            for name, given in (
                ("SHELLWEGO_MASTER_KEY_OLD", settings.master_keys_old),
                ("SHELLWEGO_MASTER_KEY_FILE", settings.master_key and settings.master_key_file),
            )
            if given
        ]
        if result.still_given and sources:
            line(
                f"no data key is wrapped by {', '.join(result.still_given)} any more: "
                f"stop passing {' and '.join(sources)}"
            )

    @keys.command("status")
    def status(json_: JsonOption = False) -> None:
        """How many data keys each master key wraps, and which keys are configured."""
        from shellwego.services.bootstrap import key_provider
        from shellwego.services.secrets import key_usage
        from shellwego.store import Database

        try:
            settings = Settings.from_env()
            provider = key_provider(settings, create=False)
            db = Database(settings.database_url)
            try:
                usage = key_usage(db)
            finally:
                db.dispose()
        except ShellWeGoError as exc:
            fail(str(exc))
        current = provider.current_key_id
        known = provider.key_ids
        rows = []
        for kid in [*known, *sorted(set(usage) - set(known))]:
            state = "current" if kid == current else "older" if kid in known else "missing"
            rows.append({"key_id": kid, "data_keys": usage.get(kid, 0), "state": state})
        if wants_json(json_):
            emit_json({"provider": _where(settings), "keys": rows})
            return
        line(f"master keys from {_where(settings)}")
        table(["KEY ID", "DATA KEYS", "STATE"], [list(r.values()) for r in rows])
        if any(r["state"] == "missing" for r in rows):
            fail("some data keys are wrapped by a master key that is not configured")

    app.add_typer(keys, name="keys")
