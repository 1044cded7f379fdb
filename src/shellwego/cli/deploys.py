"""``deploy``, ``releases`` and ``rollback``."""

from __future__ import annotations

import json
import sys
import tempfile
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Annotated, Any, BinaryIO

import typer
from rich.console import Console
from rich.progress import BarColumn, DownloadColumn, Progress, TransferSpeedColumn

from shellwego.cli.client import ApiError, Client, json_lines
from shellwego.cli.context import (
    AppOption,
    JsonOption,
    MaxUnavailableOption,
    NoWaitOption,
    SurgeOption,
    client,
    path_of,
    resolve_app,
    rollout_settings,
    wants_json,
)
from shellwego.cli.errors import usage
from shellwego.cli.output import emit_json, fail, line, size, table, when
from shellwego.errors import ShellWeGoError

CHUNK = 256 * 1024
HTTP_NOT_FOUND = 404


def register(app: typer.Typer) -> None:
    app.command("deploy")(deploy)
    app.command("releases")(list_releases)
    app.command("rollback")(rollback)
    # the topic:command spelling of Heroku
    app.command("releases:rollback", hidden=True)(rollback)


def _chunks(handle: BinaryIO, total: int, show_progress: bool) -> Iterator[bytes]:
    if not show_progress:
        while chunk := handle.read(CHUNK):
            yield chunk
        return
    with Progress(
        "Uploading",
        BarColumn(),
        DownloadColumn(),
        TransferSpeedColumn(),
        console=Console(stderr=True),
        transient=True,
    ) as progress:
        task = progress.add_task("upload", total=total)
        while chunk := handle.read(CHUNK):
            progress.advance(task, len(chunk))
            yield chunk


Say = Callable[[str], None]


def _to_stderr(text: str) -> None:
    typer.echo(text, err=True)


def _quiet(text: str) -> None:
    pass


class Rollout:
    """Renders the build stream: log lines, the release, deployment progress, the result.

    ``logs`` prints log lines (the build's, the release command's) and the release;
    ``progress`` prints deployment progress."""

    def __init__(self, logs: Say = line, progress: Say = line) -> None:
        self.logs, self.progress = logs, progress
        self.last_progress: tuple[Any, ...] | None = None
        self.version: int | None = None

    def show(self, event: dict[str, Any]) -> dict[str, Any] | None:
        """Print one event; returns the final ``done`` event when it arrives."""
        kind = event.get("type")
        if kind == "log":
            self.logs(str(event.get("line", "")))
        elif kind == "release":
            self.version = event.get("version")
            self.logs(f"-----> Released v{self.version}")
        elif kind == "deployment":
            progress = (
                event.get("status"),
                event.get("instances_ready"),
                event.get("instances_total"),
            )
            if progress != self.last_progress:
                self.last_progress = progress
                status, ready, total = progress
                self.progress(f"-----> Deployment {status}: {ready}/{total} instances ready")
        elif kind == "done":
            return event
        return None


def deploy(
    path: Annotated[Path, typer.Argument(help="The app's source directory.")] = Path("."),
    app: AppOption = None,
    image: Annotated[
        str | None, typer.Option("--image", help="Deploy a container image instead of source.")
    ] = None,
    surge: SurgeOption = None,
    max_unavailable: MaxUnavailableOption = None,
) -> None:
    """Build the source in PATH (or take --image REF) and roll it out; streams the log.

    --surge and --max-unavailable set this deploy's rollout; the app's deploy settings
    (shellwego apps update) apply otherwise."""
    from shellwego.build.archive import make_tarball

    target = resolve_app(app)
    overrides = rollout_settings(surge, max_unavailable)
    if not image and not path.is_dir():
        usage(f"{path} is not a directory")
    api = client()
    _require_app(api, target)
    if image:
        line(f"-----> Deploying image {image} to {target}")
        body = json.dumps({"image": image}).encode()
        _finish(
            _follow(
                api,
                f"{path_of(target)}/deploy",
                content=[body],
                headers={"Content-Type": "application/json"},
                params=overrides,
            )
        )
        return
    with tempfile.TemporaryFile(prefix="shellwego-upload-", suffix=".tar.gz") as handle:
        try:
            total = make_tarball(path.resolve(), handle)
        except ShellWeGoError as exc:
            fail(str(exc))
        except OSError as exc:
            fail(f"cannot read {path}: {exc.strerror or exc}")
        handle.seek(0)
        line(f"-----> Uploading {path.resolve().name or path} ({size(total)}) to {target}")
        outcome = _follow(
            api,
            f"{path_of(target)}/builds",
            content=_chunks(handle, total, sys.stderr.isatty()),
            headers={"Content-Type": "application/gzip", "Content-Length": str(total)},
            params=overrides,
        )
    _finish(outcome)


def _require_app(api: Client, app: str) -> None:
    """Before anything is uploaded: the app exists (else how to create it)."""
    try:
        api.send("GET", path_of(app))
    except ApiError as error:
        if error.status == HTTP_NOT_FOUND:
            fail(f"app {app} does not exist. Create it with: shellwego apps create {app}")
        api.failed(error)


def _follow(
    api: Client,
    path: str,
    *,
    content: Iterable[bytes] | None = None,
    headers: dict[str, str] | None = None,
    params: dict[str, Any] | None = None,
    rollout: Rollout | None = None,
) -> tuple[Rollout, dict[str, Any] | None]:
    """POST ``content`` (GET without it) and print the build/rollout stream; returns its
    ``done`` event."""
    rollout = rollout or Rollout()
    done: dict[str, Any] | None = None
    with api.stream(
        "GET" if content is None else "POST",
        path,
        content=content,
        params=params,
        headers=headers,
        read_timeout=None,
    ) as response:
        for event in json_lines(response):
            done = rollout.show(event) or done
    return rollout, done


def follow_release(
    api: Client, app: str, version: int, doing: str, *, wait: bool, quiet: bool = False
) -> None:
    """``<doing>... done, vN`` once release vN's rollout has ended, exit 1 when it failed.

    Its release command's output is printed as it comes; deployment progress too when
    stderr is a terminal (there). ``wait`` False: say that vN rolls out and return.
    ``quiet``: print nothing but the error (for --json)."""
    if not wait:
        if not quiet:
            line(f"{doing}... v{version} is rolling out")
        return
    rollout = Rollout(
        logs=_quiet if quiet else line,
        progress=_to_stderr if sys.stderr.isatty() and not quiet else _quiet,
    )
    _, done = _follow(api, f"{path_of(app)}/releases/{version}/rollout", rollout=rollout)
    if done is None:
        fail("the API closed the rollout stream before it finished")
    if done.get("status") != "succeeded":
        if not quiet:
            line(f"{doing}... failed, v{version}")
        fail(str(done.get("detail") or "the rollout failed; see: shellwego events"))
    if not quiet:
        line(f"{doing}... done, v{version}")


def _finish(outcome: tuple[Rollout, dict[str, Any] | None]) -> None:
    rollout, done = outcome
    if done is None:
        fail("the API closed the build stream before it finished")
    if done.get("status") != "succeeded":
        fail(f"deploy failed: {done.get('detail') or 'no detail given'}")
    url = done.get("url")
    line(f"-----> Deployed v{rollout.version} to {url}" if url else "-----> Deployed")


def list_releases(app: AppOption = None, json_: JsonOption = False) -> None:
    """The app's releases, newest first."""
    target = resolve_app(app)
    found = client().items(f"{path_of(target)}/releases")
    found.sort(key=lambda r: r["version"], reverse=True)
    if wants_json(json_):
        emit_json(found)
        return
    if not found:
        line(f"{target} has no releases yet. Deploy with: shellwego deploy")
        return
    table(
        ["VERSION", "DESCRIPTION", "PROCESSES", "STACK", "CREATED"],
        [
            [
                f"v{r['version']}",
                r.get("description"),
                " ".join(sorted(r.get("process_types") or {})),
                r.get("stack"),
                when(r.get("created_at")),
            ]
            for r in found
        ],
    )


def parse_version(text: str) -> int:
    raw = text[1:] if text[:1] in ("v", "V") else text
    if not raw.isdigit() or int(raw) < 1:
        usage(f"{text!r} is not a release version (e.g. v3 or 3)")
    return int(raw)


def rollback(
    version: Annotated[str, typer.Argument(metavar="vN", help="The release to go back to.")],
    app: AppOption = None,
    surge: SurgeOption = None,
    max_unavailable: MaxUnavailableOption = None,
    no_wait: NoWaitOption = False,
    json_: JsonOption = False,
) -> None:
    """Roll back: a new release copying vN's code and config vars, rolled out like a
    deploy (the app's config becomes vN's; secrets keep their current values).

    --surge and --max-unavailable set this rollout; the app's deploy settings otherwise."""
    number = parse_version(version)
    target = resolve_app(app)
    body = {"version": number, **rollout_settings(surge, max_unavailable)}
    api = client()
    made = api.post(f"{path_of(target)}/rollback", body)
    doing = f"Rolling back {target} to v{number}"
    as_json = wants_json(json_)
    follow_release(api, target, made["version"], doing, wait=not no_wait, quiet=as_json)
    if as_json:
        emit_json(made)
