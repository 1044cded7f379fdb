"""Request fields take the JSON types their schema names, and no others.

pydantic's lax mode converts ``"5"`` and ``true`` into integers and ``1`` into ``True``;
its strict mode refuses ``5.0``, which JSON Schema counts as an integer. The API's
schemas are the contract, so the shapes it accepts check each value's JSON kind
against the field's declared type first (:func:`json_kinds_of`), then let pydantic
convert as usual. Fields that declare their own conversion (a ``BeforeValidator``, such
as memory sizes given as ``"512m"``) are left to it.
"""

from __future__ import annotations

import datetime as dt
import enum
import types
from collections.abc import Mapping, Sequence
from typing import Annotated, Any, Literal, Union, get_args, get_origin

from pydantic import BaseModel, BeforeValidator, PlainValidator, ValidationInfo, WrapValidator
from pydantic_core import PydanticCustomError

# JSON Schema's kinds of value, as ``type`` names them
Kinds = frozenset[str]
ANY: Kinds = frozenset({"null", "boolean", "integer", "number", "string", "array", "object"})
_SCALARS: dict[type, Kinds] = {
    type(None): frozenset({"null"}),
    bool: frozenset({"boolean"}),
    int: frozenset({"integer"}),
    float: frozenset({"integer", "number"}),
    str: frozenset({"string"}),
    dt.datetime: frozenset({"string"}),
    dt.date: frozenset({"string"}),
}
_CONVERTERS = (BeforeValidator, PlainValidator, WrapValidator)


def kind(value: Any) -> str:
    """The JSON kind of a value as ``json.loads`` returns it."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "integer" if value.is_integer() else "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list | tuple):
        return "array"
    if isinstance(value, dict):
        return "object"
    return "python"  # built in code, not parsed from JSON: not ours to judge


def _arms(annotation: Any) -> tuple[Any, ...]:
    """The alternatives of a union (the annotation itself otherwise), unwrapped."""
    origin = get_origin(annotation)
    if origin is Annotated:
        return _arms(get_args(annotation)[0])
    if origin is Union or origin is types.UnionType:
        return tuple(arm for arg in get_args(annotation) for arm in _arms(arg))
    return (annotation,)


def json_kinds_of(annotation: Any) -> Kinds:
    """The JSON kinds a value of ``annotation`` may have (all of them when unknown)."""
    kinds: set[str] = set()
    for arm in _arms(annotation):
        origin = get_origin(arm) or arm
        if origin is Literal:
            kinds.update(kind(v.value if isinstance(v, enum.Enum) else v) for v in get_args(arm))
        elif origin in _SCALARS:
            kinds.update(_SCALARS[origin])
        elif isinstance(origin, type) and issubclass(origin, enum.Enum):
            kinds.update(kind(member.value) for member in origin)
        elif isinstance(origin, type) and issubclass(origin, str):
            kinds.add("string")
        elif origin in (list, tuple, set, frozenset) or origin is Sequence:
            kinds.add("array")
        elif origin in (dict, Mapping) or (
            isinstance(origin, type) and issubclass(origin, BaseModel)
        ):
            kinds.add("object")
        else:
            return ANY
    return frozenset(kinds)


def mismatch(annotation: Any, value: Any) -> str | None:
    """Why ``value`` does not have a JSON kind ``annotation`` takes (None when it does),
    looking into lists and objects; models check their own fields."""
    found = kind(value)
    allowed = json_kinds_of(annotation)
    if found != "python" and found not in allowed:
        return f"expected {' or '.join(sorted(allowed))}, got {found}"
    for arm in _arms(annotation):
        origin, args = get_origin(arm), get_args(arm)
        if found == "array" and origin in (list, tuple, set, frozenset) and args:
            items = args if origin is tuple and Ellipsis not in args else (args[0],) * len(value)
            for item_type, item in zip(items, value, strict=False):
                if reason := mismatch(item_type, item):
                    return reason
            return None
        if found == "object" and (origin is dict or origin is Mapping) and len(args) == 2:
            for item in value.values():
                if reason := mismatch(args[1], item):
                    return reason
            return None
    return None


def _converts(metadata: Sequence[Any]) -> bool:
    return any(isinstance(m, _CONVERTERS) for m in metadata)


def check_json_kinds(cls: type[BaseModel], value: Any, info: ValidationInfo) -> Any:
    """A ``mode="before"`` validator for every field of a model (``field_validator("*")``)."""
    field = cls.model_fields.get(info.field_name or "")
    if field is None or _converts(field.metadata):
        return value
    reason = mismatch(field.annotation, value)
    if reason is not None:
        raise PydanticCustomError("json_type", "wrong JSON type: {reason}", {"reason": reason})
    return value


def json_kinds(annotation: Any) -> BeforeValidator:
    """The same check for a type used outside a model (a request body that is a dict)."""

    def check(value: Any) -> Any:
        reason = mismatch(annotation, value)
        if reason is not None:
            raise PydanticCustomError("json_type", "wrong JSON type: {reason}", {"reason": reason})
        return value

    return BeforeValidator(check)
