"""Alembic environment: the models' metadata is the source of truth."""

from __future__ import annotations

from typing import Any

from alembic import context
from sqlmodel import SQLModel

from shellwego.store.database import make_engine
from shellwego.store.rendering import render_item

config = context.config
target_metadata = SQLModel.metadata


def run_migrations() -> None:
    engine = config.attributes.get("engine") or make_engine(
        config.get_main_option("sqlalchemy.url") or ""
    )
    with engine.connect() as connection:
        options: dict[str, Any] = {
            "connection": connection,
            "target_metadata": target_metadata,
            "render_as_batch": connection.dialect.name == "sqlite",
            "render_item": render_item,
            "compare_type": True,
        }
        context.configure(**options)
        with context.begin_transaction():
            context.run_migrations()
        connection.commit()


run_migrations()
