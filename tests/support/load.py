"""A steady HTTP load that counts failed requests, for zero-downtime tests.

It behaves like a browser: connections are kept alive, and a GET whose *reused*
keep-alive connection the server closed before sending any byte of the response is
retried once on a fresh connection, as RFC 9112 §9.3.1 allows for idempotent requests
(browsers and Caddy do the same). Those retries are counted. Everything else is a
failure: an error on a fresh connection, a response cut off after its first byte, a
timeout, a second failure after the retry, and every non-200 answer.

The client is a plain socket with h11 parsing, so it knows exactly whether a connection
was reused and how many response bytes arrived before it broke.
"""

from __future__ import annotations

import socket
import threading
from collections import Counter
from dataclasses import dataclass, field
from urllib.parse import urlsplit

import h11

TIMEOUT = 10.0


@dataclass
class LoadResult:
    total: int = 0  # requests sent (a retried request counts once)
    retried: int = 0  # requests retried after their kept-alive connection was closed
    failures: list[str] = field(default_factory=list)
    answers: Counter[str] = field(default_factory=Counter)

    @property
    def failed(self) -> int:
        return len(self.failures)

    def summary(self) -> str:
        return (
            f"{self.total} requests, {self.failed} failed, {self.retried} retried on a fresh "
            f"connection (kept-alive connection closed before any response byte); "
            f"first failures: {self.failures[:5]}"
        )


class ClosedBeforeResponse(Exception):
    """The server closed (or reset) the connection before any byte of the response."""


class Connection:
    """One keep-alive HTTP/1.1 connection."""

    def __init__(self, host: str, port: int) -> None:
        self.sock = socket.create_connection((host, port), TIMEOUT)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.http = h11.Connection(h11.CLIENT)
        self.completed = 0  # responses read on this connection

    def close(self) -> None:
        self.sock.close()

    def get(self, target: str, host: str) -> tuple[int, bytes, bool]:
        """(status, body, reusable)."""
        request = h11.Request(method="GET", target=target, headers=[("Host", host)])
        try:
            self.sock.sendall(self.http.send(request) + self.http.send(h11.EndOfMessage()))
        except (BrokenPipeError, ConnectionResetError) as exc:
            raise ClosedBeforeResponse(repr(exc)) from exc
        received = 0
        status, body = 0, bytearray()
        while True:
            event = self.http.next_event()
            if event is h11.NEED_DATA:
                try:
                    data = self.sock.recv(65536)
                except ConnectionResetError as exc:
                    if received == 0:
                        raise ClosedBeforeResponse(repr(exc)) from exc
                    raise
                if not data and received == 0:
                    raise ClosedBeforeResponse("connection closed before the response")
                received += len(data)
                self.http.receive_data(data)  # b"" marks the end: h11 then raises if cut off
            elif isinstance(event, h11.Response):
                status = event.status_code
            elif isinstance(event, h11.Data):
                body += event.data
            elif isinstance(event, h11.EndOfMessage):
                break
        self.completed += 1
        reusable = self.http.our_state is h11.DONE and self.http.their_state is h11.DONE
        if reusable:
            self.http.start_next_cycle()
        return status, bytes(body), reusable


class Load:
    def __init__(self, url: str, host: str, threads: int = 2) -> None:
        parts = urlsplit(url)
        self.address = (parts.hostname or "127.0.0.1", parts.port or 80)
        self.target = parts.path or "/"
        self.host = host
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

    def _attempt(self, conn: Connection | None) -> tuple[Connection | None, int, bytes]:
        """One request; the connection to keep for the next (None when it must close)."""
        conn = conn or Connection(*self.address)
        try:
            status, body, reusable = conn.get(self.target, self.host)
        except BaseException:
            conn.close()
            raise
        if not reusable:
            conn.close()
            return None, status, body
        return conn, status, body

    def _one(self, conn: Connection | None) -> tuple[Connection | None, str | None, bool]:
        """(connection to keep, failure or None, retried)."""
        retried = False
        try:
            try:
                conn, status, body = self._attempt(conn)
            except ClosedBeforeResponse:
                if conn is None or conn.completed == 0:
                    raise  # a fresh connection: not the keep-alive race
                retried = True
                conn, status, body = self._attempt(None)
        except (OSError, h11.ProtocolError, ClosedBeforeResponse) as exc:
            return None, repr(exc), retried
        text = body.decode(errors="replace")
        with self._lock:
            self.result.answers[text.strip()] += 1
        if status != 200:
            return conn, f"{status} {text[:80]}", retried
        return conn, None, retried

    def _run(self) -> None:
        conn: Connection | None = None
        try:
            while not self._stop.is_set():
                conn, failure, retried = self._one(conn)
                with self._lock:
                    self.result.total += 1
                    self.result.retried += int(retried)
                    if failure is not None:
                        self.result.failures.append(failure)
        finally:
            if conn is not None:
                conn.close()
