"""Bearer tokens and passwords: random tokens stored as SHA-256, passwords as argon2."""

from __future__ import annotations

import hashlib
import secrets

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

USER_PREFIX = "swg_"
NODE_PREFIX = "swgn_"
JOIN_PREFIX = "swgj_"

_hasher = PasswordHasher()


def new_token(prefix: str) -> str:
    return prefix + secrets.token_urlsafe(32)


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def hash_password(password: str) -> str:
    return _hasher.hash(password)


def verify_password(stored: str, password: str) -> bool:
    try:
        return _hasher.verify(stored, password)
    except (VerificationError, InvalidHashError):
        return False


# a real argon2 hash, verified against when the user does not exist so that the
# response time does not reveal which emails are registered
DUMMY_HASH = _hasher.hash("shellwego-no-such-user")
