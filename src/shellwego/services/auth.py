"""Bootstrap, login, API tokens, and turning a bearer token into a Principal."""

from __future__ import annotations

from dataclasses import dataclass, replace

import sqlalchemy as sa

from shellwego.errors import Conflict, Forbidden, NotFound, Unauthenticated
from shellwego.models import (
    ApiToken,
    ApiTokenCreate,
    Membership,
    Organization,
    OrganizationCreate,
    Role,
    User,
    UserCreate,
    new_id,
)
from shellwego.store import repository as repo

from . import organizations
from .context import Context, Principal
from .tokens import (
    DUMMY_HASH,
    USER_PREFIX,
    hash_password,
    new_token,
    token_hash,
    verify_password,
)


@dataclass(frozen=True, slots=True)
class IssuedToken:
    token: ApiToken
    secret: str  # shown once
    # who logged in (login and bootstrap): the actor of the request's audit entry
    principal: Principal | None = None


@dataclass(frozen=True, slots=True)
class Bootstrap:
    organization: Organization
    user: User
    token: IssuedToken


def bootstrap(ctx: Context, user: UserCreate, org: OrganizationCreate) -> Bootstrap:
    """Create the first organization and its owner; refused once any user exists."""
    with ctx.db.session() as s:
        if repo.count(s, User) > 0:
            raise Conflict("this platform is already bootstrapped; log in instead")
        now = ctx.clock.now()
        owner = User(
            id=new_id(),
            email=user.email,
            name=user.name,
            password_hash=hash_password(user.password),
            is_operator=True,
            last_login_at=None,
            created_at=now,
            updated_at=now,
        )
        repo.add(s, owner, conflict="email already registered")
        organization = organizations.add_with_owner(ctx, s, org, owner.id)
        issued = _issue(ctx, s, owner.id, organization.id, ApiTokenCreate(name="bootstrap"))
        who = Principal(owner.id, organization.id, Role.OWNER, None, is_operator=True)
        return Bootstrap(
            organization=organization, user=owner, token=replace(issued, principal=who)
        )


def _issue(
    ctx: Context, s: sa.orm.Session, user_id: str, org_id: str, body: ApiTokenCreate
) -> IssuedToken:
    secret = new_token(USER_PREFIX)
    now = ctx.clock.now()
    token = ApiToken(
        id=new_id(),
        name=body.name,
        expires_at=body.expires_at,
        user_id=user_id,
        organization_id=org_id,
        prefix=secret[:10],
        scopes=["*"],
        token_hash=token_hash(secret),
        last_used_at=None,
        revoked_at=None,
        created_at=now,
        updated_at=now,
    )
    repo.add(s, token, conflict="token collision, retry")
    return IssuedToken(token=token, secret=secret)


def login(ctx: Context, email: str, password: str, organization: str | None) -> IssuedToken:
    with ctx.db.session() as s:
        user = repo.get(s, User, email=email)
        if user is None:
            verify_password(DUMMY_HASH, password)
            raise Unauthenticated("invalid email or password")
        if not verify_password(user.password_hash, password):
            raise Unauthenticated("invalid email or password")
        memberships = repo.find_all(s, Membership, user_id=user.id)
        if organization:
            org = repo.get(s, Organization, slug=organization)
            membership = next(
                (m for m in memberships if org is not None and m.organization_id == org.id), None
            )
            if membership is None:
                raise Unauthenticated(f"you are not a member of organization {organization!r}")
        elif memberships:
            membership = memberships[0]
        else:
            raise Forbidden("this user belongs to no organization")
        user.last_login_at = ctx.clock.now()
        issued = _issue(ctx, s, user.id, membership.organization_id, ApiTokenCreate(name="login"))
        who = Principal(
            user.id,
            membership.organization_id,
            Role(membership.role),
            None,
            is_operator=user.is_operator,
        )
        return replace(issued, principal=who)


def authenticate(ctx: Context, bearer: str | None) -> Principal:
    if not bearer:
        raise Unauthenticated("missing bearer token: log in with `shellwego login`")
    if not bearer.startswith(USER_PREFIX):
        raise Unauthenticated("invalid or revoked token")
    with ctx.db.session() as s:
        token = repo.get(s, ApiToken, token_hash=token_hash(bearer))
        now = ctx.clock.now()
        if token is None or token.revoked_at is not None:
            raise Unauthenticated("invalid or revoked token")
        if token.expires_at is not None and token.expires_at <= now:
            raise Unauthenticated("token expired")
        membership = repo.get(
            s, Membership, user_id=token.user_id, organization_id=token.organization_id
        )
        user = repo.get(s, User, id=token.user_id)
        if membership is None or user is None:
            raise Unauthenticated("token's membership no longer exists")
        last = token.last_used_at
        if last is None or (now - last).total_seconds() > 60:
            token.last_used_at = now
        return Principal(
            user_id=token.user_id,
            organization_id=token.organization_id,
            role=Role(membership.role),
            token_id=token.id,
            is_operator=user.is_operator,
        )


def create_token(ctx: Context, who: Principal, body: ApiTokenCreate) -> IssuedToken:
    with ctx.db.session() as s:
        return _issue(ctx, s, who.user_id, who.organization_id, body)


def list_tokens(
    ctx: Context, who: Principal, cursor: str | None, limit: int
) -> repo.Page[ApiToken]:
    with ctx.db.session() as s:
        return repo.page(
            s,
            ApiToken,
            cursor=cursor,
            limit=limit,
            where=[ApiToken.revoked_at.is_(None)],  # type: ignore[union-attr]
            user_id=who.user_id,
            organization_id=who.organization_id,
        )


def revoke_token(ctx: Context, who: Principal, token_id: str) -> None:
    with ctx.db.session() as s:
        token = repo.get(s, ApiToken, id=token_id, user_id=who.user_id)
        if token is None or token.revoked_at is not None:
            raise NotFound("token not found")
        token.revoked_at = ctx.clock.now()
        token.updated_at = token.revoked_at


def current_user(ctx: Context, who: Principal) -> User:
    with ctx.db.session() as s:
        return repo.require(s, User, "user", id=who.user_id)
