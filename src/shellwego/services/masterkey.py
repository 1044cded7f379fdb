"""The master key every replica shares: its fingerprint, recorded in the database.

Replicas that wrapped data keys under different master keys would each write secrets the
others cannot read. The first replica to start records the fingerprint (the key id, a
hash prefix: never key material) of its current master key; every later start compares.
A rotation (``shellwego keys rotate``) records the new key's fingerprint once the new
key is current.
"""

from __future__ import annotations

from shellwego.clock import Clock, SystemClock
from shellwego.crypto import KeyProvider
from shellwego.errors import ConfigError, Conflict
from shellwego.models import PlatformFact, SecretVersion, new_id
from shellwego.models.platform import MASTER_KEY
from shellwego.store import Database
from shellwego.store import repository as repo


def recorded_fingerprint(db: Database) -> str | None:
    """The fingerprint of the master key the platform's replicas share, if recorded."""
    with db.session(write=False) as s:
        fact = repo.get(s, PlatformFact, name=MASTER_KEY)
        return fact.value if fact is not None else None


def record(db: Database, fingerprint: str, clock: Clock | None = None) -> None:
    """Record ``fingerprint`` as the platform's master key (after a rotation)."""
    now = (clock or SystemClock()).now()
    with db.session() as s:
        fact = repo.get(s, PlatformFact, name=MASTER_KEY)
        if fact is None:
            repo.add(
                s,
                PlatformFact(
                    id=new_id(), name=MASTER_KEY, value=fingerprint, created_at=now, updated_at=now
                ),
                conflict="the master key was recorded meanwhile",
            )
        elif fact.value != fingerprint:
            fact.value = fingerprint
            fact.updated_at = now


def check(db: Database, provider: KeyProvider, clock: Clock | None = None) -> None:
    """Refuse a replica whose master key is not the one the platform records.

    On a database without a record, this replica's current key is recorded (unless data
    keys are wrapped by keys it does not hold: then it is the wrong key). A replica whose
    current key is new but which still holds the recorded one (older keys given while
    rotating) starts: ``shellwego keys rotate`` then moves the record to the new key.
    """
    mine = provider.current_key_id
    recorded = recorded_fingerprint(db)
    if recorded is None:
        with db.session(write=False) as s:
            used = {str(k) for k in repo.count_by(s, SecretVersion, "key_id")}
        foreign = sorted(used - set(provider.key_ids))
        if foreign:
            raise ConfigError(
                f"this server's master key (fingerprint {mine}) is not the one the "
                f"database's secrets are wrapped with (fingerprint {', '.join(foreign)}): "
                "start every replica with the same SHELLWEGO_MASTER_KEY or key file"
            )
        try:
            with db.session() as s:
                now = (clock or SystemClock()).now()
                repo.add(
                    s,
                    PlatformFact(
                        id=new_id(), name=MASTER_KEY, value=mine, created_at=now, updated_at=now
                    ),
                    conflict="recorded meanwhile",
                )
            return
        except Conflict:
            recorded = recorded_fingerprint(db)  # another replica started at the same time
    if recorded == mine or recorded in provider.key_ids:
        return
    raise ConfigError(
        f"this server's master key (fingerprint {mine}) does not match the one recorded "
        f"in the database (fingerprint {recorded}): start every replica with the same "
        "SHELLWEGO_MASTER_KEY or key file"
    )
