"""Canonical units: memory in bytes, CPU in milli-cores; humans type ``512m`` and ``0.5``."""

from __future__ import annotations

import re

_MEMORY = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kmgt]i?b?|b)?\s*$", re.IGNORECASE)
_FACTORS = {"": 1, "b": 1, "k": 1024, "m": 1024**2, "g": 1024**3, "t": 1024**4}


def parse_memory(value: str | int) -> int:
    """``512m``, ``1g``, ``1.5GiB``, ``1048576`` → bytes."""
    if isinstance(value, bool):
        raise ValueError("memory must be a size such as 512m or 1g")
    if isinstance(value, int):
        if value <= 0:
            raise ValueError("memory must be positive")
        return value
    match = _MEMORY.match(value)
    if not match:
        raise ValueError(f"invalid memory size {value!r}: use a size such as 512m or 1g")
    unit = (match.group(2) or "").lower()[:1]
    amount = int(float(match.group(1)) * _FACTORS[unit])
    if amount <= 0:
        raise ValueError("memory must be positive")
    return amount


def parse_cpu(value: str | int | float) -> int:
    """``0.5`` or ``"500m"`` → 500 milli-cores; an int is already milli-cores."""
    if isinstance(value, bool):
        raise ValueError("cpu must be a number of cores such as 0.5")
    if isinstance(value, int):
        millis = value
    elif isinstance(value, float):
        millis = round(value * 1000)
    else:
        text = value.strip().lower()
        try:
            millis = int(text[:-1]) if text.endswith("m") else round(float(text) * 1000)
        except ValueError:
            raise ValueError(f"invalid cpu {value!r}: use cores such as 0.5 or 2") from None
    if millis <= 0:
        raise ValueError("cpu must be positive")
    return millis


def format_memory(value: int) -> str:
    for unit, factor in (("G", 1024**3), ("M", 1024**2), ("K", 1024)):
        if value >= factor and value % (factor // 1024 or 1) == 0:
            amount = value / factor
            return f"{amount:g}{unit}"
    return f"{value}B"


def format_cpu(millis: int) -> str:
    return f"{millis / 1000:g}"


_DURATION = re.compile(r"^(?:(\d+)d)?(?:(\d+)h)?(?:(\d+)m)?(?:(\d+)s)?$")
_DURATION_UNITS = (86400, 3600, 60, 1)


def parse_duration(value: str) -> int:
    """``7d``, ``12h``, ``90m``, ``45s``, ``1d12h`` or plain seconds (``3600``) → seconds."""
    text = value.strip().lower()
    if text.isdigit():
        seconds = int(text)
    else:
        match = _DURATION.match(text)
        if not text or not match:
            raise ValueError(f"invalid duration {value!r}: use e.g. 7d, 12h, 90m or 3600")
        seconds = sum(
            int(n) * unit for n, unit in zip(match.groups("0"), _DURATION_UNITS, strict=True)
        )
    if seconds <= 0:
        raise ValueError("a duration must be positive")
    return seconds
