"""``deploy``, ``releases`` and ``rollback``."""

from __future__ import annotations

import json
import sys
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Annotated, Any, BinaryIO

import typer
from rich.console import Console
from rich.progress import BarColumn, DownloadColumn, Progress, TransferSpeedColumn

from shellwego.cli.client import Client, json_lines
from shellwego.cli.context import (
    AppOption,
    JsonOption,
    MaxUnavailableOption,
    SurgeOption,
    client,
    path_of,
    resolve_app,
    rollout_settings,
    wants_json,
)
from shellwego.cli.output import emit_json, fail, line, size, table, when
from shellwego.errors import ShellWeGoError

CHUNK = 256 * 1024


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


class Rollout:
    """Renders the build stream: log lines, the release, deployment progress, the result."""

    def __init__(self) -> None:
        self.last_progress: tuple[Any, ...] | None = None
        self.version: int | None = None

    def show(self, event: dict[str, Any]) -> dict[str, Any] | None:
        """Print one event; returns the final ``done`` event when it arrives."""
        kind = event.get("type")
        if kind == "log":
            line(str(event.get("line", "")))
        elif kind == "release":
            self.version = event.get("version")
            line(f"-----> Released v{self.version}")
        elif kind == "deployment":
            progress = (
                event.get("status"),
                event.get("instances_ready"),
                event.get("instances_total"),
            )
            if progress != self.last_progress:
                self.last_progress = progress
                status, ready, total = progress
                line(f"-----> Deployment {status}: {ready}/{total} instances ready")
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
    api = client()
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
    if not path.is_dir():
        fail(f"{path} is not a directory")
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


def _follow(
    api: Client,
    path: str,
    *,
    content: Iterable[bytes],
    headers: dict[str, str],
    params: dict[str, Any] | None = None,
) -> tuple[Rollout, dict[str, Any] | None]:
    """POST ``content`` and print the build/rollout stream; returns its ``done`` event."""
    rollout = Rollout()
    done: dict[str, Any] | None = None
    with api.stream(
        "POST", path, content=content, params=params, headers=headers, read_timeout=None
    ) as response:
        for event in json_lines(response):
            done = rollout.show(event) or done
    return rollout, done


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
        fail(f"{text!r} is not a release version (e.g. v3 or 3)")
    return int(raw)


def rollback(
    version: Annotated[str, typer.Argument(metavar="vN", help="The release to go back to.")],
    app: AppOption = None,
    surge: SurgeOption = None,
    max_unavailable: MaxUnavailableOption = None,
    json_: JsonOption = False,
) -> None:
    """Roll back: a new release copying vN, rolled out like a deploy.

    --surge and --max-unavailable set this rollout; the app's deploy settings otherwise."""
    number = parse_version(version)
    target = resolve_app(app)
    body = {"version": number, **rollout_settings(surge, max_unavailable)}
    made = client().post(f"{path_of(target)}/rollback", body)
    if wants_json(json_):
        emit_json(made)
        return
    line(f"Rolled back {target} to v{number}: release v{made['version']} is rolling out.")
