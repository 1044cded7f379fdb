"""Config vars of an app: read, set and unset (each change makes a new release)."""

from __future__ import annotations

from collections.abc import Mapping

from . import apps as app_service
from . import deployments, releases, secrets
from .context import Context, Principal


def get(ctx: Context, who: Principal, app_ref: str) -> dict[str, str]:
    return secrets.config(ctx, who, app_ref)


def update(
    ctx: Context, who: Principal, app_ref: str, body: Mapping[str, object]
) -> tuple[dict[str, str], int | None]:
    """Apply the changes; (the app's config now, the version of the release they made, or
    None when the app has no release yet: its first deploy takes them)."""
    changes = secrets.validate_changes(body)
    version = None
    with ctx.db.session() as s:
        app = app_service.find(s, who.organization_id, app_ref)
        secrets.set_config(ctx, s, who, app, changes)
        if app.current_release_id:
            names = ", ".join(sorted(changes))
            release = releases.create(ctx, s, who, app, description=f"Config change: {names}")
            deployments.start(ctx, s, who, app, release, reason="config change")
            version = release.version
    return get(ctx, who, app_ref), version
