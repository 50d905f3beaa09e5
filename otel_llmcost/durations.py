"""Durations as people write them (`90s`, `15m`, `24h`, `7d`, `8w`), for the CLI's flags and the alert rules'
`for:` header."""

from __future__ import annotations

import re

UNIT_SECONDS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def parse_duration(text: str) -> int:
    """`90s`, `15m`, `24h`, `7d`, `8w` (a bare number is seconds) -> seconds; ValueError for anything else."""
    match = re.fullmatch(r"\s*(\d+)\s*([smhdw]?)\s*", text)
    if not match:
        raise ValueError(f"not a duration: {text!r} (use e.g. 30m, 24h, 7d)")
    return int(match.group(1)) * UNIT_SECONDS[match.group(2)]
