"""Backup schedules: 5-field cron, 6-field cron with seconds first, @descriptors, @every."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import lru_cache

from croniter import CroniterBadDateError, croniter

from reconciler.api.duration import ScheduleError, parse_duration

__all__ = ["Schedule", "ScheduleError", "parse_duration", "parse_schedule"]

DESCRIPTORS = {
    "@yearly": "0 0 1 1 *",
    "@annually": "0 0 1 1 *",
    "@monthly": "0 0 1 * *",
    "@weekly": "0 0 * * 0",
    "@daily": "0 0 * * *",
    "@midnight": "0 0 * * *",
    "@hourly": "0 * * * *",
}
MIN_EVERY = timedelta(seconds=1)


# (name, lowest, highest, names) of each cron field, minute first
_MONTHS = ("JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC")
_DAYS = ("SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT")
_CRON_FIELDS = (
    ("minute", 0, 59, None),
    ("hour", 0, 23, None),
    ("day of month", 1, 31, None),
    ("month", 1, 12, _MONTHS),
    ("day of week", 0, 7, _DAYS),
)
_SECOND_FIELD = ("second", 0, 59, None)


@dataclass(frozen=True)
class Schedule:
    """A parsed schedule. ``next_after(t)`` is the first fire time strictly after ``t``."""

    text: str
    cron: str | None = None
    seconds_first: bool = False
    every: timedelta | None = None

    def next_after(self, after: datetime) -> datetime:
        if self.every is not None:
            return after + self.every
        it = croniter(self.cron, after, second_at_beginning=self.seconds_first)
        return it.get_next(datetime)

    def interval_at(self, t: datetime) -> timedelta:
        """The schedule interval that applies at ``t``: the ``@every`` duration; for cron,
        half the time from the scheduled run at or before ``t`` to the second run after it.
        That is the interval for cron expressions with equal periods (``*/15``, ``@daily``)
        and, for unequal ones (weekdays only), makes "no success for twice the interval
        after a success at ``t``" mean exactly "the second scheduled run after it is due
        and no success since"."""
        if self.every is not None:
            return self.every
        it = croniter(self.cron, t + timedelta(seconds=1), second_at_beginning=self.seconds_first)
        start = it.get_prev(datetime)
        it.get_next(datetime)  # one iterator: each croniter() costs as much as a step
        return (it.get_next(datetime) - start) / 2


def parse_schedule(text: object) -> Schedule:
    """Turn a Backup's ``spec.schedule`` into a Schedule, or raise ScheduleError."""
    if not isinstance(text, str) or not text.strip():
        raise ScheduleError("must be a non-empty string")
    return _parse_schedule(text)


@lru_cache(maxsize=4096)
def _parse_schedule(text: str) -> Schedule:
    # Every cycle parses every Backup; a cron expression is expensive to check, not to cache.
    raw = text.strip()
    if raw.startswith("@every"):
        rest = raw[len("@every") :]
        if not rest[:1].isspace():
            raise ScheduleError(f"invalid schedule {raw!r}: use '@every <duration>'")
        every = parse_duration(rest)
        if every < MIN_EVERY:
            raise ScheduleError(f"invalid schedule {raw!r}: the interval must be at least 1s")
        return Schedule(text=raw, every=every)
    if raw.startswith("@"):
        cron = DESCRIPTORS.get(raw.lower())
        if cron is None:
            known = ", ".join(sorted(DESCRIPTORS))
            raise ScheduleError(f"unknown descriptor {raw!r} (known: {known}, @every <duration>)")
        return Schedule(text=raw, cron=cron)
    fields = raw.split()
    if len(fields) not in (5, 6):
        raise ScheduleError(
            f"invalid cron expression {raw!r}: expected 5 fields (minute first) or 6 fields "
            f"(seconds first), got {len(fields)}"
        )
    seconds_first = len(fields) == 6
    cron = " ".join(fields)
    try:
        ok = croniter.is_valid(cron, second_at_beginning=seconds_first)
        if ok:
            # is_valid accepts some expressions that never fire (e.g. Feb 31): probe once.
            croniter(cron, datetime(2000, 1, 1), second_at_beginning=seconds_first).get_next(
                datetime
            )
    except CroniterBadDateError:
        raise ScheduleError(
            f"invalid cron expression {raw!r}: it never fires (no such date)"
        ) from None
    except Exception as exc:  # croniter raises several unrelated types
        raise ScheduleError(f"invalid cron expression {raw!r}: {exc}") from None
    if not ok:
        why = explain_cron(fields, seconds_first)
        raise ScheduleError(f"invalid cron expression {raw!r}" + (f": {why}" if why else ""))
    return Schedule(text=raw, cron=cron, seconds_first=seconds_first)


def explain_cron(fields: list[str], seconds_first: bool) -> str | None:
    """Which field of a rejected cron expression is wrong, and why (None: no simple reason)."""
    specs = ((_SECOND_FIELD,) if seconds_first else ()) + _CRON_FIELDS
    for text, (name, low, high, names) in zip(fields, specs, strict=True):
        for part in text.split(","):
            why = _explain_part(part, low, high, names)
            if why:
                return f"{name} field {text!r}: {why}"
    return None


def _explain_part(part: str, low: int, high: int, names: tuple[str, ...] | None) -> str | None:
    base, slash, step = part.partition("/")
    if slash and not (step.isdigit() and int(step) > 0):
        return f"step {step!r} must be a whole number above 0"
    if base in ("*", "?"):
        return None
    for value in base.split("-", 1):
        if value.isdigit():
            if not low <= int(value) <= high:
                return f"{value} is out of range {low}-{high}"
        elif names and value.upper() in names:
            continue
        elif names:
            kind = "day" if names is _DAYS else "month"
            return f"{value!r} is not a {kind} (use {low}-{high} or {names[0]}-{names[-1]})"
        else:
            return f"{value!r} is not a number"
    return None
