"""A flood of bad logins against a real `shellwego server` (both backends): no answer is
a 5xx, and authenticated reads keep succeeding while it lasts. Timings are the
benchmark's business (bench/login_flood.py); this checks outcomes only."""

from __future__ import annotations

import random
import signal
import threading
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from e2e.conftest import SHELLWEGO, platform_env
from e2e.test_split_roles import spawn, stop, wait_line
from shellwego.services.context import Context
from shellwego.services.tokens import JOIN_PREFIX, new_token
from shellwego.settings import Settings
from support.net import free_port

from .conftest import PASSWORD

FLOODERS = 8
ATTEMPTS = 12


@pytest.fixture
def server(ctx: Context, settings: Settings, tmp_path: Path) -> Iterator[tuple[str, str]]:
    """`shellwego server --no-edge` on the test's (emptied) database: its URL and its join
    token (which bootstrapping a server replica asks for)."""
    port = free_port()
    join = new_token(JOIN_PREFIX)
    env = {
        "SHELLWEGO_JOIN_TOKEN": join,
        **platform_env(tmp_path, "25300-25399"),
        "DATABASE_URL": settings.database_url,
        "SHELLWEGO_DATA_DIR": str(tmp_path / "server"),
        "SHELLWEGO_API_PORT": str(port),
    }
    log = tmp_path / "server.log"
    proc = spawn([SHELLWEGO, "server", "--no-edge"], env, log)
    try:
        wait_line(log, "API listening", proc)
        yield f"http://127.0.0.1:{port}", join
    finally:
        stop(proc, signal.SIGINT)


def _from(address: str, url: str) -> httpx.Client:
    transport = httpx.HTTPTransport(local_address=address)
    return httpx.Client(base_url=url, transport=transport, timeout=60)


def test_a_login_flood_gets_no_5xx_and_reads_keep_working(server: tuple[str, str]) -> None:
    url, join = server
    with httpx.Client(base_url=url, timeout=60) as c:
        r = c.post(
            "/v1/bootstrap",
            headers={"Authorization": f"Bearer {join}"},
            json={
                "user": {"email": "owner@example.com", "password": PASSWORD},
                "organization": {"name": "Acme", "slug": "acme"},
            },
        )
        assert r.status_code == 201, r.text
        bearer = {"Authorization": f"Bearer {r.json()['token']['token']}"}
        assert c.post("/v1/apps", headers=bearer, json={"name": "steady"}).status_code == 201

    answers: Counter[int] = Counter()
    reads: Counter[int] = Counter()
    lock = threading.Lock()
    done = threading.Event()

    def flood(n: int) -> None:
        # half from one address (soon refused with 429), half from a new address and
        # account each time (every one costs a password check)
        rng = random.Random(n)
        for i in range(ATTEMPTS):
            if n % 2:
                address, email = "127.0.9.9", "victim@example.com"
            else:
                octets = (rng.randrange(10, 250), rng.randrange(256), rng.randrange(1, 255))
                address = "127.{}.{}.{}".format(*octets)
                email = f"guess{n}-{i}@example.com"
            with _from(address, url) as client:
                r = client.post("/v1/auth/token", json={"email": email, "password": "guess!"})
            with lock:
                answers[r.status_code] += 1

    def read() -> None:
        with httpx.Client(base_url=url, headers=bearer, timeout=60) as client:
            while not done.is_set():
                r = client.get("/v1/apps")
                with lock:
                    reads[r.status_code] += 1
                if r.status_code == 200:
                    assert [a["name"] for a in r.json()["items"]] == ["steady"]

    flooders = [threading.Thread(target=flood, args=(n,)) for n in range(FLOODERS)]
    reader = threading.Thread(target=read)
    reader.start()
    for t in flooders:
        t.start()
    for t in flooders:
        t.join()
    done.set()
    reader.join()

    assert sum(answers.values()) == FLOODERS * ATTEMPTS
    assert set(answers) <= {401, 429}, answers
    assert answers[401] and answers[429], answers
    assert set(reads) == {200} and reads[200] > 0, reads
    with _from("127.0.7.7", url) as client:
        r = client.post("/v1/auth/token", json={"email": "owner@example.com", "password": PASSWORD})
        assert r.status_code == 201, r.text
