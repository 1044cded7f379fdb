"""Custom domains: add, verify through DNS, remove. Unverified domains are not served.

A pending (unverified) domain holds its hostname for ``settings.domain_pending_ttl``
seconds from when it was added, no longer: a hostname cannot be squatted by adding it
and never proving it. Past that, adding the hostname (from any organization) removes the
stale claim in the same transaction, and the housekeeping loop removes whatever expired
claims are left (:func:`expire_pending`); either way the claim's organization gets a
``domain.expired`` event on the app it was added to.
"""

from __future__ import annotations

import secrets
from datetime import datetime, timedelta

from sqlalchemy.orm import Session

from shellwego.errors import DnsLookupFailed, DnsNameNotFound, InvalidInput, NotFound
from shellwego.models import (
    App,
    Domain,
    DomainCreate,
    DomainStatus,
    Role,
    TlsStatus,
    new_id,
)
from shellwego.models.hostnames import is_local_name
from shellwego.models.values import DnsInstructions, EdgeFeatures, RoutingConfig
from shellwego.store import repository as repo

from . import apps as app_service
from .context import Context, Principal, Resolver
from .deployments import record_event
from .organizations import require_role

# resolver(kind, name) → the TXT strings or CNAME targets published for ``name`` (raises
# DnsNameNotFound for a name that does not exist, DnsLookupFailed when no resolver answers)
# expired pending domains removed per transaction by a sweep
EXPIRE_BATCH = 100


def challenge_name(hostname: str) -> str:
    return f"_shellwego-challenge.{hostname}"


def instructions(ctx: Context, domain: Domain, app_name: str) -> list[DnsInstructions]:
    """The records that prove the domain is yours: the TXT token, and the CNAME to the
    app's platform hostname, unless that is a local name (``hello.localhost``) no DNS
    record can usefully point to: the domain is then pointed at the edge by address."""
    records = [
        DnsInstructions(
            record_type="TXT",
            name=challenge_name(domain.hostname),
            value=f"shellwego-verify={domain.verification_token}",
        )
    ]
    if not is_local_name(ctx.settings.base_domain):
        records.append(
            DnsInstructions(
                record_type="CNAME",
                name=domain.hostname,
                value=f"{app_name}.{ctx.settings.base_domain}",
            )
        )
    return records


def expires_at(ctx: Context, domain: Domain) -> datetime | None:
    """When a pending domain stops holding its hostname; None once verified."""
    if domain.status != DomainStatus.PENDING:
        return None
    return domain.created_at + timedelta(seconds=ctx.settings.domain_pending_ttl)


def _expired(ctx: Context, domain: Domain, now: datetime) -> bool:
    until = expires_at(ctx, domain)
    return until is not None and until <= now


def _drop_expired(ctx: Context, s: Session, domain: Domain) -> None:
    """Remove an expired pending claim and tell its organization, in ``s``."""
    repo.delete(s, domain)
    app = repo.get(s, App, id=domain.app_id)
    if app is not None:
        record_event(
            ctx,
            s,
            app,
            "domain.expired",
            f"{domain.hostname} was not verified within "
            f"{_days(ctx.settings.domain_pending_ttl)} and was removed; add it again to retry",
            {"hostname": domain.hostname},
        )


def _days(seconds: float) -> str:
    if seconds % 86400 == 0:
        n, unit = int(seconds // 86400), "day"
    elif seconds % 3600 == 0:
        n, unit = int(seconds // 3600), "hour"
    else:
        n, unit = int(seconds), "second"
    return f"{n} {unit}{'s' if n != 1 else ''}"


def expire_pending(ctx: Context) -> list[str]:
    """Delete the pending domains whose claim has expired (a ``domain.expired`` event
    each); the hostnames removed. Safe on several replicas at once: rows are locked
    (PostgreSQL) and each is removed, and told, once."""
    now = ctx.clock.now()
    cutoff = now - timedelta(seconds=ctx.settings.domain_pending_ttl)
    removed: list[str] = []
    while True:
        with ctx.db.session() as s:
            batch = repo.lock_batch(
                s,
                Domain,
                Domain.status == DomainStatus.PENDING,  # type: ignore[arg-type]
                Domain.created_at <= cutoff,  # type: ignore[arg-type,operator]
                limit=EXPIRE_BATCH,
            )
            for domain in batch:
                _drop_expired(ctx, s, domain)
                removed.append(domain.hostname)
        if len(batch) < EXPIRE_BATCH:
            return removed


def find(ctx: Context, who: Principal, ref: str) -> Domain:
    with ctx.db.session(write=False) as s:
        domain = repo.get(s, Domain, id=ref, organization_id=who.organization_id) or repo.get(
            s, Domain, hostname=ref, organization_id=who.organization_id
        )
        if domain is None:
            raise NotFound(f"domain {ref!r} not found")
        return domain


def list_page(
    ctx: Context, who: Principal, cursor: str | None, limit: int, app_ref: str | None
) -> repo.Page[Domain]:
    with ctx.db.session(write=False) as s:
        filters = {}
        if app_ref:
            filters["app_id"] = app_service.find(s, who.organization_id, app_ref).id
        return repo.page(
            s, Domain, cursor=cursor, limit=limit, organization_id=who.organization_id, **filters
        )


def create(ctx: Context, who: Principal, body: DomainCreate) -> Domain:
    require_role(who, Role.MEMBER)
    hostname = body.hostname.lower().rstrip(".")
    if hostname.endswith("." + ctx.settings.base_domain) or hostname == ctx.settings.base_domain:
        raise InvalidInput(
            f"{hostname} is under the platform domain {ctx.settings.base_domain}; "
            "every app already answers at <app>." + ctx.settings.base_domain
        )
    with ctx.db.session() as s:
        app = app_service.find(s, who.organization_id, body.app)
        now = ctx.clock.now()
        # an expired claim on the hostname goes in this transaction (locked: a sweep or
        # another organization adding it at the same moment removes it only once)
        for stale in repo.lock_batch(s, Domain, Domain.hostname == hostname, limit=1):
            if _expired(ctx, stale, now):
                _drop_expired(ctx, s, stale)
        domain = Domain(
            id=new_id(),
            hostname=hostname,
            organization_id=who.organization_id,
            app_id=app.id,
            status=DomainStatus.PENDING,
            tls_status=TlsStatus.PENDING,
            verification_token=secrets.token_hex(16),
            certificate=None,
            last_error=None,
            verified_at=None,
            routing=RoutingConfig(),
            features=EdgeFeatures(),
            created_at=now,
            updated_at=now,
        )
        return repo.add(s, domain, conflict=f"domain {hostname} is already registered")


def _check(resolver: Resolver, kind: str, name: str, expected: str) -> tuple[bool, str]:
    """Look ``name`` up; (True, "") when ``expected`` is published, else (False, why not).
    Raises :class:`DnsLookupFailed` when no resolver answers."""
    try:
        found = resolver(kind, name)
    except DnsNameNotFound as exc:
        return False, exc.detail
    if kind == "CNAME":
        found = [c.lower().rstrip(".") for c in found]
    if expected in found:
        return True, ""
    if not found:
        return False, f"{name} has no {kind} record"
    shown = ", ".join(f'"{v}"' for v in found[:3])
    return False, f'{kind} {name} is {shown}, expected "{expected}"'


def verify(ctx: Context, who: Principal, ref: str, resolver: Resolver) -> Domain:
    """Check DNS: the TXT token, or a CNAME to the app's platform hostname."""
    require_role(who, Role.MEMBER)
    domain = find(ctx, who, ref)
    with ctx.db.session() as s:
        domain = repo.require(s, Domain, "domain", id=domain.id)
        app = app_service.find(s, who.organization_id, domain.app_id)
        expected_txt = f"shellwego-verify={domain.verification_token}"
        expected_cname = f"{app.name}.{ctx.settings.base_domain}".lower()
        now = ctx.clock.now()
        try:
            ok, txt_problem = _check(resolver, "TXT", challenge_name(domain.hostname), expected_txt)
            cname_problem = ""
            if not ok:
                ok, cname_problem = _check(resolver, "CNAME", domain.hostname, expected_cname)
        except DnsLookupFailed as exc:
            ok, problem = False, f"DNS lookup failed: {exc.detail}"
        else:
            problem = f"not verified yet: {txt_problem}; {cname_problem}"
        if ok:
            domain.status = DomainStatus.ACTIVE
            domain.tls_status = (
                TlsStatus.INTERNAL if is_local_name(domain.hostname) else TlsStatus.ACME
            )
            domain.verified_at = now
            domain.last_error = None
        else:
            domain.last_error = problem[:500]
        domain.updated_at = now
        ctx.bus.notify("edge")
        return domain


def delete(ctx: Context, who: Principal, ref: str) -> Domain:
    require_role(who, Role.MEMBER)
    domain = find(ctx, who, ref)
    with ctx.db.session() as s:
        row = repo.require(s, Domain, "domain", id=domain.id)
        repo.delete(s, row)
    ctx.bus.notify("edge")
    return domain


def allowed_for_tls(ctx: Context, hostname: str) -> bool:
    """The on-demand TLS "ask": is this an active domain or an app's platform hostname?"""
    hostname = hostname.lower().rstrip(".")
    with ctx.db.session(write=False) as s:
        domain = repo.get(s, Domain, hostname=hostname)
        if domain is not None:
            return domain.status == DomainStatus.ACTIVE
        suffix = "." + ctx.settings.base_domain
        if hostname.endswith(suffix):
            from shellwego.models import App

            name = hostname[: -len(suffix)]
            return repo.get(s, App, name=name, deleted_at=None) is not None
    return False
