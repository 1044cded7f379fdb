"""Releases made straight through the service, for tests that need one without a build."""

from __future__ import annotations

from collections.abc import Mapping

from sqlalchemy.orm import Session

from shellwego.models import App, Release
from shellwego.services import releases
from shellwego.services.context import Context, Principal


def slug_release(
    ctx: Context,
    s: Session,
    who: Principal | None,
    app: App,
    processes: Mapping[str, str],
    *,
    digest: str = "a" * 64,
    slug_env: Mapping[str, str] | None = None,
    description: str = "test",
) -> Release:
    """A new release of ``app`` in the caller's transaction, as if a build made its slug."""
    return releases.create(
        ctx,
        s,
        who,
        app,
        artifact=releases.Artifact(
            slug_digest=digest,
            stack="python",
            process_types=dict(processes),
            slug_env=dict(slug_env or {}),
        ),
        description=description,
    )
