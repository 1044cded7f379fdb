"""The one exception tree of ShellWeGo.

Every error the platform raises on purpose derives from :class:`ShellWeGoError`.
Each class carries the HTTP status it maps to and a stable problem ``type`` slug;
the API maps them to RFC 7807 ``application/problem+json`` in one place and the CLI
prints their message as one line. Messages never contain secret values.
"""

from __future__ import annotations

import math
from typing import Any


class ShellWeGoError(Exception):
    """Base of every deliberate ShellWeGo error."""

    status: int = 500
    slug: str = "internal"
    title: str = "Internal error"

    def __init__(self, detail: str, **extra: Any) -> None:
        """``extra``: members of the problem answer; ``retry_after`` (seconds after which
        the same request may succeed: 429, 503) becomes its Retry-After header too."""
        super().__init__(detail)
        self.detail = detail
        retry_after = extra.pop("retry_after", None)
        self.extra = extra
        self.retry_after: int | None = (
            None if retry_after is None else max(1, math.ceil(float(retry_after)))
        )


class InvalidInput(ShellWeGoError):
    status = 422
    slug = "invalid-input"
    title = "Invalid input"


class BadRequest(ShellWeGoError):
    status = 400
    slug = "bad-request"
    title = "Bad request"


class Unauthenticated(ShellWeGoError):
    status = 401
    slug = "unauthenticated"
    title = "Authentication required"


class Forbidden(ShellWeGoError):
    status = 403
    slug = "forbidden"
    title = "Forbidden"


class NotFound(ShellWeGoError):
    status = 404
    slug = "not-found"
    title = "Not found"


class ArtifactMissing(NotFound):
    """A slug (or another stored artifact) is in no artifact store this control plane
    reaches: built on a replica whose store the others do not share, or deleted."""

    slug = "artifact-missing"
    title = "Artifact missing"


class Conflict(ShellWeGoError):
    status = 409
    slug = "conflict"
    title = "Conflict"


class LeaseLost(Conflict):
    """A singleton's write refused: its replica no longer holds the lease under the token
    the write was made with (another replica took over). Nothing of it was committed."""

    slug = "lease-lost"
    title = "Lease lost"


class PayloadTooLarge(ShellWeGoError):
    status = 413
    slug = "payload-too-large"
    title = "Payload too large"


class TooManyRequests(ShellWeGoError):
    """Too many attempts (failed logins): wait ``retry_after`` seconds."""

    status = 429
    slug = "too-many-requests"
    title = "Too many requests"


class CapacityError(ShellWeGoError):
    """The scheduler cannot place what was asked."""

    status = 409
    slug = "insufficient-capacity"
    title = "Insufficient capacity"


class BuildFailed(ShellWeGoError):
    status = 422
    slug = "build-failed"
    title = "Build failed"


class DeployFailed(ShellWeGoError):
    status = 409
    slug = "deploy-failed"
    title = "Deployment failed"


class RuntimeUnavailable(ShellWeGoError):
    """A runtime driver cannot run on this host (missing binary, no KVM, ...)."""

    status = 409
    slug = "runtime-unavailable"
    title = "Runtime unavailable"


class RuntimeFailure(ShellWeGoError):
    """A runtime driver failed to act on an instance."""

    status = 500
    slug = "runtime-failure"
    title = "Runtime failure"


class PortInUse(RuntimeFailure):
    """An instance's port is taken on its host by a program that is not the instance."""

    slug = "port-in-use"
    title = "Port in use"


class WaitingForConfig(RuntimeFailure):
    """An instance read back after an agent restart has no environment yet: the agent
    keeps configuration in memory only and has not had it from the control plane."""

    slug = "waiting-for-config"
    title = "Waiting for configuration"


class EdgeError(ShellWeGoError):
    """The edge (Caddy) refused or could not load a configuration."""

    status = 502
    slug = "edge-error"
    title = "Edge error"


class ConfigError(ShellWeGoError):
    """Settings are missing, invalid or unsafe."""

    status = 500
    slug = "config-error"
    title = "Configuration error"


class Unavailable(ShellWeGoError):
    status = 503
    slug = "unavailable"
    title = "Service unavailable"


class DatabaseBusy(Unavailable):
    """The database stayed locked or busy (lock wait, deadlock, serialization failure)
    after the request waited and retried: worth retrying a moment later."""

    slug = "database-busy"
    title = "Database busy"


class DnsLookupFailed(Unavailable):
    """No DNS resolver gave an answer (timeout, SERVFAIL, no resolver configured)."""

    slug = "dns-lookup-failed"
    title = "DNS lookup failed"


class DnsNameNotFound(DnsLookupFailed):
    """The name looked up does not exist (NXDOMAIN)."""

    status = 404
    slug = "dns-name-not-found"
    title = "DNS name not found"
