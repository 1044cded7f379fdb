"""How Alembic writes the project's column types into migration files."""

from __future__ import annotations

from typing import Any

from sqlmodel.sql.sqltypes import AutoString

from shellwego.models.columns import CIText, EnumText, PydanticJSON, UTCDateTime


def render_item(kind: str, obj: Any, autogen_context: Any) -> str | bool:
    if kind != "type":
        return False
    if isinstance(obj, CIText):  # inline, so a migration never imports a live model type
        return 'sa.String(collation="NOCASE").with_variant(postgresql.CITEXT(), "postgresql")'
    if isinstance(obj, PydanticJSON):
        return 'sa.JSON().with_variant(postgresql.JSONB(), "postgresql")'
    if isinstance(obj, UTCDateTime):
        return "sa.DateTime(timezone=True)"
    if isinstance(obj, EnumText):
        return "sa.String(length=20)"
    if isinstance(obj, AutoString):
        return f"sa.String(length={obj.length})" if obj.length else "sa.String()"
    return False
