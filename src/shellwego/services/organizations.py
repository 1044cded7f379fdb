"""Organizations and their members, with roles owner / admin / member / viewer."""

from __future__ import annotations

from sqlalchemy.orm import Session

from shellwego.errors import Conflict, Forbidden, NotFound
from shellwego.models import (
    Membership,
    Organization,
    OrganizationCreate,
    Role,
    User,
    new_id,
)
from shellwego.models.tenancy import Member, MemberAdd
from shellwego.models.values import OrgSettings
from shellwego.store import repository as repo

from .context import Context, Principal
from .tokens import hash_password


def require_role(who: Principal, role: Role) -> None:
    if not who.at_least(role):
        raise Forbidden(f"this action needs the {role.value} role or higher")


def new_user(
    ctx: Context, email: str, name: str, password_hash: str, *, operator: bool = False
) -> User:
    """A user row, not yet added; the password already hashed (outside any transaction)."""
    now = ctx.clock.now()
    return User(
        id=new_id(),
        email=email,
        name=name,
        password_hash=password_hash,
        is_operator=operator,
        last_login_at=None,
        created_at=now,
        updated_at=now,
    )


def list_for(
    ctx: Context, who: Principal, cursor: str | None, limit: int
) -> repo.Page[Organization]:
    """The organizations the caller belongs to."""
    with ctx.db.session(write=False) as s:
        mine = [m.organization_id for m in repo.find_all(s, Membership, user_id=who.user_id)]
        return repo.page(
            s,
            Organization,
            cursor=cursor,
            limit=limit,
            where=[Organization.id.in_(mine)],  # type: ignore[attr-defined]
        )


def resolve(ctx: Context, who: Principal, ref: str) -> Organization:
    """The caller's organizations only: anything else is 404."""
    with ctx.db.session(write=False) as s:
        org = repo.get(s, Organization, id=ref) or repo.get(s, Organization, slug=ref)
        if (
            org is None
            or repo.get(s, Membership, organization_id=org.id, user_id=who.user_id) is None
        ):
            raise NotFound("organization not found")
        return org


def add_with_owner(
    ctx: Context, s: Session, body: OrganizationCreate, owner_id: str
) -> Organization:
    """A new organization in the caller's transaction, ``owner_id`` its owner."""
    now = ctx.clock.now()
    org = Organization(
        id=new_id(),
        name=body.name,
        slug=body.slug,
        plan="free",
        settings=OrgSettings(),
        created_at=now,
        updated_at=now,
    )
    repo.add(s, org, conflict=f"organization slug {body.slug!r} is already taken")
    repo.add(
        s,
        Membership(
            id=new_id(),
            organization_id=org.id,
            user_id=owner_id,
            role=Role.OWNER,
            created_at=now,
            updated_at=now,
        ),
        conflict="already a member",
    )
    return org


def create(ctx: Context, who: Principal, body: OrganizationCreate) -> Organization:
    with ctx.db.session() as s:
        return add_with_owner(ctx, s, body, who.user_id)


def _scoped(ctx: Context, who: Principal, ref: str) -> Organization:
    org = resolve(ctx, who, ref)
    if org.id != who.organization_id:
        # tokens act in one organization; use a token of that organization
        raise NotFound("organization not found")
    return org


def members(
    ctx: Context, who: Principal, ref: str, cursor: str | None, limit: int
) -> repo.Page[Member]:
    """The organization's members, paged by membership id."""
    org = _scoped(ctx, who, ref)
    with ctx.db.session(write=False) as s:
        page = repo.page(s, Membership, cursor=cursor, limit=limit, organization_id=org.id)
        users = {
            u.id: u
            for u in repo.find_all(
                s,
                User,
                User.id.in_([m.user_id for m in page.items]),  # type: ignore[attr-defined]
            )
        }
        return repo.Page(
            items=[Member.of(m, users[m.user_id]) for m in page.items],
            next_cursor=page.next_cursor,
        )


def add_member(ctx: Context, who: Principal, ref: str, body: MemberAdd) -> Member:
    org = _scoped(ctx, who, ref)
    require_role(who, Role.ADMIN)
    if body.role == Role.OWNER and who.role != Role.OWNER:
        raise Forbidden("only an owner can add another owner")
    password_hash = None
    if body.password is not None:
        with ctx.db.session(write=False) as s:
            known = repo.get(s, User, email=body.email) is not None
        # hashing is slow on purpose: never inside the write transaction
        password_hash = None if known else hash_password(body.password)
    with ctx.db.session() as s:
        now = ctx.clock.now()
        user = repo.get(s, User, email=body.email)
        if user is None:
            if password_hash is None:
                raise Conflict(f"no account for {body.email}: give a password to create one")
            user = new_user(ctx, body.email, body.name, password_hash)
            repo.add(s, user, conflict="email already registered")
        membership = repo.add(
            s,
            Membership(
                id=new_id(),
                organization_id=org.id,
                user_id=user.id,
                role=body.role,
                created_at=now,
                updated_at=now,
            ),
            conflict=f"{body.email} is already a member",
        )
        return Member.of(membership, user)


def _member_row(s: Session, org_id: str, user_ref: str) -> Membership:
    user = repo.get(s, User, id=user_ref) or repo.get(s, User, email=user_ref)
    membership = user and repo.get(s, Membership, organization_id=org_id, user_id=user.id)
    if not membership:
        raise NotFound("member not found")
    return membership


def _owners(s: Session, org_id: str) -> int:
    return repo.count(s, Membership, organization_id=org_id, role=Role.OWNER.value)


def update_member(
    ctx: Context, who: Principal, ref: str, user_ref: str, role: Role | None
) -> Member:
    """Change a member's role (``None``: leave it as it is)."""
    org = _scoped(ctx, who, ref)
    require_role(who, Role.ADMIN)
    with ctx.db.session() as s:
        m = _member_row(s, org.id, user_ref)
        role = Role(m.role) if role is None else role
        if Role.OWNER in (Role(m.role), role) and who.role != Role.OWNER:
            raise Forbidden("only an owner can grant or remove the owner role")
        if m.role == Role.OWNER and role != Role.OWNER and _owners(s, org.id) <= 1:
            raise Conflict("an organization needs at least one owner")
        m.role = role
        m.updated_at = ctx.clock.now()
        user = repo.require(s, User, "user", id=m.user_id)
        return Member.of(m, user)


def remove_member(ctx: Context, who: Principal, ref: str, user_ref: str) -> None:
    org = _scoped(ctx, who, ref)
    require_role(who, Role.ADMIN)
    with ctx.db.session() as s:
        m = _member_row(s, org.id, user_ref)
        if m.role == Role.OWNER:
            if who.role != Role.OWNER:
                raise Forbidden("only an owner can remove an owner")
            if _owners(s, org.id) <= 1:
                raise Conflict("an organization needs at least one owner")
        repo.delete(s, m)
