"""A tiny authoritative DNS server (UDP, and TCP when given a listening socket).

It answers A, TXT and CNAME questions from ``records`` with dnspython's message parsing:
a name with records of another type gets an empty answer, an unknown name NXDOMAIN. With
``silent`` set it reads questions and never answers (a resolver that times out). By
default it listens on 127.0.0.1 (domain verification tests); the network tests hand it
sockets made in a network namespace.
"""

from __future__ import annotations

import contextlib
import socket
import struct
import threading

import dns.flags
import dns.message
import dns.name
import dns.rcode
import dns.rdataclass
import dns.rdatatype
import dns.rrset


class DnsServer:
    def __init__(self, sock: socket.socket | None = None, tcp: socket.socket | None = None) -> None:
        """``sock``: a bound UDP socket to serve on; ``tcp``: a bound TCP one too."""
        self.records: dict[tuple[str, str], list[str]] = {}  # (name, "A"/"TXT"/"CNAME") → values
        self.silent = False
        self.questions: list[tuple[str, str]] = []
        if sock is None:
            sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            sock.bind(("127.0.0.1", 0))
        self.sock = sock
        self.sock.settimeout(0.2)
        self.host = str(self.sock.getsockname()[0])
        self.port = int(self.sock.getsockname()[1])
        self.tcp = tcp
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._serve, daemon=True)]
        if tcp is not None:
            tcp.listen(8)
            tcp.settimeout(0.2)
            self._threads.append(threading.Thread(target=self._serve_tcp, daemon=True))
        for thread in self._threads:
            thread.start()

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    def publish(self, kind: str, name: str, *values: str) -> None:
        self.records[(name.lower().rstrip("."), kind)] = list(values)

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                wire, peer = self.sock.recvfrom(4096)
            except TimeoutError:
                continue
            except OSError:
                return
            answer = self._respond(wire)
            if answer is not None:
                self.sock.sendto(answer, peer)

    def _serve_tcp(self) -> None:
        assert self.tcp is not None
        while not self._stop.is_set():
            try:
                conn, _ = self.tcp.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            with conn, contextlib.suppress(OSError, struct.error):
                conn.settimeout(2)
                (length,) = struct.unpack("!H", conn.recv(2, socket.MSG_WAITALL))
                answer = self._respond(conn.recv(length, socket.MSG_WAITALL))
                if answer is not None:
                    conn.sendall(struct.pack("!H", len(answer)) + answer)

    def _respond(self, wire: bytes) -> bytes | None:
        query = dns.message.from_wire(wire)
        question = query.question[0]
        name = question.name.to_text(omit_final_dot=True).lower()
        kind = dns.rdatatype.to_text(question.rdtype)
        self.questions.append((kind, name))
        if self.silent:
            return None
        return bytes(self._answer(query, name, kind).to_wire())

    def _answer(self, query: dns.message.Message, name: str, kind: str) -> dns.message.Message:
        response = dns.message.make_response(query)
        response.flags |= dns.flags.AA
        if not any(n == name for n, _ in self.records):
            response.set_rcode(dns.rcode.NXDOMAIN)
            return response
        values = self.records.get((name, kind), [])
        if values:
            texts = [_rdata(kind, v) for v in values]
            response.answer.append(
                dns.rrset.from_text(name + ".", 60, dns.rdataclass.IN, kind, *texts)
            )
        return response

    def close(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(2)
        self.sock.close()
        if self.tcp is not None:
            self.tcp.close()


def _rdata(kind: str, value: str) -> str:
    if kind == "TXT":
        return f'"{value}"'
    if kind == "CNAME":
        return f"{value}."
    return value
