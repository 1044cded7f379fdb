"""Encryption at rest: envelope encryption and master-key providers."""

from .envelope import Envelope, Sealed
from .keys import FileKeyProvider, KeyProvider, StaticKeyProvider

__all__ = ["Envelope", "FileKeyProvider", "KeyProvider", "Sealed", "StaticKeyProvider"]
