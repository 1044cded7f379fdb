"""Organizations and members."""

from __future__ import annotations

from fastapi import APIRouter, status

from shellwego.api.deps import Ctx, Paging, Who
from shellwego.api.pages import PageOut, out
from shellwego.models import Organization, OrganizationCreate
from shellwego.models.tenancy import Member, MemberAdd, MemberUpdate
from shellwego.services import organizations as orgs

router = APIRouter(tags=["organizations"])


@router.get("/v1/organizations", response_model=PageOut[Organization], name="organizations.list")
def list_organizations(who: Who, ctx: Ctx, paging: Paging) -> PageOut[Organization]:
    return out(orgs.list_for(ctx, who, paging.cursor, paging.limit))


@router.post(
    "/v1/organizations",
    status_code=status.HTTP_201_CREATED,
    response_model=Organization,
    name="organizations.create",
)
def create_organization(body: OrganizationCreate, who: Who, ctx: Ctx) -> Organization:
    return orgs.create(ctx, who, body)


@router.get("/v1/organizations/{org}", response_model=Organization, name="organizations.get")
def get_organization(org: str, who: Who, ctx: Ctx) -> Organization:
    return orgs.resolve(ctx, who, org)


@router.get("/v1/organizations/{org}/members", response_model=PageOut[Member], name="members.list")
def list_members(org: str, who: Who, ctx: Ctx, paging: Paging) -> PageOut[Member]:
    return out(orgs.members(ctx, who, org, paging.cursor, paging.limit))


@router.post(
    "/v1/organizations/{org}/members",
    status_code=status.HTTP_201_CREATED,
    response_model=Member,
    name="members.add",
)
def add_member(org: str, body: MemberAdd, who: Who, ctx: Ctx) -> Member:
    return orgs.add_member(ctx, who, org, body)


@router.patch(
    "/v1/organizations/{org}/members/{user}", response_model=Member, name="members.update"
)
def update_member(
    org: str,
    user: str,
    body: MemberUpdate,  # type: ignore[valid-type]
    who: Who,
    ctx: Ctx,
) -> Member:
    return orgs.update_member(ctx, who, org, user, body.role)  # type: ignore[attr-defined]


@router.delete(
    "/v1/organizations/{org}/members/{user}",
    status_code=status.HTTP_204_NO_CONTENT,
    name="members.remove",
)
def remove_member(org: str, user: str, who: Who, ctx: Ctx) -> None:
    orgs.remove_member(ctx, who, org, user)
