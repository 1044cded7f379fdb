"""An app that attacks from inside its instance: ``GET /?NAME=HOST:PORT&...`` makes each
connection from where the app runs and answers, as JSON, its uid and what each attempt
saw: ``"ok <what the server sent first>"`` or the error's name (``ConnectionRefusedError``,
``TimeoutError``...). It listens on ``0.0.0.0:$PORT``, as Heroku-style apps do."""

from __future__ import annotations

PROBER = """\
import http.server, json, os, socket, urllib.parse
class Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        query = dict(urllib.parse.parse_qsl(urllib.parse.urlparse(self.path).query))
        seen = {}
        for name, target in query.items():
            host, _, port = target.rpartition(":")
            try:
                with socket.create_connection((host, int(port)), 2) as s:
                    s.settimeout(1)
                    try:
                        greeting = s.recv(64).decode(errors="replace").strip()
                    except OSError:
                        greeting = ""
                    seen[name] = ("ok " + greeting).strip()
            except OSError as exc:
                seen[name] = type(exc).__name__
        body = json.dumps({"uid": os.getuid(), "seen": seen}).encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    def log_message(self, *args):
        pass
http.server.ThreadingHTTPServer(("0.0.0.0", int(os.environ["PORT"])), Handler).serve_forever()
"""


def query(targets: dict[str, str]) -> str:
    """``?name=host:port&...`` for ``targets`` (names with spaces get underscores)."""
    return "?" + "&".join(f"{name.replace(' ', '_')}={t}" for name, t in targets.items())
