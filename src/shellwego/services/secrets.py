"""Secrets and config vars, encrypted at rest; values leave only by reveal or to agents.

A config var is a secret of kind ``config`` scoped to an app: members may read it back
(``config get``), while a ``secret`` is write-only except through the explicit reveal
endpoint (admin and above). Every value is one :class:`SecretVersion` row holding
AES-256-GCM ciphertext under its own data key.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass

from sqlalchemy.orm import Session

from shellwego.crypto import Envelope, KeyProvider, Sealed
from shellwego.errors import ConfigError, Conflict, InvalidInput, NotFound
from shellwego.models import (
    App,
    Role,
    Secret,
    SecretCreate,
    SecretKind,
    SecretScope,
    SecretVersion,
    SecretVersionInfo,
    new_id,
)
from shellwego.models.secrets import ENV_NAME_PATTERN, VALUE_MAX_LENGTH
from shellwego.store import Database
from shellwego.store import repository as repo

from . import apps as app_service
from . import masterkey
from .context import Context, Principal
from .organizations import require_role

# longer than any write transaction takes between wrapping a data key and committing it
SETTLE_SECONDS = 10.0
ENV_NAME = re.compile(ENV_NAME_PATTERN)
MAX_VALUE = VALUE_MAX_LENGTH


def _context(secret_id: str, version: int) -> bytes:
    return f"{secret_id}:{version}".encode()


def _seal_version(
    ctx: Context, s: Session, secret: Secret, version: int, value: str, who: str | None
) -> SecretVersion:
    sealed = ctx.envelope.seal(value.encode(), _context(secret.id, version))
    row = SecretVersion(
        id=new_id(),
        secret_id=secret.id,
        version=version,
        ciphertext=sealed.ciphertext,
        nonce=sealed.nonce,
        wrapped_key=sealed.wrapped_key,
        key_id=sealed.key_id,
        created_at=ctx.clock.now(),
        created_by=who,
    )
    return repo.add(s, row, conflict="secret version already exists")


def open_version(ctx: Context, row: SecretVersion) -> str:
    sealed = Sealed(
        ciphertext=row.ciphertext, nonce=row.nonce, wrapped_key=row.wrapped_key, key_id=row.key_id
    )
    return ctx.envelope.open(sealed, _context(row.secret_id, row.version)).decode()


def _live(s: Session, org_id: str, scope_key: str, name: str) -> Secret | None:
    return repo.get(s, Secret, organization_id=org_id, scope_key=scope_key, name=name)


def _store(
    ctx: Context,
    s: Session,
    who: Principal,
    app: App | None,
    name: str,
    value: str,
    kind: SecretKind,
) -> Secret:
    """Create the secret, or add a version to it; a deleted one is brought back."""
    scope_key = app.id if app else ""
    now = ctx.clock.now()
    secret = _live(s, who.organization_id, scope_key, name)
    if secret is not None and secret.deleted_at is not None and secret.kind != kind:
        _retire(s, secret)
        secret = None
    if secret is None:
        secret = Secret(
            id=new_id(),
            name=name,
            expires_at=None,
            organization_id=who.organization_id,
            app_id=app.id if app else None,
            scope_key=scope_key,
            kind=kind,
            scope=SecretScope.APP if app else SecretScope.ORGANIZATION,
            current_version=1,
            deleted_at=None,
            last_used_at=None,
            created_by=who.user_id,
            created_at=now,
            updated_at=now,
        )
        repo.add(s, secret, conflict=f"{name} already exists")
        _seal_version(ctx, s, secret, 1, value, who.user_id)
        return secret
    if secret.deleted_at is None and secret.name != name:
        raise Conflict(f"{secret.name} already exists (names differing only in case are one name)")
    latest = repo.max_of(s, SecretVersion, "version", secret_id=secret.id)
    secret.current_version = int(latest or 0) + 1
    secret.name = name  # a deleted one comes back under the name given now
    secret.deleted_at = None
    secret.kind = kind
    secret.updated_at = now
    _seal_version(ctx, s, secret, secret.current_version, value, who.user_id)
    return secret


def _retire(s: Session, secret: Secret) -> None:
    """Move a deleted secret out of its name's way: its scope key becomes its own id.

    A name that comes back as the other kind (a deleted secret set as a config var, or
    the reverse) gets a row of its own, so every row holds versions of one kind only and
    a rollback can never restore a secret's value as a readable config var. Releases keep
    resolving the retired row's versions by id.
    """
    secret.scope_key = secret.id
    s.flush()


# ---- secrets API ----------------------------------------------------------------


def find(s: Session, who: Principal, ref: str, app_ref: str | None = None) -> Secret:
    secret = None
    if app_service.ULID.match(ref):
        secret = repo.get(s, Secret, id=ref, organization_id=who.organization_id)
    if secret is None:
        scope_key = app_service.find(s, who.organization_id, app_ref).id if app_ref else ""
        secret = _live(s, who.organization_id, scope_key, ref)
    if secret is None or secret.deleted_at is not None or secret.kind != SecretKind.SECRET:
        raise NotFound("secret not found")
    return secret


def create(ctx: Context, who: Principal, body: SecretCreate) -> Secret:
    require_role(who, Role.MEMBER)
    with ctx.db.session() as s:
        app = app_service.find(s, who.organization_id, body.app) if body.app else None
        existing = _live(s, who.organization_id, app.id if app else "", body.name)
        if existing is not None and existing.deleted_at is None:
            raise Conflict(f"secret {existing.name} already exists; rotate it to change its value")
        secret = _store(ctx, s, who, app, body.name, body.value, SecretKind.SECRET)
        secret.expires_at = body.expires_at
        return secret


def list_page(
    ctx: Context, who: Principal, cursor: str | None, limit: int, app_ref: str | None
) -> repo.Page[Secret]:
    with ctx.db.session() as s:
        filters: dict[str, str] = {}
        if app_ref:
            filters["app_id"] = app_service.find(s, who.organization_id, app_ref).id
        return repo.page(
            s,
            Secret,
            cursor=cursor,
            limit=limit,
            where=[Secret.deleted_at.is_(None)],  # type: ignore[union-attr]
            organization_id=who.organization_id,
            kind=SecretKind.SECRET.value,
            **filters,
        )


def get(ctx: Context, who: Principal, ref: str, app_ref: str | None) -> Secret:
    with ctx.db.session() as s:
        return find(s, who, ref, app_ref)


def rotate(ctx: Context, who: Principal, ref: str, app_ref: str | None, value: str) -> Secret:
    require_role(who, Role.MEMBER)
    with ctx.db.session() as s:
        secret = find(s, who, ref, app_ref)
        app = repo.get(s, App, id=secret.app_id) if secret.app_id else None
        return _store(ctx, s, who, app, secret.name, value, SecretKind.SECRET)


def versions(
    ctx: Context, who: Principal, ref: str, app_ref: str | None, cursor: str | None, limit: int
) -> repo.Page[SecretVersionInfo]:
    """A secret's versions, oldest first (ids are ULIDs, so id order is version order)."""
    with ctx.db.session() as s:
        secret = find(s, who, ref, app_ref)
        page = repo.page(s, SecretVersion, cursor=cursor, limit=limit, secret_id=secret.id)
        return repo.Page(
            items=[SecretVersionInfo.model_validate(r, from_attributes=True) for r in page.items],
            next_cursor=page.next_cursor,
        )


def reveal(
    ctx: Context, who: Principal, ref: str, app_ref: str | None, version: int | None
) -> tuple[Secret, str]:
    with ctx.db.session() as s:
        secret = find(s, who, ref, app_ref)  # another tenant's secret is 404, not 403
        require_role(who, Role.ADMIN)
        row = repo.get(
            s, SecretVersion, secret_id=secret.id, version=version or secret.current_version
        )
        if row is None:
            raise NotFound("secret version not found")
        secret.last_used_at = ctx.clock.now()
        return secret, open_version(ctx, row)


def delete(ctx: Context, who: Principal, ref: str, app_ref: str | None) -> None:
    """Soft delete: releases that reference older versions keep working."""
    require_role(who, Role.MEMBER)
    with ctx.db.session() as s:
        secret = find(s, who, ref, app_ref)
        secret.deleted_at = ctx.clock.now()
        secret.updated_at = secret.deleted_at


# ---- config vars ----------------------------------------------------------------


def app_env_refs(s: Session, app: App) -> dict[str, str]:
    """Name → secret version id of every live config var and app secret (for a release)."""
    result: dict[str, str] = {}
    for scope_key in ("", app.id):  # org-wide first, app-specific overrides
        rows = repo.find_all(
            s,
            Secret,
            Secret.deleted_at.is_(None),  # type: ignore[union-attr]
            organization_id=app.organization_id,
            scope_key=scope_key,
        )
        for secret in rows:
            version = repo.get(
                s, SecretVersion, secret_id=secret.id, version=secret.current_version
            )
            if version is not None:
                result[secret.name] = version.id
    return result


def resolve_refs(ctx: Context, s: Session, refs: Mapping[str, str]) -> dict[str, str]:
    """Decrypt a release's config snapshot (name → version id) into env values."""
    if not refs:
        return {}
    rows = repo.find_all(s, SecretVersion, SecretVersion.id.in_(list(refs.values())))  # type: ignore[attr-defined]
    by_id = {row.id: row for row in rows}
    return {name: open_version(ctx, by_id[vid]) for name, vid in refs.items() if vid in by_id}


def _config_vars(s: Session, app: App) -> list[Secret]:
    """The app's live config vars (not its secrets)."""
    return repo.find_all(
        s,
        Secret,
        Secret.deleted_at.is_(None),  # type: ignore[union-attr]
        organization_id=app.organization_id,
        scope_key=app.id,
        kind=SecretKind.CONFIG.value,
    )


def config(
    ctx: Context, who: Principal, app_ref: str, only: Collection[str] | None = None
) -> dict[str, str]:
    """The app's config vars (``only``: just those named; the others are not decrypted)."""
    with ctx.db.session() as s:
        app = app_service.find(s, who.organization_id, app_ref)
        refs = {}
        for secret in _config_vars(s, app):
            if only is not None and secret.name not in only:
                continue
            version = repo.get(
                s, SecretVersion, secret_id=secret.id, version=secret.current_version
            )
            if version is not None:
                refs[secret.name] = version.id
        return dict(sorted(resolve_refs(ctx, s, refs).items()))


def restore_config(
    ctx: Context, s: Session, who: Principal, app: App, refs: Mapping[str, str]
) -> None:
    """Make the app's config vars those of a release (``refs``: its name → version id),
    inside the caller's transaction: for a rollback.

    Config vars the release did not have are unset; the others point at the release's
    versions again (no value is decrypted or copied). Secrets are not config vars and are
    left as they are: a rollback never brings back an old value of a secret, and a name
    that is an app secret now stays the secret.
    """
    require_role(who, Role.MEMBER)
    now = ctx.clock.now()
    versions = (
        repo.find_all(s, SecretVersion, SecretVersion.id.in_(list(refs.values())))  # type: ignore[attr-defined]
        if refs
        else []
    )
    rows = {
        row.id: row
        for row in (
            repo.find_all(s, Secret, Secret.id.in_({v.secret_id for v in versions}))  # type: ignore[attr-defined]
            if versions
            else []
        )
    }
    by_id = {v.id: v for v in versions}
    wanted: list[tuple[str, Secret, SecretVersion]] = []
    for name, version_id in refs.items():
        version = by_id.get(version_id)
        row = rows.get(version.secret_id) if version is not None else None
        if version is None or row is None:
            continue
        if row.kind == SecretKind.CONFIG and row.app_id == app.id:
            wanted.append((name, row, version))
    keep = {row.id for _, row, _ in wanted}
    for row in _config_vars(s, app):
        if row.id not in keep:
            row.deleted_at = now
            row.updated_at = now
    for name, row, version in wanted:
        if row.scope_key == app.id:
            if row.deleted_at is not None or row.current_version != version.version:
                row.deleted_at = None
                row.current_version = version.version
                row.name = name
                row.updated_at = now
            continue
        # retired: the name was taken by a secret since; a live secret keeps it
        holder = _live(s, app.organization_id, app.id, name)
        if holder is None or holder.deleted_at is not None:
            _store(ctx, s, who, app, name, open_version(ctx, version), SecretKind.CONFIG)
    s.flush()


def validate_changes(changes: Mapping[str, object]) -> dict[str, str | None]:
    if not changes:
        raise InvalidInput("give at least one config var to set or unset")
    clean: dict[str, str | None] = {}
    for name, value in changes.items():
        if not ENV_NAME.match(name):
            raise InvalidInput(f"invalid config var name {name!r}: use letters, digits and _")
        if value is not None and not isinstance(value, str):
            raise InvalidInput(f"config var {name} must be a string (or null to unset)")
        if isinstance(value, str) and len(value) > MAX_VALUE:
            raise InvalidInput(f"config var {name} is longer than {MAX_VALUE} characters")
        clean[name] = value
    return clean


def set_config(
    ctx: Context, s: Session, who: Principal, app: App, changes: Mapping[str, str | None]
) -> None:
    """Apply sets and unsets inside the caller's transaction."""
    require_role(who, Role.MEMBER)
    now = ctx.clock.now()
    for name, value in changes.items():
        if value is None:
            secret = _live(s, who.organization_id, app.id, name)
            if secret is None or secret.deleted_at is not None or secret.kind != SecretKind.CONFIG:
                raise NotFound(f"config var {name} is not set")
            secret.deleted_at = now
            secret.updated_at = now
        else:
            existing = _live(s, who.organization_id, app.id, name)
            if (
                existing is not None
                and existing.deleted_at is None
                and existing.kind == SecretKind.SECRET
            ):
                raise InvalidInput(f"{name} is a secret of this app; rotate it instead")
            _store(ctx, s, who, app, name, value, SecretKind.CONFIG)


# ---- master-key rotation ----------------------------------------------------------


@dataclass(frozen=True, slots=True)
class KeyRotation:
    current_key_id: str
    new_key: bool  # False: the current key came from the environment, or a rotation resumed
    rewrapped: int
    retired: list[str]  # keys dropped from the keyring file
    still_given: list[str]  # older keys still passed in (wrap nothing now: stop passing them)


def key_usage(db: Database) -> dict[str, int]:
    """How many data keys each master key wraps (key ids only, never key material)."""
    with db.session() as s:
        return {str(k): n for k, n in repo.count_by(s, SecretVersion, "key_id").items()}


def rotate_master_key(
    db: Database,
    provider: KeyProvider,
    *,
    batch_size: int = 500,
    after_batch: Callable[[int], None] | None = None,
    settle_seconds: float = SETTLE_SECONDS,
    sleep: Callable[[float], None] = time.sleep,
) -> KeyRotation:
    """Re-wrap every data key under the current master key; values are never touched.

    Crash-safe and resumable: the new key joins the keyring (an atomic file replace)
    before any data key moves, each batch commits on its own, and older keys leave the
    keyring only once no data key is wrapped by them, checked while writers are held
    off. Running it again after a crash finishes the same rotation.

    A server that wrapped a data key under the old key just before the new one joined
    the keyring may not have inserted it yet; the older keys are retired only once
    ``settle_seconds`` have passed since the keyring changed, so such a write has either
    committed (and is re-wrapped here) or failed.
    """
    if batch_size < 1:
        raise InvalidInput("batch size must be at least 1")
    with db.exclusive("master-key-rotation"):
        missing = sorted(set(key_usage(db)) - set(provider.key_ids))
        if missing:
            raise ConfigError(
                f"data keys are wrapped by master key(s) {', '.join(missing)} that are not "
                "configured: give them in SHELLWEGO_MASTER_KEY_OLD and run again"
            )
        new_key = provider.begin_rotation()
        current = provider.current_key_id
        # replicas started from here on must hold the new key (services/masterkey.py)
        masterkey.record(db, current)
        envelope = Envelope(provider)
        done = 0
        while True:
            with db.session() as s:
                rows = repo.lock_batch(
                    s, SecretVersion, SecretVersion.key_id != current, limit=batch_size
                )
                wait = provider.changed_at() + settle_seconds - time.time()
                if not rows and wait <= 0:
                    repo.hold_writes(s, SecretVersion)
                    if repo.count(s, SecretVersion, SecretVersion.key_id != current) == 0:
                        retired = provider.retire_others()
                        break
                    continue  # a writer slipped one in under an older key
                for row in rows:
                    row.wrapped_key, row.key_id = envelope.rewrap(row.wrapped_key, row.key_id)
                done += len(rows)
            if not rows:
                sleep(wait)  # then look again for writes that landed meanwhile
            elif after_batch is not None:
                after_batch(done)
    still = [k for k in provider.key_ids if k != current]
    return KeyRotation(
        current_key_id=current,
        new_key=new_key,
        rewrapped=done,
        retired=retired,
        still_given=still,
    )
