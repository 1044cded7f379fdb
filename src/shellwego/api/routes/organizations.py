"""Organizations and members."""

from __future__ import annotations

from fastapi import APIRouter, status
from pydantic import BaseModel

from shellwego.api.deps import Ctx, Who
from shellwego.models import Organization, OrganizationCreate, Role
from shellwego.services import organizations as orgs

router = APIRouter(tags=["organizations"])


class MemberOut(BaseModel):
    user_id: str
    email: str
    name: str
    role: Role


def _member(m: orgs.Member) -> MemberOut:
    return MemberOut(user_id=m.user_id, email=m.email, name=m.name, role=m.role)


@router.get("/v1/organizations", response_model=list[Organization], name="organizations.list")
def list_organizations(who: Who, ctx: Ctx) -> list[Organization]:
    return orgs.list_for(ctx, who)


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


@router.get("/v1/organizations/{org}/members", response_model=list[MemberOut], name="members.list")
def list_members(org: str, who: Who, ctx: Ctx) -> list[MemberOut]:
    return [_member(m) for m in orgs.members(ctx, who, org)]


@router.post(
    "/v1/organizations/{org}/members",
    status_code=status.HTTP_201_CREATED,
    response_model=MemberOut,
    name="members.add",
)
def add_member(org: str, body: orgs.MemberAdd, who: Who, ctx: Ctx) -> MemberOut:
    return _member(orgs.add_member(ctx, who, org, body))


@router.patch(
    "/v1/organizations/{org}/members/{user}", response_model=MemberOut, name="members.update"
)
def update_member(org: str, user: str, body: orgs.MemberUpdate, who: Who, ctx: Ctx) -> MemberOut:
    return _member(orgs.update_member(ctx, who, org, user, body))


@router.delete(
    "/v1/organizations/{org}/members/{user}",
    status_code=status.HTTP_204_NO_CONTENT,
    name="members.remove",
)
def remove_member(org: str, user: str, who: Who, ctx: Ctx) -> None:
    orgs.remove_member(ctx, who, org, user)
