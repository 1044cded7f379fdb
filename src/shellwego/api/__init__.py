"""The REST API under /v1."""

from .app import create_app

__all__ = ["create_app"]
