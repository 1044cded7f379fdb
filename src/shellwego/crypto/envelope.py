"""Envelope encryption: AES-256-GCM under a fresh data key per value.

Each value gets its own random 256-bit data key; the data key is wrapped by the
master key of a :class:`~shellwego.crypto.keys.KeyProvider`. Rotating the master key
re-wraps data keys and never touches the ciphertext of values.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from shellwego.errors import ConfigError

from .keys import KEY_BYTES, NONCE_BYTES, KeyProvider


@dataclass(frozen=True, slots=True)
class Sealed:
    ciphertext: bytes
    nonce: bytes
    wrapped_key: bytes
    key_id: str


class Envelope:
    def __init__(self, provider: KeyProvider) -> None:
        self.provider = provider

    def seal(self, plaintext: bytes, context: bytes) -> Sealed:
        """Encrypt ``plaintext``; ``context`` (e.g. the secret version id) is authenticated."""
        data_key = AESGCM.generate_key(bit_length=KEY_BYTES * 8)
        nonce = os.urandom(NONCE_BYTES)
        ciphertext = AESGCM(data_key).encrypt(nonce, plaintext, context)
        wrapped, key_id = self.provider.wrap(data_key)
        return Sealed(ciphertext=ciphertext, nonce=nonce, wrapped_key=wrapped, key_id=key_id)

    def open(self, sealed: Sealed, context: bytes) -> bytes:
        data_key = self.provider.unwrap(sealed.wrapped_key, sealed.key_id)
        try:
            return AESGCM(data_key).decrypt(sealed.nonce, sealed.ciphertext, context)
        except InvalidTag:
            raise ConfigError(
                "stored value failed authentication (wrong key or tampering)"
            ) from None

    def rewrap(self, wrapped_key: bytes, key_id: str) -> tuple[bytes, str]:
        """Re-wrap a data key under the current master key."""
        return self.provider.wrap(self.provider.unwrap(wrapped_key, key_id))
