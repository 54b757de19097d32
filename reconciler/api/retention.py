"""``spec.retentionPolicy`` of the Backup: restic forget's --keep-* flags and prune."""

from __future__ import annotations

from dataclasses import dataclass

from reconciler.api.fields import Collector

KEEP_FIELDS = {
    "keepLastSnapshots": "last",
    "keepHourlySnapshots": "hourly",
    "keepDailySnapshots": "daily",
    "keepWeeklySnapshots": "weekly",
    "keepMonthlySnapshots": "monthly",
    "keepYearlySnapshots": "yearly",
}
RETENTION_FIELDS = {*KEEP_FIELDS, "keepTags", "retainHostname", "retainTags", "prune"}


@dataclass(frozen=True)
class Retention:
    """restic forget's --keep-* flags; a None count is not passed."""

    last: int | None = None
    hourly: int | None = None
    daily: int | None = None
    weekly: int | None = None
    monthly: int | None = None
    yearly: int | None = None
    keep_tags: tuple[str, ...] = ()
    retain_hostname: str | None = None
    retain_tags: tuple[str, ...] = ()
    prune: bool = False

    @property
    def keeps_anything(self) -> bool:
        counts = (self.last, self.hourly, self.daily, self.weekly, self.monthly, self.yearly)
        return any(c for c in counts) or bool(self.keep_tags)


def parse_retention(c: Collector, value: object) -> Retention:
    path = "spec.retentionPolicy"
    policy = c.mapping(value, path, RETENTION_FIELDS)
    counts = {attr: c.count(policy.get(key), f"{path}.{key}") for key, attr in KEEP_FIELDS.items()}
    return Retention(
        **counts,
        keep_tags=c.strings(policy.get("keepTags"), f"{path}.keepTags", forbid=","),
        retain_hostname=c.string(policy.get("retainHostname"), f"{path}.retainHostname"),
        retain_tags=c.strings(policy.get("retainTags"), f"{path}.retainTags", forbid=","),
        prune=c.boolean(policy.get("prune"), f"{path}.prune"),
    )
