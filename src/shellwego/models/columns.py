"""Column types shared by every entity.

Decisions taken once for the whole schema:

* ids are ULIDs, 26 characters of Crockford base32, generated in Python;
* timestamps are timezone-aware UTC (SQLite drops the offset; :class:`UTCDateTime`
  re-attaches it on read and refuses naive datetimes on write);
* value objects are JSON (JSONB on PostgreSQL), validated through pydantic on load;
* names people type are unique case-insensitively: ``CITEXT`` on PostgreSQL,
  ``COLLATE NOCASE`` on SQLite (:class:`CIText`), so queries need no ``lower()``;
* enums are short strings (``VARCHAR(20)``), never native database enums.
"""

from __future__ import annotations

import enum
import os
import threading
import time
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from pydantic import TypeAdapter
from sqlalchemy.dialects import postgresql
from sqlalchemy.engine import Dialect

_CROCKFORD = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
_id_lock = threading.Lock()
_last: list[int] = [0, 0]  # last millisecond, last 80-bit random part


def new_id() -> str:
    """A new ULID as 26-character text, sortable by creation time.

    Monotonic within a process: ids made in the same millisecond increase, so cursors
    over rows such as log lines never skip one.
    """
    with _id_lock:
        ms = time.time_ns() // 1_000_000
        if ms <= _last[0]:
            ms = _last[0]
            rand = _last[1] + 1
        else:
            rand = int.from_bytes(os.urandom(10), "big") >> 1  # room to increment
        _last[0], _last[1] = ms, rand
    value = (ms << 80) | rand
    chars = []
    for _ in range(26):
        chars.append(_CROCKFORD[value & 31])
        value >>= 5
    return "".join(reversed(chars))


class UTCDateTime(sa.types.TypeDecorator[datetime]):
    """``TIMESTAMP WITH TIME ZONE``; always aware UTC in Python."""

    impl = sa.DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime refused: timestamps must be timezone-aware UTC")
        return value.astimezone(UTC)

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value.astimezone(UTC)


class CIText(sa.types.TypeDecorator[str]):
    """Case-insensitive text: CITEXT on PostgreSQL, TEXT COLLATE NOCASE on SQLite."""

    impl = sa.String
    cache_ok = True

    def load_dialect_impl(self, dialect: Dialect) -> sa.types.TypeEngine[Any]:
        if dialect.name == "postgresql":
            return dialect.type_descriptor(postgresql.CITEXT())
        return dialect.type_descriptor(sa.String(collation="NOCASE"))


class PydanticJSON(sa.types.TypeDecorator[Any]):
    """A JSON(B) column holding a value object, validated by pydantic on load."""

    impl = sa.JSON
    cache_ok = True

    def __init__(self, python_type: Any) -> None:
        super().__init__()
        self.value_type = python_type
        self._adapter: TypeAdapter[Any] = TypeAdapter(python_type)

    def load_dialect_impl(self, dialect: Dialect) -> sa.types.TypeEngine[Any]:
        if dialect.name == "postgresql":
            return dialect.type_descriptor(postgresql.JSONB())
        return dialect.type_descriptor(sa.JSON())

    def process_bind_param(self, value: Any, dialect: Dialect) -> Any:
        if value is None:
            return None
        return self._adapter.dump_python(self._adapter.validate_python(value), mode="json")

    def process_result_value(self, value: Any, dialect: Dialect) -> Any:
        if value is None:
            return None
        return self._adapter.validate_python(value)

    def coerce_compared_value(self, op: Any, value: Any) -> sa.types.TypeEngine[Any]:
        return sa.JSON()


ENUM_LENGTH = 20


class EnumText(sa.types.TypeDecorator[Any]):
    """An enum stored as its short string value (``VARCHAR(20)``), never a native enum,
    so adding a value needs no ``ALTER TYPE``; read back as the enum member."""

    impl = sa.String(ENUM_LENGTH)
    cache_ok = True

    def __init__(self, enum_type: type[enum.StrEnum]) -> None:
        super().__init__()
        self.enum_type = enum_type

    def process_bind_param(self, value: Any, dialect: Dialect) -> str | None:
        return None if value is None else self.enum_type(value).value

    def process_result_value(self, value: Any, dialect: Dialect) -> Any:
        return None if value is None else self.enum_type(value)
