"""Bearer tokens and passwords: random tokens stored as SHA-256, passwords as argon2.

Password hashing is deliberately slow (tens of milliseconds of CPU and 64 MiB each), so
it never runs inside a database transaction, and only a few hashes run at once: a flood
of logins queues here instead of taking every CPU from the requests being served. A
login that cannot get a turn within ``HASH_QUEUE_SECONDS`` is answered 503 with
Retry-After.
"""

from __future__ import annotations

import hashlib
import os
import secrets
import threading
from collections.abc import Iterator
from contextlib import contextmanager

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

from shellwego.errors import Unavailable

USER_PREFIX = "swg_"
NODE_PREFIX = "swgn_"
JOIN_PREFIX = "swgj_"

_hasher = PasswordHasher()
# hashes at once: half the CPUs, so requests that need no password keep the rest
HASHES_AT_ONCE = max(1, (os.cpu_count() or 2) // 2)
HASH_QUEUE_SECONDS = 10.0
_hashing = threading.BoundedSemaphore(HASHES_AT_ONCE)


@contextmanager
def _turn() -> Iterator[None]:
    if not _hashing.acquire(timeout=HASH_QUEUE_SECONDS):
        raise Unavailable("too many password checks at once; try again", retry_after=2)
    try:
        yield
    finally:
        _hashing.release()


def new_token(prefix: str) -> str:
    return prefix + secrets.token_urlsafe(32)


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def hash_password(password: str) -> str:
    with _turn():
        return _hasher.hash(password)


def verify_password(stored: str, password: str) -> bool:
    with _turn():
        try:
            return _hasher.verify(stored, password)
        except (VerificationError, InvalidHashError):
            return False


# a real argon2 hash, verified against when the user does not exist so that the
# response time does not reveal which emails are registered
DUMMY_HASH = _hasher.hash("shellwego-no-such-user")
