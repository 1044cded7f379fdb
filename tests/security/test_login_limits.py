"""Password guessing is limited per source address and per account (429 + Retry-After).

Both backends, an in-process API on a frozen clock: the policy's figures come from
``shellwego.services.throttle`` so the tests follow it, the behaviour is what is checked.
"""

from __future__ import annotations

import httpx
from fastapi.testclient import TestClient

from shellwego.clock import FrozenClock
from shellwego.services.throttle import ACCOUNT, ADDRESS

from .conftest import PASSWORD, Connect, bootstrap

OWNER = "owner@example.com"


def login(client: TestClient, email: str, password: str) -> httpx.Response:
    return client.post("/v1/auth/token", json={"email": email, "password": password})


def refused(r: httpx.Response) -> int:
    """The Retry-After of a 429 problem answer (checked to be one)."""
    assert r.status_code == 429, r.text
    assert r.headers["content-type"] == "application/problem+json"
    body = r.json()
    assert body["status"] == 429 and body["type"].endswith("/too-many-requests")
    wait = int(r.headers["Retry-After"])
    assert wait >= 1
    assert body["retry_after"] == wait
    return wait


def test_one_address_guessing_gets_429_with_a_growing_retry_after(
    connect: Connect, clock: FrozenClock
) -> None:
    owner = connect("198.51.100.7")
    bootstrap(owner)
    attacker = connect("203.0.113.9")
    # the address is what counts: a different account each time
    for i in range(ADDRESS.free):
        assert login(attacker, f"user{i}@example.com", "wrong password").status_code == 401
    # blocked: not even the right password is checked
    first = refused(login(attacker, OWNER, PASSWORD))
    assert "address" in login(attacker, OWNER, PASSWORD).json()["detail"]
    # another address is not held up
    assert login(owner, OWNER, PASSWORD).status_code == 201

    waits = [first]
    for _ in range(5):
        clock.advance(waits[-1] - 0.5)
        refused(login(attacker, OWNER, "wrong password"))  # not yet
        clock.advance(0.5)
        assert login(attacker, OWNER, "wrong password").status_code == 401
        waits.append(refused(login(attacker, OWNER, "wrong password")))
    assert waits == sorted(set(waits)), f"the back-off must grow: {waits}"
    assert waits[-1] >= 2 ** 4 * waits[0]


def test_an_account_guessed_from_many_addresses_gets_429(
    connect: Connect, clock: FrozenClock
) -> None:
    bootstrap(connect("198.51.100.7"))
    for i in range(ACCOUNT.free):
        r = login(connect(f"203.0.113.{i + 1}"), OWNER, "wrong password")
        assert r.status_code == 401
    fresh = connect("192.0.2.200")
    wait = refused(login(fresh, OWNER, PASSWORD))
    assert "account" in login(fresh, OWNER, PASSWORD).json()["detail"]
    # other accounts are not held up by it
    assert login(fresh, "nobody@example.com", "wrong password").status_code == 401
    clock.advance(wait)
    assert login(fresh, OWNER, PASSWORD).status_code == 201


def test_a_successful_login_resets_the_account_counter(
    connect: Connect, clock: FrozenClock
) -> None:
    bootstrap(connect("198.51.100.7"))
    address = iter(range(1, 250))

    def fail_from_new_addresses(times: int) -> None:
        for _ in range(times):
            r = login(connect(f"203.0.113.{next(address)}"), OWNER, "wrong password")
            assert r.status_code == 401

    fail_from_new_addresses(ACCOUNT.free - 1)
    assert login(connect("198.51.100.7"), OWNER, PASSWORD).status_code == 201
    fail_from_new_addresses(ACCOUNT.free - 1)
    # without the reset this would be failure number 2 * (free - 1) + 1: blocked
    assert login(connect("192.0.2.1"), OWNER, "wrong password").status_code == 401


def test_the_account_back_off_is_bounded(connect: Connect, clock: FrozenClock) -> None:
    bootstrap(connect("198.51.100.7"))
    waits = []
    n = 0
    while len(waits) < 14:
        n += 1
        r = login(connect(f"10.0.{n // 250}.{n % 250 + 1}"), OWNER, "wrong password")
        if r.status_code == 429:
            waits.append(refused(r))
            clock.advance(waits[-1])
        else:
            assert r.status_code == 401
    assert max(waits) == ACCOUNT.cap
    assert waits[-1] == ACCOUNT.cap


def test_a_hostile_address_is_stopped_before_the_owner_is(
    connect: Connect, clock: FrozenClock
) -> None:
    """Per-address limits bite first: one hostile client hammering the owner's account is
    held up long before the account is."""
    owner = connect("198.51.100.7")
    bootstrap(owner)
    attacker = connect("203.0.113.66")
    codes = [login(attacker, OWNER, "wrong password").status_code for _ in range(60)]
    assert codes == [401] * ADDRESS.free + [429] * (60 - ADDRESS.free)
    assert ADDRESS.free < ACCOUNT.free
    assert login(owner, OWNER, PASSWORD).status_code == 201


def test_refused_bootstraps_count_against_the_address(connect: Connect) -> None:
    bootstrap(connect("198.51.100.7"))
    prober = connect("203.0.113.5")
    body = {
        "user": {"email": "second@example.com", "password": PASSWORD},
        "organization": {"name": "X", "slug": "x"},
    }
    for _ in range(ADDRESS.free):
        assert prober.post("/v1/bootstrap", json=body).status_code == 409
    refused(prober.post("/v1/bootstrap", json=body))
    # the same address may not start guessing passwords either
    refused(login(prober, OWNER, PASSWORD))
