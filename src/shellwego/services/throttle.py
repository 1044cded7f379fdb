"""Login limits: failed password checks per source address and per account.

The policy (``docs/security.md``):

* every failed password check (a wrong password, an unknown email, a refused bootstrap)
  counts against the client's source address (an IPv6 client's /64) and, for logins,
  against the account (the email, registered or not);
* the first ``free`` failures cost nothing; after that each failure makes the address or
  account wait ``base * 2**(failures - free)`` seconds, at most ``cap``; until then its
  attempts are answered 429 with ``Retry-After``, without checking a password (so they
  cost no argon2 time and count no further);
* per-address limits bite first (fewer free failures), so one hostile client is held up
  long before the account it guesses at; the per-account wait is bounded (``cap``) so
  that no one can lock the real owner out for longer, even from many addresses;
* a successful login clears the account's count (never the address's: a client with an
  account of its own must not clear its guesses at others' by logging in);
* counts nothing failed in for ``forget`` seconds start over; the housekeeping loop
  deletes them.

The counts are rows of the database (``login_throttles``), so every control-plane replica
enforces the same limits.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, replace
from datetime import timedelta

from sqlalchemy.orm import Session

from shellwego.errors import TooManyRequests
from shellwego.models import ThrottleScope
from shellwego.store import throttle as queries
from shellwego.store.throttle import Key

from .context import Context


@dataclass(frozen=True, slots=True)
class Limit:
    free: int  # failures that cost nothing
    base: float  # the first wait, in seconds; each further failure doubles it
    cap: float  # the longest wait
    forget: float  # seconds without a failure after which the count starts over

    def wait(self, failures: int) -> float:
        if failures < self.free:
            return 0.0
        return float(min(self.cap, self.base * 2 ** min(failures - self.free, 32)))


ADDRESS = Limit(free=5, base=1.0, cap=15 * 60.0, forget=60 * 60.0)
ACCOUNT = Limit(free=10, base=1.0, cap=5 * 60.0, forget=60 * 60.0)
LIMITS = {ThrottleScope.ADDRESS: ADDRESS, ThrottleScope.ACCOUNT: ACCOUNT}
WHAT = {ThrottleScope.ADDRESS: "from this address", ThrottleScope.ACCOUNT: "for this account"}


def limit_of(ctx: Context, scope: ThrottleScope) -> Limit:
    """The limit of ``scope`` with the operator's free failures (``login_free_failures``
    per address, twice as many per account)."""
    free = ctx.settings.login_free_failures * (2 if scope == ThrottleScope.ACCOUNT else 1)
    return replace(LIMITS[scope], free=free)


def address_key(host: str | None) -> Key:
    """The key of a client address: the address itself, an IPv6 client's /64 network
    (one host usually holds a whole /64), an IPv4-mapped address as IPv4."""
    text = (host or "unknown")[:254]
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        return ThrottleScope.ADDRESS, text
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            return ThrottleScope.ADDRESS, str(address.ipv4_mapped)
        return ThrottleScope.ADDRESS, str(ipaddress.ip_network(f"{address}/64", strict=False))
    return ThrottleScope.ADDRESS, str(address)


def account_key(email: str) -> Key:
    return ThrottleScope.ACCOUNT, email.strip().lower()[:254]


def check(ctx: Context, *keys: Key) -> None:
    """Raise :class:`TooManyRequests` (with the longest wait) while any key must wait."""
    now = ctx.clock.now()
    with ctx.db.session(write=False) as s:
        blocked = queries.blocked_until(s, keys, now)
    if not blocked:
        return
    key, until = max(blocked.items(), key=lambda item: item[1])
    seconds = max(1.0, (until - now).total_seconds())
    raise TooManyRequests(
        f"too many failed attempts {WHAT[key[0]]}; try again in {round(seconds)} s",
        retry_after=seconds,
    )


def failed(ctx: Context, *keys: Key) -> None:
    """Count one failure against each key, in one short write transaction."""

    def count() -> None:
        now = ctx.clock.now()
        with ctx.db.session() as s:
            for key in keys:
                limit = limit_of(ctx, key[0])
                forget_before = now - timedelta(seconds=limit.forget)
                wait = limit.wait(queries.count_failure(s, key, now, forget_before))
                if wait > 0:
                    queries.block(s, key, now + timedelta(seconds=wait))

    ctx.db.retrying(count)


def succeeded(s: Session, key: Key) -> None:
    """Clear the count of ``key`` (an account whose password was just right), in the
    login's own transaction."""
    queries.clear(s, key)


def forget_stale(ctx: Context) -> int:
    """Delete the counts that block nothing and are old enough to be forgotten."""
    now = ctx.clock.now()
    oldest = now - timedelta(seconds=max(limit.forget for limit in LIMITS.values()))
    with ctx.db.session() as s:
        return queries.forget(s, oldest, now)
