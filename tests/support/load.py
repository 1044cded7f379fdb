"""A steady HTTP load that counts failed requests, for zero-downtime tests.

It behaves like a browser: connections are kept alive, and a GET whose kept-alive
connection the server closed under it (before any response byte) is retried once on a
fresh connection, as RFC 9112 §9.3.1 allows for idempotent requests. A request that fails
twice, any error on a fresh connection, and every non-200 answer count as failures.
"""

from __future__ import annotations

import threading
from collections import Counter
from dataclasses import dataclass, field

import httpx

RETRYABLE = (httpx.ReadError, httpx.RemoteProtocolError, httpx.WriteError)


@dataclass
class LoadResult:
    total: int = 0
    retried: int = 0
    failures: list[str] = field(default_factory=list)
    answers: Counter[str] = field(default_factory=Counter)


class Load:
    def __init__(self, url: str, host: str, threads: int = 2) -> None:
        self.url, self.host = url, host
        self.result = LoadResult()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._run, daemon=True) for _ in range(threads)]

    def __enter__(self) -> Load:
        for t in self._threads:
            t.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for t in self._threads:
            t.join()

    def _one(self, client: httpx.Client) -> tuple[httpx.Response | None, str | None, bool]:
        try:
            return client.get(self.url, headers={"Host": self.host}), None, False
        except RETRYABLE:
            pass  # the kept-alive connection was closed under us: retry on a fresh one
        except httpx.HTTPError as exc:
            return None, repr(exc), False
        try:
            with httpx.Client(timeout=10) as fresh:
                return fresh.get(self.url, headers={"Host": self.host}), None, True
        except httpx.HTTPError as exc:
            return None, repr(exc), True

    def _run(self) -> None:
        with httpx.Client(timeout=10) as client:
            while not self._stop.is_set():
                response, error, retried = self._one(client)
                with self._lock:
                    self.result.total += 1
                    self.result.retried += int(retried)
                    if error is not None:
                        self.result.failures.append(error)
                    elif response is not None:
                        if response.status_code != 200:
                            self.result.failures.append(
                                f"{response.status_code} {response.text[:80]}"
                            )
                        self.result.answers[response.text.strip()] += 1
