"""Build a :class:`Context` from settings: the one place that wires the parts together."""

from __future__ import annotations

from shellwego.bus import make_bus
from shellwego.clock import Clock, SystemClock
from shellwego.crypto import Envelope, FileKeyProvider, KeyProvider, StaticKeyProvider
from shellwego.settings import Settings
from shellwego.store import Database

from .context import Context
from .dns import system_resolver


def key_provider(settings: Settings) -> KeyProvider:
    if settings.master_key:
        return StaticKeyProvider(settings.master_key)
    return FileKeyProvider(settings.key_file)


def build_context(
    settings: Settings, *, clock: Clock | None = None, migrate: bool = True
) -> Context:
    settings.check()
    settings.data_dir.mkdir(parents=True, exist_ok=True)
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
    ctx.extras["resolver"] = system_resolver
    return ctx
