"""``spec.check`` of the Backup: `restic check` on its own schedule, optionally reading back a
subset of the repository's data (`--read-data-subset`)."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Decimal

from reconciler.api.fields import Collector, type_name
from reconciler.api.schedule import Schedule, ScheduleError, parse_schedule

CHECK_FIELDS = {"schedule", "readDataSubset"}
# restic's three forms of --read-data-subset (cmd_check.go): the n-th of t parts, a
# percentage of the packs, or an amount of data with a unit (restic refuses a bare number
# and a fraction with a unit, so does this).
SUBSET_PART = re.compile(r"^(\d{1,9})/(\d{1,9})$")
SUBSET_PERCENT = re.compile(r"^(\d{1,3}(\.\d{1,6})?)%$")
SUBSET_SIZE = re.compile(r"^(\d{1,15})([kKmMgGtT])$")
SUBSET_FORMS = '"n/t" (e.g. "1/10"), "x%" (e.g. "5%") or a size ("500M", "2G")'


@dataclass(frozen=True)
class CheckSpec:
    """When to run `restic check` and how much data it reads back (None: only the
    repository's structure, restic's default)."""

    schedule: Schedule
    read_data_subset: str | None = None


def parse_check(c: Collector, value: object) -> CheckSpec | None:
    """``spec.check``, or None when it is absent (no checks)."""
    path = "spec.check"
    if value is None:
        return None
    if not isinstance(value, Mapping):
        c.add(path, f"must be an object, got {type_name(value)}")
        return None
    check = c.mapping(value, path, CHECK_FIELDS)
    schedule = None
    if "schedule" not in check:
        c.add(f"{path}.schedule", "required")
    else:
        try:
            schedule = parse_schedule(check["schedule"])
        except ScheduleError as exc:
            c.add(f"{path}.schedule", str(exc))
    subset = parse_subset(c, check.get("readDataSubset"), f"{path}.readDataSubset")
    if schedule is None:
        return None
    return CheckSpec(schedule, subset)


def parse_subset(c: Collector, value: object, path: str) -> str | None:
    text = c.string(value, path)
    if text is None:
        return None
    why = subset_problem(text)
    if why is not None:
        c.add(path, why)
        return None
    return text


def subset_problem(text: str) -> str | None:
    """Why restic would refuse ``text`` as --read-data-subset, or None."""
    part = SUBSET_PART.match(text)
    if part:
        n, t = int(part.group(1)), int(part.group(2))
        if not 1 <= n <= t:
            return f'{text!r}: n/t needs 1 <= n <= t (e.g. "1/10")'
        return None
    percent = SUBSET_PERCENT.match(text)
    if percent:
        if not 0 < Decimal(percent.group(1)) <= 100:
            return f"{text!r}: the percentage must be above 0 and at most 100"
        return None
    size = SUBSET_SIZE.match(text)
    if size:
        if int(size.group(1)) == 0:
            return f"{text!r}: the size must be above 0"
        return None
    return f"{text!r} is not a data subset: use {SUBSET_FORMS}"
