"""The list envelope: ``{"items": [...], "next_cursor": "…"}``."""

from __future__ import annotations

from typing import Generic, TypeVar

from pydantic import BaseModel

from shellwego.store.repository import Page

T = TypeVar("T")


class PageOut(BaseModel, Generic[T]):
    items: list[T]
    next_cursor: str | None = None


def out(page: Page[T]) -> PageOut[T]:  # type: ignore[type-var]
    return PageOut[T](items=page.items, next_cursor=page.next_cursor)
