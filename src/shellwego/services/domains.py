"""Custom domains: add, verify through DNS, remove. Unverified domains are not served."""

from __future__ import annotations

import secrets
from collections.abc import Callable

from shellwego.errors import InvalidInput, NotFound
from shellwego.models import (
    Domain,
    DomainCreate,
    DomainStatus,
    Role,
    TlsStatus,
    new_id,
)
from shellwego.models.values import DnsInstructions
from shellwego.store import repository as repo

from . import apps as app_service
from .context import Context, Principal
from .organizations import require_role

# resolver(kind, name) → the TXT strings or CNAME targets published for ``name``
Resolver = Callable[[str, str], list[str]]

LOCAL_SUFFIXES = (".localhost", ".local", ".test", ".internal")


def is_local(hostname: str) -> bool:
    return hostname == "localhost" or hostname.endswith(LOCAL_SUFFIXES)


def challenge_name(hostname: str) -> str:
    return f"_shellwego-challenge.{hostname}"


def instructions(ctx: Context, domain: Domain, app_name: str) -> list[DnsInstructions]:
    return [
        DnsInstructions(
            record_type="TXT",
            name=challenge_name(domain.hostname),
            value=f"shellwego-verify={domain.verification_token}",
        ),
        DnsInstructions(
            record_type="CNAME",
            name=domain.hostname,
            value=f"{app_name}.{ctx.settings.base_domain}",
        ),
    ]


def find(ctx: Context, who: Principal, ref: str) -> Domain:
    with ctx.db.session() as s:
        domain = repo.get(s, Domain, id=ref, organization_id=who.organization_id) or repo.get(
            s, Domain, hostname=ref, organization_id=who.organization_id
        )
        if domain is None:
            raise NotFound(f"domain {ref!r} not found")
        return domain


def list_page(
    ctx: Context, who: Principal, cursor: str | None, limit: int, app_ref: str | None
) -> repo.Page[Domain]:
    with ctx.db.session() as s:
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
            created_at=now,
            updated_at=now,
        )
        return repo.add(s, domain, conflict=f"domain {hostname} is already registered")


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
            txt = resolver("TXT", challenge_name(domain.hostname))
            cname = [c.lower().rstrip(".") for c in resolver("CNAME", domain.hostname)]
        except OSError as exc:
            txt, cname = [], []
            domain.last_error = f"DNS lookup failed: {exc}"
        if expected_txt in txt or expected_cname in cname:
            domain.status = DomainStatus.ACTIVE
            domain.tls_status = TlsStatus.INTERNAL if is_local(domain.hostname) else TlsStatus.ACME
            domain.verified_at = now
            domain.last_error = None
        elif domain.last_error is None or not domain.last_error.startswith("DNS lookup"):
            domain.last_error = (
                f"no TXT record {challenge_name(domain.hostname)} = {expected_txt} "
                f"and no CNAME to {expected_cname} found yet"
            )
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
    with ctx.db.session() as s:
        domain = repo.get(s, Domain, hostname=hostname)
        if domain is not None:
            return domain.status == DomainStatus.ACTIVE
        suffix = "." + ctx.settings.base_domain
        if hostname.endswith(suffix):
            from shellwego.models import App

            name = hostname[: -len(suffix)]
            return repo.get(s, App, name=name) is not None
    return False
