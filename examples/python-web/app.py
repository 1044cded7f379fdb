"""A small Flask app: the quickstart example."""

import os
import socket

from flask import Flask

app = Flask(__name__)


@app.get("/")
def index() -> str:
    greeting = os.environ.get("GREETING", "Hello")
    where = f"instance on {socket.gethostname()}, port {os.environ['PORT']}"
    return f"{greeting} from ShellWeGo! ({where})\n"


@app.get("/health")
def health() -> str:
    return "ok\n"
