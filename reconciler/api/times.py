"""RFC 3339 times as the API server, restik and restic write them, parsed once (stdlib only).

restic writes nanoseconds ("2026-01-31T23:00:00.123456789Z"; Python's datetime takes
microseconds), the API server and restik write seconds or microseconds with "Z"."""

from __future__ import annotations

import re
from datetime import datetime

# RFC 3339 with a zone: what `date -u +%FT%TZ`, the API server and restic write.
RFC3339 = re.compile(
    r"^\d{4}-\d\d-\d\d[Tt]\d\d:\d\d:\d\d(\.\d{1,9})?([Zz]|[+-]\d\d:\d\d)$",
)


def parse_time(text: object) -> datetime | None:
    """An RFC 3339 time (nanoseconds allowed, cut to microseconds), aware; None for what is
    not one (no zone, not a string, out of range)."""
    m = RFC3339.match(text.strip()) if isinstance(text, str) else None
    if m is None:
        return None
    main, frac, zone = text.strip()[:19], (m.group(1) or "")[:7], m.group(2)
    zone = "+00:00" if zone in ("Z", "z") else zone
    try:
        return datetime.fromisoformat(main.replace("t", "T") + frac + zone)
    except ValueError:
        return None
