"""One-off commands (``shellwego run``) in the current release's environment."""

from __future__ import annotations

from collections.abc import Sequence

from starlette.concurrency import run_in_threadpool

from shellwego.errors import Conflict
from shellwego.models import App, Release, Role, new_id
from shellwego.runtime.driver import InstanceSpec

from . import apps as app_service
from . import releases, secrets
from .context import Context, Principal
from .organizations import require_role


def _spec(ctx: Context, who: Principal, app_ref: str) -> tuple[App, Release, dict[str, str]]:
    with ctx.db.session() as s:
        app = app_service.find(s, who.organization_id, app_ref)
        require_role(who, Role.MEMBER)
        release = releases.current(s, app)
        env = {**release.slug_env, **secrets.resolve_refs(ctx, s, release.config)}
        return app, release, env


async def run(
    ctx: Context, who: Principal, app_ref: str, command: Sequence[str], timeout: float
) -> tuple[int, str]:
    app, release, env = await run_in_threadpool(_spec, ctx, who, app_ref)
    from shellwego.build.artifacts import extract_slug

    if not release.slug_digest:
        raise Conflict(f"release v{release.version} has no slug to run commands in")
    app_dir = await run_in_threadpool(
        extract_slug,
        ctx.extras["artifacts"],
        release.slug_digest,
        ctx.settings.data_dir / "oneoff" / "slugs" / release.slug_digest,
    )
    instance_id = new_id()
    spec = InstanceSpec(
        instance_id=instance_id,
        app_id=app.id,
        app_name=app.name,
        process_type="run",
        release_id=release.id,
        command=" ".join(command),
        app_dir=app_dir,
        env={
            **env,
            "SHELLWEGO_APP": app.name,
            "SHELLWEGO_RELEASE": f"v{release.version}",
            "SHELLWEGO_PROCESS_TYPE": "run",
            "SHELLWEGO_INSTANCE_ID": instance_id,
        },
        port=0,
    )
    result = await ctx.extras["oneoff_driver"].exec(spec, list(command), timeout)
    return result.exit_code, result.output
