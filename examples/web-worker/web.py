"""The web process: answers HTTP and shows how many ticks the worker has logged."""

import os
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class Handler(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        app = os.environ.get("SHELLWEGO_APP", "app")
        greeting = os.environ.get("GREETING", "hi")
        body = f"web process of {app} says {greeting} (pid {os.getpid()})\n".encode()
        self.send_response(200)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        print(f"{self.command} {self.path}", flush=True)


ThreadingHTTPServer(("0.0.0.0", int(os.environ["PORT"])), Handler).serve_forever()
