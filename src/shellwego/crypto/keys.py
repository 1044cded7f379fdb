"""Master-key providers: where the key that wraps every data key comes from.

A provider holds one *current* key (used to wrap new data keys) and may hold older
keys that can still unwrap, until a rotation has re-wrapped every data key under the
current one. Two providers exist:

* :class:`FileKeyProvider` owns a keyring file (created 0600 on first start). It can
  make a new key and, once nothing is wrapped by the others, retire them. A running
  server re-reads the file when it changes, so a rotation done by another process
  (``shellwego keys rotate``) takes effect without a restart.
* :class:`StaticKeyProvider` takes its keys from the environment
  (``SHELLWEGO_MASTER_KEY`` and, while rotating, ``SHELLWEGO_MASTER_KEY_OLD``); the
  operator makes and drops keys, the platform only re-wraps.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import secrets
import threading
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Protocol

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from shellwego.errors import ConfigError

KEY_BYTES = 32
NONCE_BYTES = 12
_WRAP_CONTEXT = b"data-key"


def key_id_of(key: bytes) -> str:
    """A short public name for a key (a hash prefix): safe to log and to store."""
    return hashlib.sha256(b"shellwego-master-key:" + key).hexdigest()[:16]


def decode_key(encoded: str, what: str = "master key") -> bytes:
    """A 32-byte key from its base64 text, or a :class:`ConfigError` naming ``what``."""
    try:
        key = base64.b64decode(encoded.strip(), validate=True)
    except ValueError:
        raise ConfigError(f"{what} is not valid base64") from None
    if len(key) != KEY_BYTES:
        raise ConfigError(f"{what} must be 32 bytes (base64 of 32 random bytes)")
    return key


def new_key_text() -> str:
    """A fresh random master key as base64 text (for ``SHELLWEGO_MASTER_KEY``)."""
    return base64.b64encode(secrets.token_bytes(KEY_BYTES)).decode()


class KeyProvider(Protocol):
    @property
    def current_key_id(self) -> str: ...

    @property
    def key_ids(self) -> list[str]:
        """Every key this provider can unwrap with, the current one first."""
        ...

    def wrap(self, data_key: bytes) -> tuple[bytes, str]:
        """Encrypt a data key with the current master key → (wrapped, key id)."""
        ...

    def unwrap(self, wrapped: bytes, key_id: str) -> bytes: ...

    def begin_rotation(self) -> bool:
        """Make a new current key where this provider owns its keys.

        True when a key was made; False when the current key stays (keys from the
        environment, or an unfinished rotation being resumed).
        """
        ...

    def retire_others(self) -> list[str]:
        """Forget the older keys this provider owns (once nothing is wrapped by them)."""
        ...

    def changed_at(self) -> float:
        """When the current key became current (epoch seconds; 0 when it was given)."""
        ...


class _Keyring:
    """Wrapping with AES-256-GCM under one of several master keys."""

    def __init__(
        self, keys: Mapping[str, bytes], current: str, older: Mapping[str, bytes] | None = None
    ) -> None:
        if current not in keys:
            raise ConfigError("master keyring has no current key")
        self._keys = dict(keys)
        self._current = current
        # unwrap-only keys given by the operator (never written anywhere)
        self._older = {k: v for k, v in (older or {}).items() if k not in self._keys}

    @property
    def current_key_id(self) -> str:
        return self._current

    @property
    def key_ids(self) -> list[str]:
        others = [k for k in (*self._keys, *self._older) if k != self._current]
        return [self._current, *others]

    def wrap(self, data_key: bytes) -> tuple[bytes, str]:
        nonce = os.urandom(NONCE_BYTES)
        sealed = AESGCM(self._keys[self._current]).encrypt(nonce, data_key, _WRAP_CONTEXT)
        return nonce + sealed, self._current

    def unwrap(self, wrapped: bytes, key_id: str) -> bytes:
        key = self._keys.get(key_id) or self._older.get(key_id)
        if key is None:
            raise ConfigError(
                f"master key {key_id} is not available to this server; "
                "give it in SHELLWEGO_MASTER_KEY_OLD"
            )
        try:
            return AESGCM(key).decrypt(wrapped[:NONCE_BYTES], wrapped[NONCE_BYTES:], _WRAP_CONTEXT)
        except InvalidTag:
            raise ConfigError(f"data key failed authentication under master key {key_id}") from None


def _keys_by_id(encoded: Iterable[str], what: str) -> dict[str, bytes]:
    keys = {}
    for text in encoded:
        key = decode_key(text, what)
        keys[key_id_of(key)] = key
    return keys


def read_keyring(path: Path) -> tuple[dict[str, bytes], str]:
    """The keys and the current key id of a keyring file; refuses a file others can read."""
    mode = path.stat().st_mode & 0o777
    if mode & 0o077:
        raise ConfigError(
            f"master key file {path} is readable by others (mode {mode:o}); run: chmod 600 {path}"
        )
    try:
        data = json.loads(path.read_text())
        keys = {kid: base64.b64decode(value, validate=True) for kid, value in data["keys"].items()}
        current = str(data["current"])
    except (ValueError, KeyError, TypeError, AttributeError):
        raise ConfigError(f"master key file {path} is not a ShellWeGo keyring") from None
    for kid, key in keys.items():
        if len(key) != KEY_BYTES or key_id_of(key) != kid:
            raise ConfigError(f"master key file {path} holds a damaged key ({kid})")
    if current not in keys:
        raise ConfigError(f"master key file {path} has no current key")
    return keys, current


class FileKeyProvider(_Keyring):
    """A keyring file, created with mode 0600 on first start.

    The file is replaced atomically (write, fsync, rename) on every change, so a crash
    leaves either the old keyring or the new one, never a torn file.
    """

    def __init__(
        self, path: Path, *, older: Iterable[str] = (), create: bool = True
    ) -> None:
        self.path = path
        self._lock = threading.Lock()
        if not path.exists():
            if not create:
                raise ConfigError(f"no master key file at {path}")
            key = secrets.token_bytes(KEY_BYTES)
            self._write({key_id_of(key): key}, key_id_of(key))
        keys, current = read_keyring(path)
        super().__init__(keys, current, _keys_by_id(older, "SHELLWEGO_MASTER_KEY_OLD"))
        self._seen = self._stamp()

    def _stamp(self) -> tuple[int, int, int]:
        st = self.path.stat()
        return st.st_ino, st.st_mtime_ns, st.st_size

    def _refresh(self) -> None:
        """Pick up a keyring another process changed (a rotation)."""
        try:
            stamp = self._stamp()
        except FileNotFoundError:
            return  # keep what is loaded; the next start reports the missing file
        if stamp == self._seen:
            return
        with self._lock:
            keys, current = read_keyring(self.path)
            self._keys, self._current, self._seen = keys, current, stamp
            self._older = {k: v for k, v in self._older.items() if k not in keys}

    @property
    def current_key_id(self) -> str:
        self._refresh()
        return self._current

    @property
    def key_ids(self) -> list[str]:
        self._refresh()
        return super().key_ids

    def wrap(self, data_key: bytes) -> tuple[bytes, str]:
        self._refresh()
        return super().wrap(data_key)

    def unwrap(self, wrapped: bytes, key_id: str) -> bytes:
        self._refresh()
        return super().unwrap(wrapped, key_id)

    def _write(self, keys: Mapping[str, bytes], current: str) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        body = json.dumps(
            {"current": current, "keys": {k: base64.b64encode(v).decode() for k, v in keys.items()}}
        )
        tmp = self.path.with_name(self.path.name + ".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as handle:
            handle.write(body)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, self.path)
        dir_fd = os.open(self.path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)

    def _commit(self, keys: dict[str, bytes], current: str) -> None:
        self._write(keys, current)
        self._keys, self._current, self._seen = keys, current, self._stamp()

    def add_key(self) -> str:
        """Generate a new current key; older keys stay until :meth:`retire_others`."""
        self._refresh()
        key = secrets.token_bytes(KEY_BYTES)
        kid = key_id_of(key)
        self._commit({**self._keys, kid: key}, kid)
        return kid

    def begin_rotation(self) -> bool:
        self._refresh()
        if len(self._keys) > 1:
            return False  # a rotation was interrupted: finish it under its new key
        self.add_key()
        return True

    def changed_at(self) -> float:
        return self.path.stat().st_mtime

    def retire_others(self) -> list[str]:
        """Drop every key of the file but the current one (after all were re-wrapped)."""
        self._refresh()
        retired = [k for k in self._keys if k != self._current]
        if retired:
            self._commit({self._current: self._keys[self._current]}, self._current)
        return retired


class _FixedKeys:
    """What a provider whose keys the platform never changes says of rotation: it makes no
    new key, retires none, and its keys never change on disk."""

    def begin_rotation(self) -> bool:
        return False

    def retire_others(self) -> list[str]:
        return []

    def changed_at(self) -> float:
        return 0.0


class StaticKeyProvider(_FixedKeys, _Keyring):
    """Keys given directly, e.g. ``SHELLWEGO_MASTER_KEY`` (base64 of 32 bytes).

    ``older`` keys (``SHELLWEGO_MASTER_KEY_OLD``, or a keyring file the server used
    before) only unwrap: ``shellwego keys rotate`` re-wraps what they hold under the
    current key, after which the operator stops passing them.
    """

    def __init__(
        self,
        current: str,
        *older: str,
        older_keys: Mapping[str, bytes] | None = None,
    ) -> None:
        key = decode_key(current, "SHELLWEGO_MASTER_KEY")
        kid = key_id_of(key)
        extra = {**(older_keys or {}), **_keys_by_id(older, "SHELLWEGO_MASTER_KEY_OLD")}
        super().__init__({kid: key}, kid, extra)


class NoKeyProvider(_FixedKeys):
    """No master key: for operator commands that encrypt nothing (``shellwego
    bootstrap``), so that they never make a key file where none should be."""

    @property
    def current_key_id(self) -> str:
        raise ConfigError("this command has no master key and encrypts nothing")

    @property
    def key_ids(self) -> list[str]:
        return []

    def wrap(self, data_key: bytes) -> tuple[bytes, str]:
        raise ConfigError("this command has no master key and encrypts nothing")

    def unwrap(self, wrapped: bytes, key_id: str) -> bytes:
        raise ConfigError("this command has no master key and decrypts nothing")
