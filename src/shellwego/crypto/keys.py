"""Master-key providers: where the key that wraps every data key comes from.

A provider holds one *current* key (used to wrap new data keys) and may hold older
keys (still able to unwrap) until a rotation has re-wrapped everything.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import secrets
from pathlib import Path
from typing import Protocol

from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from shellwego.errors import ConfigError

KEY_BYTES = 32
NONCE_BYTES = 12


def key_id_of(key: bytes) -> str:
    return hashlib.sha256(b"shellwego-master-key:" + key).hexdigest()[:16]


class KeyProvider(Protocol):
    @property
    def current_key_id(self) -> str: ...

    def wrap(self, data_key: bytes) -> tuple[bytes, str]:
        """Encrypt a data key with the current master key → (wrapped, key id)."""
        ...

    def unwrap(self, wrapped: bytes, key_id: str) -> bytes: ...


class _Keyring:
    """Wrapping with AES-256-GCM under one of several master keys."""

    def __init__(self, keys: dict[str, bytes], current: str) -> None:
        if current not in keys:
            raise ConfigError("master keyring has no current key")
        self._keys = keys
        self._current = current

    @property
    def current_key_id(self) -> str:
        return self._current

    @property
    def key_ids(self) -> list[str]:
        return list(self._keys)

    def wrap(self, data_key: bytes) -> tuple[bytes, str]:
        nonce = os.urandom(NONCE_BYTES)
        sealed = AESGCM(self._keys[self._current]).encrypt(nonce, data_key, b"data-key")
        return nonce + sealed, self._current

    def unwrap(self, wrapped: bytes, key_id: str) -> bytes:
        key = self._keys.get(key_id)
        if key is None:
            raise ConfigError(f"master key {key_id} is not available to this server")
        return AESGCM(key).decrypt(wrapped[:NONCE_BYTES], wrapped[NONCE_BYTES:], b"data-key")


class FileKeyProvider(_Keyring):
    """A keyring file, created with mode 0600 on first start."""

    def __init__(self, path: Path) -> None:
        self.path = path
        if not path.exists():
            key = secrets.token_bytes(KEY_BYTES)
            self._write({key_id_of(key): key}, key_id_of(key))
        mode = path.stat().st_mode & 0o777
        if mode & 0o077:
            raise ConfigError(
                f"master key file {path} is readable by others (mode {mode:o}); "
                f"run: chmod 600 {path}"
            )
        data = json.loads(path.read_text())
        keys = {kid: base64.b64decode(value) for kid, value in data["keys"].items()}
        super().__init__(keys, data["current"])

    def _write(self, keys: dict[str, bytes], current: str) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        body = json.dumps(
            {"current": current, "keys": {k: base64.b64encode(v).decode() for k, v in keys.items()}}
        )
        tmp = self.path.with_suffix(".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as handle:
            handle.write(body)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, self.path)

    def add_key(self) -> str:
        """Generate a new current key; older keys stay until :meth:`retire_others`."""
        key = secrets.token_bytes(KEY_BYTES)
        kid = key_id_of(key)
        self._keys[kid] = key
        self._current = kid
        self._write(self._keys, kid)
        return kid

    def retire_others(self) -> None:
        """Drop every key but the current one (after all data keys were re-wrapped)."""
        self._keys = {self._current: self._keys[self._current]}
        self._write(self._keys, self._current)


class StaticKeyProvider(_Keyring):
    """A master key given directly, e.g. from ``SHELLWEGO_MASTER_KEY`` (base64, 32 bytes).

    Older keys may be listed too, so a rotation can proceed while both are known.
    """

    def __init__(self, current: str, *older: str) -> None:
        keys: dict[str, bytes] = {}
        for encoded in (current, *older):
            try:
                key = base64.b64decode(encoded, validate=True)
            except ValueError:
                raise ConfigError("master key is not valid base64") from None
            if len(key) != KEY_BYTES:
                raise ConfigError("master key must be 32 bytes (base64 of 32 random bytes)")
            keys[key_id_of(key)] = key
        decoded = base64.b64decode(current)
        super().__init__(keys, key_id_of(decoded))
