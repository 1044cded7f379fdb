"""Master-key rotation through the configured provider, on both backends.

The operator runs ``shellwego keys rotate`` against the database at DATABASE_URL: a
real subprocess, with the keys the server is configured with (a key file, or
``SHELLWEGO_MASTER_KEY`` plus ``SHELLWEGO_MASTER_KEY_OLD``). Values are never touched:
only wrapped data keys change.
"""

from __future__ import annotations

import base64
import dataclasses
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from shellwego.clock import SystemClock
from shellwego.crypto import Envelope
from shellwego.crypto.keys import StaticKeyProvider, new_key_text, read_keyring
from shellwego.errors import ConfigError
from shellwego.models import Role, SecretCreate, SecretVersion
from shellwego.models.tenancy import OrganizationCreate, UserCreate
from shellwego.services import auth, secrets
from shellwego.services.bootstrap import build_context, key_provider
from shellwego.services.context import Context, Principal
from shellwego.settings import Settings
from shellwego.store import Database
from shellwego.store import repository as repo

SHELLWEGO = str(Path(sys.executable).with_name("shellwego"))
VALUES = {f"CANARY_{i}": f"value-canary-{i}-5e1b" for i in range(7)}


def _env(settings: Settings, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SHELLWEGO_")}
    env.update(
        DATABASE_URL=settings.database_url, SHELLWEGO_DATA_DIR=str(settings.data_dir), **extra
    )
    return env


def _cli(settings: Settings, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [SHELLWEGO, *args], env=_env(settings, **env), capture_output=True, text=True, timeout=120
    )


def _context(settings: Settings) -> Context:
    """What ``shellwego server`` builds: the configured key provider included."""
    return build_context(settings, clock=SystemClock(), migrate=False)


def _store(ctx: Context) -> Principal:
    ctx.db.reset()
    boot = auth.bootstrap(
        ctx,
        UserCreate(email="o@x.example", password="long enough password"),
        OrganizationCreate(name="X", slug="x"),
    )
    who = Principal(boot.user.id, boot.organization.id, Role.OWNER, None)
    for name, value in VALUES.items():
        secrets.create(ctx, who, SecretCreate(name=name, value=value))
    return who


def _rows(db: Database | Settings) -> dict[str, SecretVersion]:
    own = isinstance(db, Settings)
    database = Database(db.database_url) if isinstance(db, Settings) else db
    try:
        with database.session() as s:
            return {r.id: r for r in repo.find_all(s, SecretVersion)}
    finally:
        if own:
            database.dispose()


def _values(ctx: Context) -> dict[str, str]:
    """Every stored value, decrypted the way the server does."""
    with ctx.db.session() as s:
        names = {sec.id: sec.name for sec in repo.find_all(s, secrets.Secret)}
        rows = repo.find_all(s, SecretVersion)
        return {names[r.secret_id]: secrets.open_version(ctx, r) for r in rows}


def _untouched(before: dict[str, SecretVersion], after: dict[str, SecretVersion]) -> None:
    assert set(before) == set(after)
    for rid, old in before.items():
        new = after[rid]
        assert (new.ciphertext, new.nonce, new.secret_id, new.version, new.created_at) == (
            old.ciphertext, old.nonce, old.secret_id, old.version, old.created_at)
        assert new.wrapped_key != old.wrapped_key


def _status(settings: Settings, **env: str) -> dict[str, Any]:
    out = _cli(settings, "keys", "status", "--json", **env)
    assert out.returncode == 0, out.stderr
    return dict(json.loads(out.stdout))


# the owner whose secrets a context's database holds, by the database's identity
_OWNERS: dict[int, Principal] = {}


def owner_of(ctx: Context) -> Principal:
    return _OWNERS[id(ctx.db)]


@pytest.fixture
def file_ctx(settings: Settings) -> Any:
    ctx = _context(settings)
    _OWNERS[id(ctx.db)] = _store(ctx)
    yield ctx
    del _OWNERS[id(ctx.db)]
    ctx.db.reset()
    ctx.db.dispose()


def test_key_file_rotation_makes_a_new_key_and_retires_the_old(
    file_ctx: Context, settings: Settings
) -> None:
    server = file_ctx  # a running server, its keyring loaded before the rotation
    old_key = server.envelope.provider.current_key_id
    before = _rows(server.db)
    assert _status(settings)["keys"] == [
        {"key_id": old_key, "data_keys": len(VALUES), "state": "current"}]

    out = _cli(settings, "keys", "rotate", "--batch-size", "3")
    assert out.returncode == 0, out.stderr
    keys, new_key = read_keyring(settings.key_file)
    assert list(keys) == [new_key] and new_key != old_key
    assert out.stdout.splitlines() == [
        f"new master key {new_key} (key file {settings.key_file}) is current; "
        f"re-wrapped {len(VALUES)} data key(s)",
        f"retired master key {old_key}",
    ]
    assert settings.key_file.stat().st_mode & 0o777 == 0o600
    after = _rows(server.db)
    _untouched(before, after)
    assert {r.key_id for r in after.values()} == {new_key}
    assert str(settings.key_file) not in out.stderr and not out.stderr

    # the running server follows the keyring file: it reads old values, wraps new ones
    assert _values(server) == VALUES
    assert server.envelope.provider.key_ids == [new_key]
    made = secrets.create(server, owner_of(server), SecretCreate(name="LATER", value="v"))
    with server.db.session() as s:
        assert repo.require(s, SecretVersion, "version", secret_id=made.id).key_id == new_key
    assert _status(settings)["keys"] == [
        {"key_id": new_key, "data_keys": len(VALUES) + 1, "state": "current"}]
    # and a restarted server, with only the new key, reads everything
    restarted = _context(settings)
    try:
        assert _values(restarted) == {**VALUES, "LATER": "v"}
    finally:
        restarted.db.dispose()


def test_a_crash_between_batches_loses_nothing_and_a_rerun_finishes(
    file_ctx: Context, settings: Settings
) -> None:
    old_key = file_ctx.envelope.provider.current_key_id
    before = _rows(file_ctx.db)

    class Crash(Exception):
        pass

    def crash(done: int) -> None:
        raise Crash(done)

    operator_db = Database(settings.database_url)
    try:
        with pytest.raises(Crash):
            secrets.rotate_master_key(
                operator_db, key_provider(settings), batch_size=2, after_batch=crash)
    finally:
        operator_db.dispose()

    # mid-rotation: both keys in the keyring, some data keys moved, every value readable
    keys, new_key = read_keyring(settings.key_file)
    assert set(keys) == {old_key, new_key}
    by_key = {r.key_id for r in _rows(file_ctx.db).values()}
    assert by_key == {old_key, new_key}
    status = {k["key_id"]: k for k in _status(settings)["keys"]}
    assert status[new_key] == {"key_id": new_key, "data_keys": 2, "state": "current"}
    assert status[old_key] == {"key_id": old_key, "data_keys": len(VALUES) - 2, "state": "older"}
    restarted = _context(settings)
    try:
        assert _values(restarted) == VALUES
    finally:
        restarted.db.dispose()

    # running it again finishes the same rotation: no third key
    out = _cli(settings, "keys", "rotate", "--batch-size", "2")
    assert out.returncode == 0, out.stderr
    assert out.stdout.splitlines()[0] == (
        f"master key {new_key} (key file {settings.key_file}) is current; "
        f"re-wrapped {len(VALUES) - 2} data key(s)")
    assert read_keyring(settings.key_file) == ({new_key: keys[new_key]}, new_key)
    _untouched(before, _rows(file_ctx.db))
    assert _values(file_ctx) == VALUES


def test_env_keys_old_key_still_decrypts_and_rotate_rewraps_under_the_current(
    settings: Settings,
) -> None:
    old, new = new_key_text(), new_key_text()
    first = _context(settings.with_overrides(master_key=old))
    try:
        _store(first)
        before = _rows(first.db)
    finally:
        first.db.dispose()

    # the new key alone cannot read the values, and rotating refuses, changing nothing
    alone = _context(settings.with_overrides(master_key=new))
    try:
        with pytest.raises(ConfigError, match="not available"):
            _values(alone)
    finally:
        alone.db.dispose()
    refused = _cli(settings, "keys", "rotate", SHELLWEGO_MASTER_KEY=new)
    assert refused.returncode == 1
    assert refused.stderr.startswith("Error: data keys are wrapped by master key(s) ")
    assert refused.stderr.count("\n") == 1 and old not in refused.stderr
    assert {r.id: r.wrapped_key for r in _rows(settings).values()} == {
        r.id: r.wrapped_key for r in before.values()}

    # the operator passes the old key too: the server reads everything at once
    rotating = settings.with_overrides(master_key=new, master_keys_old=(old,))
    server = _context(rotating)
    try:
        assert _values(server) == VALUES
    finally:
        server.db.dispose()
    env = {"SHELLWEGO_MASTER_KEY": new, "SHELLWEGO_MASTER_KEY_OLD": f" {old} ,"}
    out = _cli(settings, "keys", "rotate", **env)
    assert out.returncode == 0, out.stderr
    new_id = key_provider(settings.with_overrides(master_key=new)).current_key_id
    old_id = key_provider(settings.with_overrides(master_key=old)).current_key_id
    assert out.stdout.splitlines() == [
        f"master key {new_id} (SHELLWEGO_MASTER_KEY) is current; "
        f"re-wrapped {len(VALUES)} data key(s)",
        f"no data key is wrapped by {old_id} any more: stop passing SHELLWEGO_MASTER_KEY_OLD",
    ]
    for text in (out.stdout, out.stderr):
        assert old not in text and new not in text  # never key material
    assert _status(settings, **env)["keys"] == [
        {"key_id": new_id, "data_keys": len(VALUES), "state": "current"},
        {"key_id": old_id, "data_keys": 0, "state": "older"},
    ]
    _untouched(before, _rows(settings))
    # now the new key alone reads everything
    done = _context(settings.with_overrides(master_key=new))
    try:
        assert _values(done) == VALUES
    finally:
        done.db.reset()
        done.db.dispose()


def test_moving_from_a_key_file_to_an_env_key(file_ctx: Context, settings: Settings) -> None:
    before = _rows(file_ctx.db)
    env_key = new_key_text()
    env = {"SHELLWEGO_MASTER_KEY": env_key, "SHELLWEGO_MASTER_KEY_FILE": str(settings.key_file)}
    out = _cli(settings, "keys", "rotate", **env)
    assert out.returncode == 0, out.stderr
    assert f"re-wrapped {len(VALUES)} data key(s)" in out.stdout
    _untouched(before, _rows(file_ctx.db))
    assert out.stdout.splitlines()[-1].endswith("stop passing SHELLWEGO_MASTER_KEY_FILE")
    env_only = _context(settings.with_overrides(master_key=env_key))
    try:
        assert _values(env_only) == VALUES
    finally:
        env_only.db.dispose()


def test_status_names_keys_that_are_not_configured(file_ctx: Context, settings: Settings) -> None:
    old_key = file_ctx.envelope.provider.current_key_id
    other = new_key_text()
    out = _cli(settings, "keys", "status", SHELLWEGO_MASTER_KEY=other)
    assert out.returncode == 1
    assert f"{old_key}" in out.stdout and "missing" in out.stdout
    assert out.stderr == (
        "Error: some data keys are wrapped by a master key that is not configured\n")
    assert other not in out.stdout + out.stderr
    assert base64.b64decode(other) not in (out.stdout + out.stderr).encode()


def test_a_write_wrapped_under_the_old_key_just_before_rotation_is_not_lost(
    file_ctx: Context, settings: Settings
) -> None:
    """A server wrapped a data key under the old key, then the new key joined the keyring,
    then the server committed: the rotation waits out such writes and re-wraps them."""
    keys, old_key = read_keyring(settings.key_file)
    stale = dataclasses.replace(
        file_ctx,
        envelope=Envelope(StaticKeyProvider(base64.b64encode(keys[old_key]).decode())),
    )
    owner = owner_of(file_ctx)
    waits: list[float] = []

    def in_flight_write_lands(seconds: float) -> None:
        if not waits:
            secrets.rotate(stale, owner, "CANARY_0", None, "written-during-rotation")
        waits.append(seconds)
        time.sleep(seconds)

    operator_db = Database(settings.database_url)
    try:
        result = secrets.rotate_master_key(
            operator_db, key_provider(settings), settle_seconds=0.5, sleep=in_flight_write_lands
        )
    finally:
        operator_db.dispose()

    assert waits and 0 < waits[0] <= 0.5
    assert result.retired == [old_key]
    keys_after, new_key = read_keyring(settings.key_file)
    assert list(keys_after) == [new_key]
    assert {r.key_id for r in _rows(file_ctx.db).values()} == {new_key}
    restarted = _context(settings)  # only the new key from here on
    try:
        with restarted.db.session() as s:
            secret = repo.require(s, secrets.Secret, "secret", name="CANARY_0")
        _, value = secrets.reveal(restarted, owner, secret.id, None, 2)
        assert value == "written-during-rotation"
    finally:
        restarted.db.dispose()
