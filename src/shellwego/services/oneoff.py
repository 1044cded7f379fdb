"""One-off commands (``shellwego run``, the release phase) in a release's environment."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from sqlalchemy.orm import Session
from starlette.concurrency import run_in_threadpool

from shellwego.errors import Conflict, RuntimeUnavailable
from shellwego.models import App, Release, Role, new_id
from shellwego.runtime.driver import InstanceSpec
from shellwego.runtime.layer import slug_dir_name

from . import apps as app_service
from . import releases, secrets
from .context import Context, Principal
from .organizations import require_role


@dataclass(frozen=True, slots=True)
class Outcome:
    """How a one-off command ended: its exit code, its output, the id it ran under."""

    exit_code: int
    output: str
    instance_id: str


def environment(ctx: Context, s: Session, release: Release) -> dict[str, str]:
    """What the release's processes see: the slug's own env, then its config (decrypted)."""
    return {**release.slug_env, **secrets.resolve_refs(ctx, s, release.config)}


def _spec(ctx: Context, who: Principal, app_ref: str) -> tuple[App, Release, dict[str, str]]:
    with ctx.db.session() as s:
        app = app_service.find(s, who.organization_id, app_ref)
        require_role(who, Role.MEMBER)
        release = releases.current(s, app)
        return app, release, environment(ctx, s, release)


async def execute(
    ctx: Context,
    app: App,
    release: Release,
    env: dict[str, str],
    command: Sequence[str],
    timeout: float,
    process_type: str = "run",
    instance_id: str | None = None,
) -> Outcome:
    """Run ``command`` in ``release``'s slug and environment, sandboxed as the app's
    instances are, on this control plane's one-off runtime."""
    from shellwego.build.artifacts import extract_slug

    if not release.slug_digest:
        raise Conflict(f"release v{release.version} has no slug to run commands in")
    app_dir = await run_in_threadpool(
        extract_slug,
        ctx.require_artifacts(),
        release.slug_digest,
        ctx.settings.data_dir / "oneoff" / "slugs" / slug_dir_name(release.slug_digest, app.uid),
    )
    instance_id = instance_id or new_id()
    spec = InstanceSpec(
        instance_id=instance_id,
        app_id=app.id,
        app_name=app.name,
        process_type=process_type,
        release_id=release.id,
        command=" ".join(command),
        app_dir=app_dir,
        env={
            **env,
            "SHELLWEGO_APP": app.name,
            "SHELLWEGO_RELEASE": f"v{release.version}",
            "SHELLWEGO_PROCESS_TYPE": process_type,
            "SHELLWEGO_INSTANCE_ID": instance_id,
        },
        port=0,
        uid=app.uid,
    )
    if ctx.oneoff_driver is None:
        raise RuntimeUnavailable("this control plane does not run one-off commands")
    result = await ctx.oneoff_driver.exec(spec, list(command), timeout)
    return Outcome(result.exit_code, result.output, instance_id)


async def run(
    ctx: Context, who: Principal, app_ref: str, command: Sequence[str], timeout: float
) -> tuple[int, str]:
    """``shellwego run``: a command in the current release's environment."""
    app, release, env = await run_in_threadpool(_spec, ctx, who, app_ref)
    outcome = await execute(ctx, app, release, env, command, timeout)
    return outcome.exit_code, outcome.output
