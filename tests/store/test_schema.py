"""One schema on both backends, produced by the migrations and matching the models."""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlmodel import SQLModel

from shellwego.store import Database


def _kind(column_type: Any) -> str:
    """Reduce a reflected type to what both backends must agree on."""
    name = type(column_type).__name__.upper()
    if name in ("CITEXT",) or getattr(column_type, "collation", None) == "NOCASE":
        return "ci-text"
    if name in ("JSON", "JSONB"):
        return "json"
    if name in ("VARCHAR", "STRING"):
        return f"varchar({column_type.length})" if column_type.length else "text"
    if name == "TEXT":
        return "text"
    if name in ("DATETIME", "TIMESTAMP"):
        return "timestamp"
    if name in ("BLOB", "BYTEA", "LARGEBINARY"):
        return "bytes"
    if name in ("BOOLEAN",):
        return "bool"
    if name in ("INTEGER", "BIGINT"):
        return "int"
    return name


def _nocase_columns(db: Database, table: str) -> set[str]:
    """SQLite's reflection drops collations: read them from the table's DDL."""
    if db.backend != "sqlite":
        return set()
    with db.engine.connect() as conn:
        ddl = conn.execute(sa.text("select sql from sqlite_master where name = :t"),
                           {"t": table}).scalar_one()
    return {line.split()[0] for line in ddl.splitlines() if 'COLLATE "NOCASE"' in line}


def _schema(db: Database) -> dict[str, Any]:
    inspector = sa.inspect(db.engine)
    tables = {}
    for table in sorted(inspector.get_table_names()):
        if table == "alembic_version":
            continue
        nocase = _nocase_columns(db, table)
        tables[table] = {
            "columns": {c["name"]: ("ci-text" if c["name"] in nocase else _kind(c["type"]),
                                    c["nullable"])
                        for c in inspector.get_columns(table)},
            "pk": inspector.get_pk_constraint(table)["constrained_columns"],
            "fks": sorted((tuple(f["constrained_columns"]), f["referred_table"],
                           (f.get("options") or {}).get("ondelete"))
                          for f in inspector.get_foreign_keys(table)),
            # PostgreSQL also reports each unique constraint as a unique index
            "unique": sorted(
                {tuple(u["column_names"]) for u in inspector.get_unique_constraints(table)}
                | {tuple(i["column_names"]) for i in inspector.get_indexes(table) if i["unique"]}
            ),
            "indexes": sorted(tuple(i["column_names"]) for i in inspector.get_indexes(table)
                              if not i["unique"]),
        }
    return tables


def test_sqlite_and_postgres_schemas_are_the_same(sqlite_template: Any, pg_database: str) -> None:
    lite = Database(f"sqlite:///{sqlite_template}")
    pg = Database(pg_database)
    try:
        a, b = _schema(lite), _schema(pg)
        assert set(a) == set(b)
        for table in a:
            assert a[table] == b[table], table
        assert len(a) >= 20
        # the rules that matter, checked explicitly
        assert a["apps"]["columns"]["name"][0] == "ci-text"
        assert a["users"]["columns"]["email"][0] == "ci-text"
        assert a["domains"]["columns"]["hostname"][0] == "ci-text"
        assert a["organizations"]["columns"]["slug"][0] == "ci-text"
        assert a["apps"]["columns"]["id"][0] == "varchar(26)"
        assert a["apps"]["columns"]["formation"][0] == "json"
        assert a["apps"]["columns"]["status"][0] == "varchar(20)"
        assert ("name",) in a["apps"]["unique"]
    finally:
        lite.dispose()
        pg.dispose()


def test_postgres_uses_citext_and_jsonb(pg_database: str) -> None:
    pg = Database(pg_database)
    try:
        with pg.engine.connect() as conn:
            rows = dict(conn.execute(sa.text(
                "select column_name, data_type || ':' || udt_name from information_schema.columns "
                "where table_name = 'apps' and column_name in ('name', 'formation', 'created_at')"
            )).all())
        assert rows["name"].endswith(":citext")
        assert rows["formation"].endswith(":jsonb")
        assert rows["created_at"].startswith("timestamp with time zone")
    finally:
        pg.dispose()


def test_migrations_match_the_models(database_url: str) -> None:
    db = Database(database_url)
    try:
        db.migrate()  # idempotent on an up-to-date database
        with db.engine.connect() as conn:
            context = MigrationContext.configure(conn, opts={"compare_type": True})
            assert compare_metadata(context, SQLModel.metadata) == []
        assert db.current_revision() is not None
    finally:
        db.dispose()
