"""Persistence: the database service, repositories and migrations (the only SQL)."""

from .database import Database, after_commit

__all__ = ["Database", "after_commit"]
