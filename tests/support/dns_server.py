"""A tiny authoritative DNS server on 127.0.0.1 (UDP) for domain verification tests.

It answers TXT and CNAME questions from ``records`` with dnspython's message parsing: a
name with records of another type gets an empty answer, an unknown name NXDOMAIN. With
``silent`` set it reads questions and never answers (a resolver that times out).
"""

from __future__ import annotations

import socket
import threading

import dns.flags
import dns.message
import dns.name
import dns.rcode
import dns.rdataclass
import dns.rdatatype
import dns.rrset


class DnsServer:
    def __init__(self) -> None:
        self.records: dict[tuple[str, str], list[str]] = {}  # (name, "TXT"/"CNAME") → values
        self.silent = False
        self.questions: list[tuple[str, str]] = []
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.settimeout(0.2)
        self.port = int(self.sock.getsockname()[1])
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

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
            query = dns.message.from_wire(wire)
            question = query.question[0]
            name = question.name.to_text(omit_final_dot=True).lower()
            kind = dns.rdatatype.to_text(question.rdtype)
            self.questions.append((kind, name))
            if self.silent:
                continue
            self.sock.sendto(self._answer(query, name, kind).to_wire(), peer)

    def _answer(self, query: dns.message.Message, name: str, kind: str) -> dns.message.Message:
        response = dns.message.make_response(query)
        response.flags |= dns.flags.AA
        if not any(n == name for n, _ in self.records):
            response.set_rcode(dns.rcode.NXDOMAIN)
            return response
        values = self.records.get((name, kind), [])
        if values:
            texts = [f'"{v}"' if kind == "TXT" else f"{v}." for v in values]
            response.answer.append(
                dns.rrset.from_text(name + ".", 60, dns.rdataclass.IN, kind, *texts)
            )
        return response

    def close(self) -> None:
        self._stop.set()
        self._thread.join(2)
        self.sock.close()
