"""Shared fixtures: real SQLite and real PostgreSQL, parameterised by backend.

PostgreSQL is mandatory: when it cannot be reached the tests fail, they never skip.
Set ``SHELLWEGO_TEST_PG_URL`` to point at a server (default: the local one).
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from shellwego.clock import SystemClock
from shellwego.services.bootstrap import build_context
from shellwego.services.context import Context
from shellwego.settings import Settings
from shellwego.store import Database

PG_ADMIN_URL = os.environ.get(
    "SHELLWEGO_TEST_PG_URL", "postgresql://postgres@127.0.0.1:5432/postgres"
)


def _pg_server_url(name: str) -> str:
    base, _, _ = PG_ADMIN_URL.rpartition("/")
    return f"{base}/{name}"


@pytest.fixture(scope="session")
def pg_database() -> Iterator[str]:
    """A fresh PostgreSQL database for this test run, dropped afterwards."""
    name = f"shellwego_test_{uuid.uuid4().hex[:10]}"
    try:
        admin = psycopg.connect(PG_ADMIN_URL, autocommit=True, connect_timeout=5)
    except psycopg.OperationalError as exc:  # pragma: no cover - CI must have PostgreSQL
        pytest.fail(
            f"PostgreSQL is required for the tests and is not reachable at {PG_ADMIN_URL}: {exc}"
        )
    with admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    url = _pg_server_url(name)
    db = Database(url)
    db.migrate()
    db.dispose()
    yield url
    with psycopg.connect(PG_ADMIN_URL, autocommit=True) as admin:
        admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(scope="session")
def sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("sqlite") / "template.db"
    db = Database(f"sqlite:///{path}")
    db.migrate()
    db.dispose()
    return path


@pytest.fixture(params=["sqlite", "postgres"])
def backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def database_url(backend: str, request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if backend == "postgres":
        return str(request.getfixturevalue("pg_database"))
    template: Path = request.getfixturevalue("sqlite_template")
    target = tmp_path / "shellwego.db"
    target.write_bytes(template.read_bytes())
    return f"sqlite:///{target}"


@pytest.fixture
def settings(tmp_path: Path, database_url: str) -> Settings:
    return Settings.from_env({}, data_dir=tmp_path / "data", database_url=database_url)


@pytest.fixture
def ctx(settings: Settings) -> Iterator[Context]:
    context = build_context(settings, clock=SystemClock(), migrate=False)
    context.db.reset()
    yield context
    context.db.reset()
    context.db.dispose()


@pytest.fixture(scope="session")
def s3_endpoint() -> Iterator[str]:
    """A local S3 server (moto's) on a port of its own, for the shared artifact store."""
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    yield f"http://{host}:{port}"
    server.stop()


@pytest.fixture
def s3_bucket(s3_endpoint: str, monkeypatch: pytest.MonkeyPatch) -> str:
    """A fresh bucket on the local S3 server, with credentials it accepts in the
    environment (where the store reads them)."""
    import boto3

    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.delenv("AWS_PROFILE", raising=False)
    bucket = f"swg-{uuid.uuid4().hex[:12]}"
    client = boto3.client("s3", endpoint_url=s3_endpoint, region_name="us-east-1")
    client.create_bucket(Bucket=bucket)
    return bucket
