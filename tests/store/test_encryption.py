"""Secret values and config vars are encrypted at rest; the database never holds plaintext."""

from __future__ import annotations

import base64
import os
import shutil
import subprocess
from pathlib import Path

import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient

from shellwego.api import create_app
from shellwego.crypto import Envelope, FileKeyProvider, StaticKeyProvider
from shellwego.errors import ConfigError
from shellwego.services.context import Context

SECRET_VALUE = "plaintext-canary-7f3a9c"
CONFIG_VALUE = "config-canary-41d2e8"


def _store_values(ctx: Context) -> None:
    with TestClient(create_app(ctx)) as c:
        token = c.post("/v1/bootstrap", json={
            "user": {"email": "o@x.example", "password": "long enough password"},
            "organization": {"name": "X", "slug": "x"}}).json()["token"]["token"]
        h = {"Authorization": f"Bearer {token}"}
        assert c.post("/v1/apps", headers=h, json={"name": "api"}).status_code == 201
        assert c.post("/v1/secrets", headers=h, json={
            "name": "CANARY", "value": SECRET_VALUE, "app": "api"}).status_code == 201
        assert c.patch("/v1/apps/api/config", headers=h,
                       json={"CANARY_CONFIG": CONFIG_VALUE}).status_code == 200
        assert c.get("/v1/apps/api/config", headers=h).json()["CANARY_CONFIG"] == CONFIG_VALUE


def _raw_bytes(ctx: Context, tmp_path: Path) -> bytes:
    url = sa.engine.make_url(ctx.db.url)
    if ctx.db.backend == "sqlite":
        ctx.db.dispose()
        files = [Path(str(url.database) + suffix) for suffix in ("", "-wal", "-shm")]
        return b"".join(f.read_bytes() for f in files if f.exists())
    pg_dump = shutil.which("pg_dump")
    assert pg_dump, "pg_dump is needed to inspect the PostgreSQL dump"
    out = tmp_path / "dump.sql"
    subprocess.run([pg_dump, "-h", url.host or "127.0.0.1", "-p", str(url.port or 5432),
                    "-U", url.username or "postgres", "-f", str(out), str(url.database)],
                   check=True, timeout=120)
    return out.read_bytes()


def test_database_never_holds_plaintext(ctx: Context, tmp_path: Path) -> None:
    _store_values(ctx)
    raw = _raw_bytes(ctx, tmp_path)
    assert b"CANARY" in raw, "the dump must contain the secret's name (sanity check)"
    for value in (SECRET_VALUE, CONFIG_VALUE):
        assert value.encode() not in raw
        assert base64.b64encode(value.encode()) not in raw
        assert value.encode().hex().encode() not in raw


def test_key_file_is_created_private(tmp_path: Path) -> None:
    path = tmp_path / "keys" / "master.key"
    FileKeyProvider(path)
    assert path.stat().st_mode & 0o777 == 0o600
    os.chmod(path, 0o644)
    with pytest.raises(ConfigError, match="chmod 600"):
        FileKeyProvider(path)


def test_static_key_must_be_32_bytes() -> None:
    with pytest.raises(ConfigError, match="32 bytes"):
        StaticKeyProvider(base64.b64encode(b"short").decode())
    key = base64.b64encode(os.urandom(32)).decode()
    envelope = Envelope(StaticKeyProvider(key))
    sealed = envelope.seal(b"hello", b"ctx")
    assert envelope.open(sealed, b"ctx") == b"hello"
    with pytest.raises(ConfigError):
        envelope.open(sealed, b"other context")


def test_a_damaged_keyring_or_bad_old_key_is_refused_by_name(tmp_path: Path) -> None:
    path = tmp_path / "master.key"
    path.write_text("not json")
    path.chmod(0o600)
    with pytest.raises(ConfigError, match="is not a ShellWeGo keyring"):
        FileKeyProvider(path)
    with pytest.raises(ConfigError, match="SHELLWEGO_MASTER_KEY_OLD is not valid base64"):
        StaticKeyProvider(base64.b64encode(os.urandom(32)).decode(), "%%%")
    with pytest.raises(ConfigError, match="no master key file"):
        FileKeyProvider(tmp_path / "absent.key", create=False)
    assert not (tmp_path / "absent.key").exists()
