"""Build a :class:`Context` from settings: the one place that wires the parts together."""

from __future__ import annotations

from shellwego.bus import make_bus
from shellwego.clock import Clock, SystemClock
from shellwego.crypto import Envelope, FileKeyProvider, KeyProvider, StaticKeyProvider
from shellwego.crypto.keys import NoKeyProvider, read_keyring
from shellwego.files import make_private_dir
from shellwego.settings import Settings
from shellwego.store import Database

from .context import Context
from .dns import DnsResolver


def key_provider(settings: Settings, *, create: bool = True) -> KeyProvider:
    """The configured master keys.

    ``SHELLWEGO_MASTER_KEY`` wins; a keyring file named by ``SHELLWEGO_MASTER_KEY_FILE``
    next to it is then read for older keys only (moving from a key file to an env key).
    ``SHELLWEGO_MASTER_KEY_OLD`` adds older keys to either provider.
    """
    if settings.master_key:
        older: dict[str, bytes] = {}
        if settings.master_key_file is not None and settings.master_key_file.exists():
            older, _ = read_keyring(settings.master_key_file)
        return StaticKeyProvider(settings.master_key, *settings.master_keys_old, older_keys=older)
    return FileKeyProvider(settings.key_file, older=settings.master_keys_old, create=create)


def build_context(
    settings: Settings, *, clock: Clock | None = None, migrate: bool = True
) -> Context:
    settings.check()
    if not settings.data_dir.is_dir():
        make_private_dir(settings.data_dir)
    db = Database(settings.database_url)
    if migrate:
        db.migrate()
    ctx = Context(
        settings=settings,
        db=db,
        envelope=Envelope(key_provider(settings)),
        clock=clock or SystemClock(),
        bus=make_bus(settings.nats_url),
    )
    ctx.resolver = DnsResolver(settings.dns_resolver)
    return ctx


def operator_context(settings: Settings, *, clock: Clock | None = None) -> Context:
    """What an operator command run against ``DATABASE_URL`` needs (``shellwego
    bootstrap``): the database, migrated, and no master key, bus or data directory."""
    db = Database(settings.database_url)
    db.migrate()
    return Context(
        settings=settings,
        db=db,
        envelope=Envelope(NoKeyProvider()),
        clock=clock or SystemClock(),
        bus=make_bus(None),
    )
