"""The ``pre-receive`` hook of app repositories: a pushed main/master is built and deployed.

git runs it with ``old new ref`` lines on stdin and shows its output to the pusher as
``remote: …``. It sends ``git archive`` of the pushed commit to the builds endpoint
(``$SHELLWEGO_API_URL``, app ``$SHELLWEGO_APP``, token ``$SHELLWEGO_TOKEN``, all set by
the git route) and relays the build stream. A failed build or deploy exits non-zero,
so git rejects the push and the branch stays where it was. Other branches are accepted
without deploying. A push whose branch moved since the pusher fetched (another push came
first) is refused before anything is built: git would refuse its update anyway.

Run as ``python -m shellwego.build.hook``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import IO, Any, TextIO

import httpx

DEPLOY_REFS = ("refs/heads/main", "refs/heads/master")
ERROR = "!      "
STEP = "-----> "
CHUNK = 64 * 1024
TIMEOUT = httpx.Timeout(30.0, read=3600.0)


def parse_updates(lines: Iterable[str]) -> list[tuple[str, str, str]]:
    updates = []
    for line in lines:
        parts = line.split()
        if len(parts) == 3:
            updates.append((parts[0], parts[1], parts[2]))
    return updates


def _is_zero(sha: str) -> bool:
    return set(sha) == {"0"}


def describe(event: Mapping[str, Any]) -> str | None:
    """One readable line for a build stream event (None: nothing to show)."""
    kind = event.get("type")
    if kind == "log":
        return str(event.get("line", ""))
    if kind == "release":
        return f"{STEP}Released v{event.get('version')}"
    if kind == "deployment":
        return (
            f"{STEP}Deployment {event.get('status')}: "
            f"{event.get('instances_ready')}/{event.get('instances_total')} instances ready"
        )
    if kind == "done":
        if event.get("status") == "succeeded":
            return f"{STEP}Deployed: {event.get('url')}"
        return f"{ERROR}Deploy failed: {event.get('detail')}"
    return None


def _chunks(handle: IO[bytes]) -> Iterator[bytes]:
    while chunk := handle.read(CHUNK):
        yield chunk


def _problem_detail(response: httpx.Response) -> str:
    try:
        body = response.json()
    except ValueError:
        return f"HTTP {response.status_code}"
    if isinstance(body, dict) and body.get("detail"):
        return str(body["detail"])
    return f"HTTP {response.status_code}"


def deploy(
    commit: str, ref: str, env: Mapping[str, str], out: TextIO, client: httpx.Client
) -> bool:
    """Build and deploy ``commit``; True when the deploy succeeded."""

    def say(line: str) -> None:
        print(line, file=out, flush=True)

    branch = ref.removeprefix("refs/heads/")
    say(f"{STEP}Deploying {branch} ({commit[:12]})")
    with tempfile.TemporaryFile() as tarball:
        archive = subprocess.run(
            ["git", "archive", "--format=tar.gz", commit],
            stdout=tarball,
            stderr=subprocess.PIPE,
            check=False,
        )
        if archive.returncode != 0:
            say(f"{ERROR}git archive failed: {archive.stderr.decode(errors='replace').strip()}")
            return False
        size = tarball.tell()
        tarball.seek(0)
        url = f"{env['SHELLWEGO_API_URL'].rstrip('/')}/v1/apps/{env['SHELLWEGO_APP']}/builds"
        headers = {
            "Authorization": f"Bearer {env['SHELLWEGO_TOKEN']}",
            "Content-Type": "application/gzip",
            "Content-Length": str(size),
        }
        try:
            with client.stream("POST", url, content=_chunks(tarball), headers=headers) as resp:
                if resp.status_code != 200:
                    resp.read()
                    say(f"{ERROR}Deploy refused: {_problem_detail(resp)}")
                    return False
                for raw in resp.iter_lines():
                    if not raw.strip():
                        continue
                    try:
                        event = json.loads(raw)
                    except ValueError:
                        say(raw)
                        continue
                    line = describe(event)
                    if line is not None:
                        say(line)
                    if event.get("type") == "done":
                        return bool(event.get("status") == "succeeded")
        except httpx.HTTPError as exc:
            say(f"{ERROR}Deploy interrupted: {type(exc).__name__}: {exc}")
            return False
    say(f"{ERROR}The build stream ended before the deploy finished")
    return False


def _current_ref(ref: str) -> str | None:
    """What ``ref`` points at in this repository now (None: it does not exist)."""
    proc = subprocess.run(
        ["git", "rev-parse", "--verify", "--quiet", f"{ref}^{{commit}}"],
        capture_output=True,
        text=True,
        check=False,
    )
    return proc.stdout.strip() or None if proc.returncode == 0 else None


def run(
    stdin: TextIO,
    out: TextIO,
    env: Mapping[str, str],
    current: Callable[[str], str | None] = _current_ref,
) -> int:
    """The hook's work; returns its exit status (non-zero rejects the push)."""
    updates = parse_updates(stdin)
    targets = [u for u in updates if u[2] in DEPLOY_REFS]
    for _old, _new, ref in updates:
        if ref not in DEPLOY_REFS and ref.startswith("refs/heads/"):
            branch = ref.removeprefix("refs/heads/")
            print(
                f"{STEP}{branch}: accepted, not deployed (push main or master to deploy)",
                file=out,
                flush=True,
            )
    if not targets:
        return 0
    if any(_is_zero(new) for _old, new, _ref in targets):
        print(f"{ERROR}The deployed branch cannot be deleted", file=out, flush=True)
        return 1
    for old, _new, ref in targets:
        if current(ref) != (None if _is_zero(old) else old):
            branch = ref.removeprefix("refs/heads/")
            print(
                f"{ERROR}{branch} moved while this push was on its way (another push came "
                "first): fetch, merge or rebase, and push again",
                file=out,
                flush=True,
            )
            return 1
    missing = [
        k for k in ("SHELLWEGO_API_URL", "SHELLWEGO_APP", "SHELLWEGO_TOKEN") if not env.get(k)
    ]
    if missing:
        print(
            f"{ERROR}This repository is not set up for deploys ({', '.join(missing)} unset)",
            file=out,
            flush=True,
        )
        return 1
    with httpx.Client(timeout=TIMEOUT, trust_env=False) as client:
        for _old, new, ref in targets:
            if not deploy(new, ref, env, out, client):
                return 1
    return 0


def main() -> int:
    return run(sys.stdin, sys.stdout, os.environ)


if __name__ == "__main__":
    sys.exit(main())
