"""The query vocabulary of the diagnostic-logs API: time ranges and minimum levels."""

from __future__ import annotations

import re
from collections.abc import Iterable

from exporter.logs.model import LEVELS, Level

MAX_RANGE_SECONDS = 7 * 86400
# The customer's plan's default selection of services, and default level and range.
DEFAULT_SERVICES = ("auth", "rest", "db", "kong")
DEFAULT_LEVEL, DEFAULT_RANGE = "error", "1h"
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}
_RANGE = re.compile(r"(\d{1,6})([smhd])")
# Accepted spellings of a minimum level; "all" reads everything.
_LEVEL_ALIASES: dict[str, Level] = {
    **{name: name for name in LEVELS}, "all": "debug", "warn": "warning", "err": "error",
}


def parse_range(text: str) -> float:
    """Seconds in a range such as "15m", "1h", "24h" or "7d"; longer ranges are capped at 7d."""
    match = _RANGE.fullmatch(text.strip().lower())
    if match is None:
        raise ValueError(f"invalid range {text[:20]!r}: use a number and a unit s, m, h or d, "
                         "e.g. 15m, 1h, 24h, 7d")
    seconds = int(match.group(1)) * _UNITS[match.group(2)]
    if seconds <= 0:
        raise ValueError(f"invalid range {text[:20]!r}: must be longer than zero")
    # Docker keeps logs far longer, but a week is already more than an answer can hold.
    return float(min(seconds, MAX_RANGE_SECONDS))


def parse_level(text: str) -> Level:
    """The minimum level a query selects: debug, info, warning, error, fatal (or all, warn)."""
    level = _LEVEL_ALIASES.get(text.strip().lower())
    if level is None:
        raise ValueError(f"invalid level {text[:20]!r}: use one of "
                         f"{', '.join([*LEVELS, 'all'])}")
    return level


def default_services(components: Iterable[str]) -> list[str]:
    """The default services of a logs query that the instance has."""
    present = set(components)
    return [s for s in DEFAULT_SERVICES if s in present]
