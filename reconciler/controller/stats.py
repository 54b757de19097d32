"""What one controller cycle did: its counters, logged and exported as metrics."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field


@dataclass
class CycleStats:
    backups: int = 0
    workloads: int = 0
    patched: int = 0
    restarted: int = 0
    deferred: int = 0
    conflicts: int = 0
    errors: int = 0
    status_writes: int = 0  # Backup and Restore status patches
    rbac_writes: int = 0  # RoleBinding creates, replaces and deletes
    events: int = 0  # Warning Events created
    jobs: int = 0  # restore Jobs created or deleted
    planned: int = 0
    ready: int = 0
    not_ready: int = 0
    lost_leadership: bool = False
    seconds: float = 0.0
    # (namespace, name) -> the Ready condition's status ("True"/"False") after this cycle
    readiness: dict = field(default_factory=dict)

    def summary(self) -> str:
        return (
            f"backups={self.backups} workloads={self.workloads} patched={self.patched} "
            f"restarted={self.restarted} deferred={self.deferred} conflicts={self.conflicts} "
            f"errors={self.errors} "
            f"in {self.seconds:.2f}s"
        )


def ready_status(obj: Mapping) -> str | None:
    """The Ready condition's status in a Backup or a status patch."""
    for cond in (obj.get("status") or {}).get("conditions") or []:
        if isinstance(cond, Mapping) and cond.get("type") == "Ready":
            return cond.get("status")
    return None
