"""Human-readable amounts for the scheduler's messages."""

from __future__ import annotations

_MEMORY_UNITS = (("TiB", 1024**4), ("GiB", 1024**3), ("MiB", 1024**2), ("KiB", 1024))


def _number(value: float) -> str:
    return f"{value:.2f}".rstrip("0").rstrip(".")


def human_cpu(millis: int) -> str:
    """``500`` → ``0.5 cores``; ``1000`` → ``1 core``."""
    millis = max(millis, 0)
    return "1 core" if millis == 1000 else f"{_number(millis / 1000)} cores"


def human_memory(amount: int) -> str:
    """``536870912`` → ``512 MiB``; ``1610612736`` → ``1.5 GiB``."""
    amount = max(amount, 0)
    for unit, factor in _MEMORY_UNITS:
        if amount >= factor:
            return f"{_number(amount / factor)} {unit}"
    return f"{amount} B"
