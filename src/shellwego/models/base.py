"""The shared parts of every entity and the derivation of API shapes."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal, TypeVar, get_args

from pydantic import BaseModel, ConfigDict, create_model, field_validator
from pydantic.fields import FieldInfo
from pydantic_core import PydanticCustomError
from sqlmodel import Field, SQLModel

from .columns import UTCDateTime
from .jsonkinds import check_json_kinds

ID_LENGTH = 26

# Named constraints, so migrations can alter them the same way on both backends.
SQLModel.metadata.naming_convention = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class Entity(SQLModel):
    """Primary key and timestamps: a ULID and aware UTC times, all set by code."""

    id: str = Field(primary_key=True, max_length=ID_LENGTH)
    created_at: datetime = Field(sa_type=UTCDateTime, nullable=False)
    updated_at: datetime = Field(sa_type=UTCDateTime, nullable=False)


OnDelete = Literal["CASCADE", "SET NULL", "RESTRICT"]


def id_ref(target: str, *, nullable: bool = False, ondelete: OnDelete = "CASCADE") -> Any:
    """A foreign key to ``target.id`` (indexed)."""
    return Field(
        default=None if nullable else ...,
        foreign_key=f"{target}.id",
        max_length=ID_LENGTH,
        index=True,
        nullable=nullable,
        ondelete=ondelete,
    )


class Input(SQLModel):
    """Shapes the API accepts: unknown fields are refused, and each field takes the JSON
    types its schema names (see jsonkinds.py)."""

    model_config = ConfigDict(extra="forbid")  # type: ignore[assignment]
    json_types = field_validator("*", mode="before")(check_json_kinds)


class Message(BaseModel):
    """Shapes other programs send (the agent protocol): unknown fields are ignored, so an
    agent may be newer than its server; each field takes its schema's JSON types."""

    json_types = field_validator("*", mode="before")(check_json_kinds)


M = TypeVar("M", bound=SQLModel)


def accepts_none(annotation: Any) -> bool:
    """Whether a field of this type may hold ``None``."""
    return annotation is Any or annotation is None or type(None) in get_args(annotation)


def _refuse_null(value: Any) -> Any:
    if value is None:
        raise PydanticCustomError(
            "null_not_allowed", "may not be null; leave the field out instead"
        )
    return value


def partial(model: type[BaseModel], name: str) -> type[Input]:
    """The Update shape of ``model``: every field may be left out, unknown fields refused.

    A field left out keeps its value. An explicit ``null`` is accepted only where the
    entity's field is itself nullable; elsewhere it is refused (422), so a PATCH can never
    write ``None`` into a required column. Derived from the one definition, so an Update
    can never drift from its entity.
    """
    fields: dict[str, Any] = {}
    required: list[str] = []
    for field_name, info in model.model_fields.items():
        optional = FieldInfo.merge_field_infos(info, default=None)
        optional.default_factory = None
        fields[field_name] = (info.annotation, optional)
        if not accepts_none(info.annotation):
            required.append(field_name)
    validators = (
        {"refuse_null": field_validator(*required, mode="before")(_refuse_null)} if required else {}
    )
    return create_model(name, __base__=Input, __validators__=validators, **fields)
