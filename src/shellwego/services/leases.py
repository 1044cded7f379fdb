"""Leases: one control-plane replica at a time runs each cluster-wide singleton.

A lease is a row (``models.Lease``) per singleton name: who holds it, until when (by the
injectable clock) and its fencing token. A replica takes a free or expired lease with
the token one higher than the last; its holder renews it (same token) well before it
expires. Every write of the holder's loops is *fenced*: its transaction locks the lease
row just before committing and commits only if the row still names this holder and
token and has not expired (:func:`fenced`); otherwise it raises :class:`LeaseLost` and
nothing of it is committed. A deposed holder that still runs (paused, cut off, slow to
notice) therefore changes nothing once another replica has taken over.

Lock order: the lease row is locked last in a fenced transaction (at its commit), and a
transaction that takes or renews a lease locks nothing else, so neither waits on the other
in a cycle.
"""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass
from datetime import datetime, timedelta

import sqlalchemy as sa
from sqlalchemy.orm import Session

from shellwego.errors import LeaseLost
from shellwego.models import Lease, new_id

from .context import Context

# the control plane's singletons: placement and rollout (with release phases), node
# liveness, housekeeping, and every later cluster-wide loop (webhooks, backups, metering)
CONTROLLERS = "controllers"


def holder_id() -> str:
    """A name for this process, unique across the cluster and across restarts."""
    return f"{socket.gethostname()[:120]}:{os.getpid()}:{new_id()}"


def _died_here(holder: str) -> bool:
    """Whether ``holder`` was a process of this host that is no longer running (an
    all-in-one restarted after a crash takes its lease back at once)."""
    host, _, rest = holder.partition(":")
    pid, _, _ = rest.partition(":")
    if host != socket.gethostname()[:120] or not pid.isdigit():
        return False
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    return False


@dataclass(frozen=True, slots=True)
class Held:
    """A lease as its holder took or renewed it."""

    name: str
    holder: str
    token: int
    expires_at: datetime


def _locked(s: Session, name: str) -> Lease | None:
    query = sa.select(Lease).where(Lease.name == name)  # type: ignore[arg-type]
    if s.get_bind().dialect.name == "postgresql":
        query = query.with_for_update()
    return s.execute(query).scalars().first()


def acquire(ctx: Context, name: str, holder: str, ttl: float) -> Held | None:
    """Take the lease ``name`` for ``ttl`` seconds, or renew it if ``holder`` holds it:
    what is held then, or ``None`` when another replica holds it and it has not expired.

    A renewal keeps the token (also when the lease expired and nobody took it: no other
    holder wrote meanwhile); a takeover of a free or expired lease, or of one whose
    holder died on this host, gets the next one, so writes made under the old token are
    refused."""

    def attempt() -> Held | None:
        with ctx.db.session() as s:
            now = ctx.clock.now()
            until = now + timedelta(seconds=ttl)
            row = _locked(s, name)
            if row is None:
                row = Lease(
                    id=new_id(),
                    name=name,
                    holder=holder,
                    token=1,
                    acquired_at=now,
                    expires_at=until,
                    created_at=now,
                    updated_at=now,
                )
                s.add(row)
            elif row.holder == holder:
                # nobody took it meanwhile, even if it expired: no other holder wrote
                row.expires_at = until
                row.updated_at = now
            elif row.expires_at <= now or _died_here(row.holder):
                row.holder = holder
                row.token += 1
                row.acquired_at = now
                row.expires_at = until
                row.updated_at = now
            else:
                return None
            return Held(name=name, holder=holder, token=row.token, expires_at=until)

    try:
        return ctx.db.retrying(attempt)
    except sa.exc.IntegrityError:
        return None  # another replica created the row at the same moment: it holds it


def release(ctx: Context, held: Held) -> None:
    """Give the lease up at once (a clean stop): another replica takes it on its next
    try instead of waiting for it to expire. Nothing if it was already taken over."""
    with ctx.db.session() as s:
        row = _locked(s, held.name)
        if row is not None and row.holder == held.holder and row.token == held.token:
            now = ctx.clock.now()
            row.expires_at = now
            row.updated_at = now


def current(ctx: Context, name: str) -> Lease | None:
    """The lease row as it is (who holds it, its token, until when)."""
    with ctx.db.session(write=False) as s:
        return s.execute(sa.select(Lease).where(Lease.name == name)).scalars().first()  # type: ignore[arg-type]


def verify(ctx: Context, s: Session, held: Held) -> None:
    """Raise :class:`LeaseLost` unless ``held`` is still the lease's holder and token
    and the lease has not expired; the row stays locked until ``s`` ends (PostgreSQL; a
    SQLite write transaction is exclusive already)."""
    row = _locked(s, held.name)
    if row is None or row.holder != held.holder or row.token != held.token:
        raise LeaseLost(f"the {held.name} lease was taken over (token {held.token} is stale)")
    if row.expires_at <= ctx.clock.now():
        raise LeaseLost(f"the {held.name} lease expired before it was renewed")


def fenced(ctx: Context, held: Held) -> Context:
    """``ctx`` whose every write transaction verifies ``held`` just before committing
    (see :func:`verify`): the context a singleton's loop runs with."""
    from dataclasses import replace

    def guard(s: Session) -> None:
        s.flush()  # the transaction's own writes first: the lease row is locked last
        verify(ctx, s, held)

    return replace(ctx, db=ctx.db.guarded(guard))
