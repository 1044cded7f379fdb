"""Custom domains with DNS verification."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, status

from shellwego.api.contract import raises
from shellwego.api.deps import Ctx, Paging, Who
from shellwego.api.pages import PageOut
from shellwego.models import Domain, DomainCreate
from shellwego.models.domains import DomainOut, DomainView
from shellwego.services import apps as app_service
from shellwego.services import domains
from shellwego.services.context import Context, Resolver
from shellwego.services.dns import DnsResolver

router = APIRouter(tags=["domains"])


def _listed(ctx: Ctx, domain: Domain) -> DomainOut:
    return DomainOut.model_validate(
        {**domain.model_dump(), "expires_at": domains.expires_at(ctx, domain)}
    )


def _out(ctx: Ctx, who: Who, domain: Domain) -> DomainView:
    app = app_service.get(ctx, who, domain.app_id)
    return DomainView.model_validate(
        {
            **_listed(ctx, domain).model_dump(),
            "dns": domains.instructions(ctx, domain, app.name),
        }
    )


@router.get("/v1/domains", response_model=PageOut[DomainOut], name="domains.list")
@raises(404)  # the app it filters by
def list_domains(
    who: Who, ctx: Ctx, paging: Paging, app: Annotated[str | None, Query(max_length=63)] = None
) -> PageOut[DomainOut]:
    page = domains.list_page(ctx, who, paging.cursor, paging.limit, app)
    items = [_listed(ctx, d) for d in page.items]
    return PageOut[DomainOut](items=items, next_cursor=page.next_cursor)


@router.post(
    "/v1/domains",
    status_code=status.HTTP_201_CREATED,
    response_model=DomainView,
    name="domains.create",
)
@raises(404)  # the app it is for
def create_domain(body: DomainCreate, who: Who, ctx: Ctx) -> DomainView:
    return _out(ctx, who, domains.create(ctx, who, body))


@router.get("/v1/domains/{domain}", response_model=DomainView, name="domains.get")
def get_domain(domain: str, who: Who, ctx: Ctx) -> DomainView:
    return _out(ctx, who, domains.find(ctx, who, domain))


@router.delete(
    "/v1/domains/{domain}", status_code=status.HTTP_204_NO_CONTENT, name="domains.delete"
)
def delete_domain(domain: str, who: Who, ctx: Ctx) -> None:
    domains.delete(ctx, who, domain)


def resolver_of(ctx: Context) -> Resolver:
    """The context's DNS resolver, or one from the settings when none was plugged in."""
    if ctx.resolver is None:
        ctx.resolver = DnsResolver(ctx.settings.dns_resolver)
    return ctx.resolver


@router.post(
    "/v1/domains/{domain}/actions/verify", response_model=DomainView, name="domains.verify"
)
@raises(503)  # no DNS resolver answered
def verify_domain(domain: str, who: Who, ctx: Ctx) -> DomainView:
    """Look up the DNS records now; the domain is served once verified."""
    return _out(ctx, who, domains.verify(ctx, who, domain, resolver_of(ctx)))
