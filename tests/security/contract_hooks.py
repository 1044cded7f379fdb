"""schemathesis hooks for the API contract run (loaded through ``SCHEMATHESIS_HOOKS``)."""

from __future__ import annotations

import sys
from typing import Any

import schemathesis
from hypothesis.internal import lambda_sources

# POST /v1/apps/{app}/builds takes the app's source as application/gzip: send the bytes
# schemathesis generates for it as they are, as it does for application/octet-stream
schemathesis.serializer.alias("application/gzip", "application/octet-stream")

# CPython before 3.11.8 can raise "SystemError: AST constructor recursion depth mismatch"
# from ast.parse deep in a call stack (gh-106905). hypothesis parses schemathesis's own
# source there to name a lambda in a strategy's repr, and the run then stops with a
# "Runtime Error" that has nothing to do with the API. Such a lambda goes unnamed instead.
if sys.version_info < (3, 11, 8):
    _describe = lambda_sources._lambda_description

    def _describe_or_unknown(f: Any) -> str:
        try:
            return str(_describe(f))
        except SystemError:
            return "lambda: <unknown>"

    lambda_sources._lambda_description = _describe_or_unknown
