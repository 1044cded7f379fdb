"""Scalar types entity fields share: integers bounded by the column that holds them,
timestamps given as RFC 3339 strings, email addresses as the API accepts them.

A bound belongs to the field's declaration, so the API schema states it and a number
past it is refused as invalid input (422) before anything reads or writes the database:
``sa.Integer`` columns are 32-bit on PostgreSQL; wider quantities stop at 2**53 - 1, the
largest integer every JSON client reads exactly (RFC 7493), well inside a BIGINT.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Annotated, Any

from pydantic import AfterValidator, BeforeValidator, EmailStr, Field
from pydantic_core import PydanticCustomError

INT32_MAX = 2**31 - 1
JSON_INT_MAX = 2**53 - 1

# counters, indexes, process ids: an INTEGER column
Count = Annotated[int, Field(ge=0, le=INT32_MAX)]
# release and secret version numbers: v1, v2, …
Version = Annotated[int, Field(ge=1, le=INT32_MAX)]
# a process's exit status (negative: killed by that signal)
ExitCode = Annotated[int, Field(ge=-(INT32_MAX + 1), le=INT32_MAX)]
# a TCP port; 0 while none is assigned
Port = Annotated[int, Field(ge=0, le=65535)]
HttpStatus = Annotated[int, Field(ge=100, le=599)]
# sizes in bytes and other quantities too big for an INTEGER (a BIGINT column or JSON)
Quantity = Annotated[int, Field(ge=0, le=JSON_INT_MAX)]

_RFC3339 = re.compile(
    r"^\d{4}-\d{2}-\d{2}[Tt ]\d{2}:\d{2}:\d{2}(\.\d+)?([Zz]|[+-]\d{2}:\d{2})$"
)


def _date_time_string(value: Any) -> Any:
    """Refuse anything but a datetime or an RFC 3339 date-time with its offset: pydantic
    would otherwise read a number (or a string of digits) as seconds since 1970."""
    if isinstance(value, datetime) or (isinstance(value, str) and _RFC3339.match(value)):
        return value
    raise PydanticCustomError(
        "datetime_format", "give a date-time with its offset, such as 2030-01-31T12:00:00Z"
    )


def _in_utc(value: datetime) -> datetime:
    if value.tzinfo is None:
        raise PydanticCustomError("timezone_aware", "give the date-time's offset, such as Z")
    try:
        return value.astimezone(UTC)
    except OverflowError:
        raise PydanticCustomError("datetime_range", "the date-time is out of range") from None


# A point in time as clients give it: RFC 3339 with an offset; aware UTC in Python.
Timestamp = Annotated[datetime, BeforeValidator(_date_time_string), AfterValidator(_in_utc)]

# email-validator refuses special-use domain names (RFC 6761 and others) that the JSON
# Schema ``email`` format admits; the schema says so with this pattern.
SPECIAL_USE_DOMAINS = ("arpa", "invalid", "local", "localhost", "onion", "test")


def _any_case(word: str) -> str:
    # ECMA-262 patterns (what JSON Schema uses) have no inline case-insensitive flag
    return "".join(f"[{c}{c.upper()}]" for c in word)


_NOT_SPECIAL_USE = (
    r"^(?!.*@(?:[^@]*\.)?(?:" + "|".join(map(_any_case, SPECIAL_USE_DOMAINS)) + r")\.?$)"
)
Email = Annotated[EmailStr, Field(json_schema_extra={"pattern": _NOT_SPECIAL_USE})]
