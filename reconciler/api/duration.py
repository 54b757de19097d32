"""Go-style durations (``90s``, ``30m``, ``1h30m``): stdlib only, so every command's options
can parse them without importing the schedule's cron library."""

from __future__ import annotations

import re
from datetime import timedelta

_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)(h|ms|m|s)")
_UNIT_SECONDS = {"h": 3600.0, "m": 60.0, "s": 1.0, "ms": 0.001}


class ScheduleError(ValueError):
    """A schedule string that cannot be parsed; the message says why."""


def parse_duration(text: str) -> timedelta:
    """Parse a Go-style duration such as ``90m``, ``1h30m`` or ``45s``."""
    text = text.strip()
    if text == "0":
        return timedelta(0)
    pos = 0
    total = 0.0
    for match in _DURATION_PART.finditer(text):
        if match.start() != pos:
            break
        total += float(match.group(1)) * _UNIT_SECONDS[match.group(2)]
        pos = match.end()
    if not text or pos != len(text):
        raise ScheduleError(f"invalid duration {text!r} (use e.g. 90s, 30m, 1h30m)")
    return timedelta(seconds=total)
