"""Bootstrap, login, API tokens, and turning a bearer token into a Principal."""

from __future__ import annotations

import logging
from dataclasses import dataclass, replace
from datetime import datetime, timedelta

import sqlalchemy as sa

from shellwego.errors import Conflict, DatabaseBusy, Forbidden, NotFound, Unauthenticated
from shellwego.models import (
    ApiToken,
    ApiTokenCreate,
    Membership,
    Organization,
    OrganizationCreate,
    PlatformFact,
    Role,
    User,
    UserCreate,
    new_id,
)
from shellwego.models.platform import BOOTSTRAPPED
from shellwego.store import repository as repo

from . import nodes, organizations, throttle
from .context import Context, Principal
from .tokens import (
    DUMMY_HASH,
    USER_PREFIX,
    hash_password,
    new_token,
    token_hash,
    verify_password,
)

log = logging.getLogger(__name__)

# a token's last use is recorded to the minute
TOKEN_USE_RESOLUTION_SECONDS = 60


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


ALREADY_BOOTSTRAPPED = "this platform is already bootstrapped; log in instead"


def bootstrap(
    ctx: Context,
    user: UserCreate,
    org: OrganizationCreate,
    *,
    source: str | None = None,
    join_token: str | None = None,
) -> Bootstrap:
    """Create the first organization and its owner; refused once any user exists.

    Happens once per database, however many callers race: the transaction that makes the
    owner also inserts the unique ``bootstrapped`` platform fact, so every other one fails.
    Where the platform is not the all-in-one (``settings.open_bootstrap`` is off), only a
    caller holding a valid ``join_token`` may bootstrap through the API.

    A refused bootstrap counts as a failed password attempt of ``source`` (the client's
    address): the endpoint takes a password, so it is limited like a login.
    """
    address = throttle.address_key(source)
    throttle.check(ctx, address)
    if not ctx.settings.open_bootstrap:
        try:
            nodes.check_join_token(ctx, join_token)
        except Unauthenticated:
            throttle.failed(ctx, address)
            raise Unauthenticated(
                "bootstrapping this platform needs its join token as the bearer token; "
                "or run `shellwego bootstrap --email EMAIL` with its DATABASE_URL"
            ) from None
    with ctx.db.session(write=False) as s:
        taken = _bootstrapped(s)
    if not taken:
        password_hash = hash_password(user.password)  # slow: outside any transaction
        try:
            with ctx.db.session() as s:
                if not _bootstrapped(s):
                    return _first_owner(ctx, s, user, org, password_hash)
        except Conflict as exc:
            if str(exc) != ALREADY_BOOTSTRAPPED:
                raise
    throttle.failed(ctx, address)
    raise Conflict(ALREADY_BOOTSTRAPPED)


def _bootstrapped(s: sa.orm.Session) -> bool:
    """Whether the first owner exists (a database bootstrapped before the platform fact
    was kept has users and no fact)."""
    return repo.get(s, PlatformFact, name=BOOTSTRAPPED) is not None or repo.count(s, User) > 0


def _first_owner(
    ctx: Context, s: sa.orm.Session, user: UserCreate, org: OrganizationCreate, password_hash: str
) -> Bootstrap:
    owner = organizations.new_user(ctx, user.email, user.name, password_hash, operator=True)
    now = ctx.clock.now()
    # first: a concurrent bootstrap waits on this row (PostgreSQL) and then fails here
    repo.add(
        s,
        PlatformFact(
            id=new_id(), name=BOOTSTRAPPED, value=owner.id, created_at=now, updated_at=now
        ),
        conflict=ALREADY_BOOTSTRAPPED,
    )
    repo.add(s, owner, conflict="email already registered")
    organization = organizations.add_with_owner(ctx, s, org, owner.id)
    issued = _issue(ctx, s, owner.id, organization.id, ApiTokenCreate(name="bootstrap"))
    who = Principal(owner.id, organization.id, Role.OWNER, None, is_operator=True)
    return Bootstrap(organization=organization, user=owner, token=replace(issued, principal=who))


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


def login(
    ctx: Context,
    email: str,
    password: str,
    organization: str | None,
    *,
    source: str | None = None,
) -> IssuedToken:
    """A new token for ``email`` once its password checks out.

    Limited per source address and per account (:mod:`.throttle`): while either must
    wait, the answer is 429 and no password is checked. The password check (argon2, slow
    on purpose) runs outside any transaction; the reads before it take no write lock and
    the writes after it are short.
    """
    address, account = throttle.address_key(source), throttle.account_key(email)
    throttle.check(ctx, address, account)
    with ctx.db.session(write=False) as s:
        user = repo.get(s, User, email=email)
    if not verify_password(user.password_hash if user else DUMMY_HASH, password) or not user:
        throttle.failed(ctx, address, account)
        raise Unauthenticated("invalid email or password")
    user_id = user.id
    return ctx.db.retrying(lambda: _signed_in(ctx, user_id, account, organization))


def _signed_in(
    ctx: Context, user_id: str, account: throttle.Key, organization: str | None
) -> IssuedToken:
    """The login's token, in the organization asked for (else the user's first); the
    account's failed attempts are forgotten."""
    with ctx.db.session() as s:
        throttle.succeeded(s, account)
        user = repo.require(s, User, "user", id=user_id)
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
    """The caller a bearer token stands for; read-only (it takes no write lock), except
    that a token's ``last_used_at`` is brought up to date at most once a minute."""
    if not bearer:
        raise Unauthenticated("missing bearer token: log in with `shellwego login`")
    if not bearer.startswith(USER_PREFIX):
        raise Unauthenticated("invalid or revoked token")
    now = ctx.clock.now()
    with ctx.db.session(write=False) as s:
        token = repo.get(s, ApiToken, token_hash=token_hash(bearer))
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
    if last is None or (now - last).total_seconds() > TOKEN_USE_RESOLUTION_SECONDS:
        _note_use(ctx, token.id, now)
    return Principal(
        user_id=token.user_id,
        organization_id=token.organization_id,
        role=Role(membership.role),
        token_id=token.id,
        is_operator=user.is_operator,
    )


def _note_use(ctx: Context, token_id: str, now: datetime) -> None:
    """Record when a token was last used: best effort, a busy database skips it (a later
    request records it) rather than fail the request."""
    since = now - timedelta(seconds=TOKEN_USE_RESOLUTION_SECONDS)
    try:
        with ctx.db.session() as s:
            repo.touch_if_older(s, ApiToken, token_id, "last_used_at", now, since)
    except DatabaseBusy:
        log.info("database busy: last use of token %s not recorded this time", token_id)


def create_token(ctx: Context, who: Principal, body: ApiTokenCreate) -> IssuedToken:
    with ctx.db.session() as s:
        return _issue(ctx, s, who.user_id, who.organization_id, body)


def list_tokens(
    ctx: Context, who: Principal, cursor: str | None, limit: int
) -> repo.Page[ApiToken]:
    with ctx.db.session(write=False) as s:
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
    with ctx.db.session(write=False) as s:
        return repo.require(s, User, "user", id=who.user_id)
