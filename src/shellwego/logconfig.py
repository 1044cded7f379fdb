"""How the platform's processes log: one line per API request and per deploy step, as
text or JSON (``--log-format json`` / ``SHELLWEGO_LOG_FORMAT=json``), on stderr.

The request and deploy lines (loggers ``shellwego.requests`` and ``shellwego.deploys``)
are always on; everything else of the platform logs warnings, or everything with
``--verbose``. A line carries its fields as ``extra`` on the record: the text format
appends them as ``key=value``, the JSON format makes them members. Nothing logged here
ever holds a secret: requests are logged by method, path and status (no query string, no
header, no body), deploy steps by their event's message.
"""

from __future__ import annotations

import json
import logging
from datetime import UTC, datetime
from typing import Any

REQUESTS = "shellwego.requests"
DEPLOYS = "shellwego.deploys"
FORMATS = ("text", "json")

# what every LogRecord has: anything else on a record came in through ``extra``
RESERVED = frozenset(vars(logging.makeLogRecord({}))) | {"message", "asctime"}


def fields(record: logging.LogRecord) -> dict[str, Any]:
    """The ``extra`` fields of a record, in the order they were given."""
    return {k: v for k, v in vars(record).items() if k not in RESERVED}


class TextFormatter(logging.Formatter):
    """``time level logger: message key=value ...``"""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s: %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        extra = " ".join(f"{k}={v}" for k, v in fields(record).items())
        return f"{line} {extra}" if extra else line


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message, the extra fields, and the
    exception when there is one."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
            **fields(record),
        }
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str)


def configure(log_format: str = "text", *, verbose: bool = False) -> None:
    """Set up the process's logging (at the entry point, once)."""
    if log_format not in FORMATS:
        raise ValueError(f"unknown log format {log_format!r} (one of {', '.join(FORMATS)})")
    handler = logging.StreamHandler()
    handler.setFormatter(JsonFormatter() if log_format == "json" else TextFormatter())
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(logging.INFO if verbose else logging.WARNING)
    for name in (REQUESTS, DEPLOYS):
        logging.getLogger(name).setLevel(logging.INFO)
