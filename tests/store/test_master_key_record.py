"""Replicas share one master key: its fingerprint is recorded in the database, a replica
with another key refuses to start, and a rotation moves the record. Both backends."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from shellwego.crypto.keys import StaticKeyProvider, new_key_text, read_keyring
from shellwego.errors import ConfigError
from shellwego.models import Role, SecretCreate
from shellwego.models.tenancy import OrganizationCreate, UserCreate
from shellwego.services import auth, masterkey, secrets
from shellwego.services.bootstrap import build_context, key_provider
from shellwego.services.context import Principal
from shellwego.settings import Settings
from shellwego.store import Database


@pytest.fixture
def db(settings: Settings) -> Iterator[Database]:
    database = Database(settings.database_url)
    database.reset()
    yield database
    database.reset()
    database.dispose()


def test_the_first_replica_records_its_key_and_another_key_is_refused(db: Database) -> None:
    first, other = new_key_text(), new_key_text()
    mine = StaticKeyProvider(first)
    masterkey.check(db, mine)
    assert masterkey.recorded_fingerprint(db) == mine.current_key_id
    masterkey.check(db, StaticKeyProvider(first))  # a second replica with the same key

    wrong = StaticKeyProvider(other)
    with pytest.raises(ConfigError) as refused:
        masterkey.check(db, wrong)
    message = str(refused.value)
    assert message == (
        f"this server's master key (fingerprint {wrong.current_key_id}) does not match the "
        f"one recorded in the database (fingerprint {mine.current_key_id}): start every "
        "replica with the same SHELLWEGO_MASTER_KEY or key file"
    )
    assert "\n" not in message and first not in message and other not in message
    assert masterkey.recorded_fingerprint(db) == mine.current_key_id  # unchanged


def test_a_key_that_does_not_open_existing_secrets_is_never_recorded(
    settings: Settings, db: Database
) -> None:
    """A database from before the record (secrets, no fingerprint): a replica whose key
    wraps none of them is refused rather than recorded."""
    old = new_key_text()
    ctx = build_context(settings.with_overrides(master_key=old), migrate=False)
    try:
        boot = auth.bootstrap(
            ctx,
            UserCreate(email="o@x.example", password="long enough password"),
            OrganizationCreate(name="X", slug="x"),
        )
        who = Principal(boot.user.id, boot.organization.id, Role.OWNER, None)
        secrets.create(ctx, who, SecretCreate(name="TOKEN", value="v"))
    finally:
        ctx.db.dispose()
    assert masterkey.recorded_fingerprint(db) is None
    stranger = StaticKeyProvider(new_key_text())
    with pytest.raises(ConfigError, match="is not the one the database's secrets are wrapped"):
        masterkey.check(db, stranger)
    assert masterkey.recorded_fingerprint(db) is None
    masterkey.check(db, StaticKeyProvider(old))
    assert masterkey.recorded_fingerprint(db) == StaticKeyProvider(old).current_key_id


def test_env_key_rotation_moves_the_record(db: Database) -> None:
    old, new = new_key_text(), new_key_text()
    old_id, new_id = (StaticKeyProvider(k).current_key_id for k in (old, new))
    masterkey.check(db, StaticKeyProvider(old))
    # while rotating: replicas restarted with the new key and the old one start
    rotating = StaticKeyProvider(new, old)
    masterkey.check(db, rotating)
    assert masterkey.recorded_fingerprint(db) == old_id
    secrets.rotate_master_key(db, rotating, settle_seconds=0)
    assert masterkey.recorded_fingerprint(db) == new_id
    # from now on a replica with only the old key is refused; the new key alone starts
    with pytest.raises(ConfigError, match=f"fingerprint {old_id}.*fingerprint {new_id}"):
        masterkey.check(db, StaticKeyProvider(old))
    masterkey.check(db, StaticKeyProvider(new))


def test_key_file_rotation_moves_the_record(settings: Settings, db: Database) -> None:
    provider = key_provider(settings)  # makes the key file
    masterkey.check(db, provider)
    _, before = read_keyring(settings.key_file)
    secrets.rotate_master_key(db, key_provider(settings), settle_seconds=0)
    _, after = read_keyring(settings.key_file)
    assert after != before
    assert masterkey.recorded_fingerprint(db) == after
    # a replica reading the rotated file starts; one with a copy of the old file does not
    masterkey.check(db, key_provider(settings))
    stale = Path(settings.data_dir / "stale.key")
    with pytest.raises(ConfigError, match="does not match"):
        masterkey.check(db, key_provider(settings.with_overrides(master_key_file=stale)))
