"""Authenticated reads during a flood of bad logins, on SQLite and on PostgreSQL.

For each backend, starts a real `shellwego server --no-edge` on an empty database (a new
SQLite file; a new PostgreSQL database, dropped afterwards), bootstraps it and creates an
app. Then N client threads send bad logins as fast as they are answered while one client
times authenticated `GET /v1/apps` back to back. Half of the flooding clients send from
one address at one account (the login limits soon answer them 429); the other half send
each attempt from a new loopback address (127.x.y.z) at a new email, so the limits never
apply and every attempt costs a full argon2 check. Prints, per backend: the reads' p50,
p95 and max latency, and the answers by status (5xx and 429 counted). With
``--fresh-addresses`` every flooding client sends from new addresses (the worst case:
nothing is answered 429, every attempt is an argon2 check).

Target: p95 < 200 ms and no 5xx on both backends.

Run: .venv/bin/python bench/login_flood.py [--clients 8] [--seconds 15] [--fresh-addresses]
     [--pg-url postgresql://postgres@127.0.0.1:5432/postgres]
"""

from __future__ import annotations

import argparse
import os
import random
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import psycopg

PASSWORD = "benchmark password"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextmanager
def postgres_database(admin_url: str) -> Iterator[str]:
    name = f"shellwego_bench_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(admin_url, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    try:
        yield f"{admin_url.rpartition('/')[0]}/{name}"
    finally:
        with psycopg.connect(admin_url, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@contextmanager
def server(database_url: str, home: Path) -> Iterator[str]:
    """`shellwego server --no-edge` on ``database_url``; yields its URL."""
    port = free_port()
    env = {
        **os.environ,
        "HOME": str(home),
        "DATABASE_URL": database_url,
        "SHELLWEGO_DATA_DIR": str(home / "data"),
        "SHELLWEGO_API_PORT": str(port),
    }
    proc = subprocess.Popen(
        [str(Path(sys.executable).parent / "shellwego"), "server", "--no-edge"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    assert proc.stdout is not None
    seen = []
    for line in proc.stdout:
        seen.append(line)
        if "API listening" in line:
            break
    else:
        proc.wait()
        raise SystemExit("shellwego server did not start:\n" + "".join(seen))
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.communicate()


@dataclass
class Result:
    reads_ms: list[float] = field(default_factory=list)
    reads: Counter[int] = field(default_factory=Counter)
    logins: Counter[int] = field(default_factory=Counter)


def prepare(url: str) -> dict[str, str]:
    with httpx.Client(base_url=url, timeout=60) as c:
        r = c.post(
            "/v1/bootstrap",
            json={
                "user": {"email": "owner@example.com", "password": PASSWORD},
                "organization": {"name": "Bench", "slug": "bench"},
            },
        )
        r.raise_for_status()
        bearer = {"Authorization": f"Bearer {r.json()['token']['token']}"}
        c.post("/v1/apps", headers=bearer, json={"name": "steady"}).raise_for_status()
        return bearer


def flood(url: str, clients: int, seconds: float, bearer: dict[str, str], fresh: bool) -> Result:
    result = Result()
    lock = threading.Lock()
    stop = threading.Event()

    def attack(n: int) -> None:
        rng = random.Random(n)
        i = 0
        while not stop.is_set():
            i += 1
            if n % 2 and not fresh:
                address, email = "127.0.9.9", "victim@example.com"
            else:
                octets = (rng.randrange(10, 250), rng.randrange(256), rng.randrange(1, 255))
                address = "127.{}.{}.{}".format(*octets)
                email = f"guess{n}-{i}@example.com"
            transport = httpx.HTTPTransport(local_address=address)
            with httpx.Client(base_url=url, transport=transport, timeout=120) as client:
                try:
                    r = client.post("/v1/auth/token", json={"email": email, "password": "nope"})
                    code = r.status_code
                except httpx.HTTPError:
                    code = 0
            with lock:
                result.logins[code] += 1

    def read() -> None:
        with httpx.Client(base_url=url, headers=bearer, timeout=120) as client:
            while not stop.is_set():
                began = time.perf_counter()
                try:
                    code = client.get("/v1/apps").status_code
                except httpx.HTTPError:
                    code = 0
                took = (time.perf_counter() - began) * 1000
                with lock:
                    result.reads[code] += 1
                    result.reads_ms.append(took)

    threads = [threading.Thread(target=attack, args=(n,)) for n in range(clients)]
    threads.append(threading.Thread(target=read))
    for t in threads:
        t.start()
    time.sleep(seconds)
    stop.set()
    for t in threads:
        t.join()
    return result


def report(name: str, r: Result) -> None:
    ms = sorted(r.reads_ms)
    p95 = ms[max(0, int(len(ms) * 0.95) - 1)]
    errors = sum(n for code, n in (r.reads + r.logins).items() if code >= 500 or code == 0)
    print(f"{name}:")
    print(
        f"  GET /v1/apps  n={len(ms)}  p50 {statistics.median(ms):.1f} ms  "
        f"p95 {p95:.1f} ms  max {ms[-1]:.1f} ms  statuses {dict(sorted(r.reads.items()))}"
    )
    print(
        f"  bad logins    n={sum(r.logins.values())}  "
        f"statuses {dict(sorted(r.logins.items()))}  429: {r.logins[429]}"
    )
    print(f"  5xx or failed requests: {errors}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=8, help="parallel flooding clients")
    parser.add_argument("--seconds", type=float, default=15.0)
    parser.add_argument(
        "--fresh-addresses", action="store_true", help="every attempt from a new address"
    )
    parser.add_argument("--pg-url", default="postgresql://postgres@127.0.0.1:5432/postgres")
    args = parser.parse_args()
    how = "each attempt from a new address" if args.fresh_addresses else "half from one address"
    print(f"{args.clients} clients flooding bad logins ({how}) for {args.seconds:g} s, one reading")
    with tempfile.TemporaryDirectory(prefix="shellwego-flood-") as tmp:
        lite = Path(tmp) / "sqlite"
        with server(f"sqlite:///{lite / 'data' / 'shellwego.db'}", lite) as url:
            result = flood(url, args.clients, args.seconds, prepare(url), args.fresh_addresses)
            report("sqlite", result)
        with postgres_database(args.pg_url) as pg_url, server(pg_url, Path(tmp) / "pg") as url:
            result = flood(url, args.clients, args.seconds, prepare(url), args.fresh_addresses)
            report("postgresql", result)


if __name__ == "__main__":
    main()
