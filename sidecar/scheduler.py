"""When the sidecar runs: the Backup it follows (parsed, paused or broken) and its next
cron time. No threads and no I/O here: the main loop asks it what is due."""

from __future__ import annotations

import logging
import os
from datetime import UTC, datetime

from reconciler.api.backup import Backup, InvalidBackup, parse_backup
from sidecar.follow import pending_trigger
from sidecar.restic import repository_of
from sidecar.runner import redact_url
from sidecar.shell import publish_repository

log = logging.getLogger("restik.watch")


class Scheduler:
    """The schedule of one Backup: ``apply`` each version read, ``due`` once per beat."""

    def __init__(self, name: str, clock=lambda: datetime.now(UTC)):
        self.name = name
        self.namespace: str | None = None
        self.host: str | None = None  # the snapshot host, once the sidecar knows it
        self.clock = clock
        self.backup: Backup | None = None  # the parsed Backup being scheduled, or None
        self.next_fire: datetime | None = None
        self.next_check: datetime | None = None  # spec.check's next time (None: no checks)
        self._last_problem: str | None = None
        self.trigger_seen: str | None = None  # restik backup-now: the value taken up
        self.trigger: str | None = None  # ... and not yet served by a run

    def take_trigger(self) -> str | None:
        """The backup-now request this run serves (at most one run serves it)."""
        trigger, self.trigger = self.trigger, None
        return trigger

    def wait(self, limit: float, now: datetime) -> float:
        """Seconds to sleep before the next beat: at most ``limit``, less if a run is due."""
        times = [t for t in (self.next_fire, self.next_check) if t is not None]
        if not times:
            return limit
        return max(0.0, min(limit, (min(times) - now).total_seconds()))

    def due(self, now: datetime) -> datetime | None:
        """The fire time of the run due now (the next one is scheduled), or None."""
        if self.next_fire is None or now < self.next_fire:
            return None
        fire_at = self.next_fire
        self.next_fire = self.backup.schedule.next_after(now)
        return fire_at

    def check_due(self, now: datetime) -> datetime | None:
        """The time of the `restic check` due now (the next one is scheduled), or None."""
        if self.next_check is None or now < self.next_check:
            return None
        fire_at = self.next_check
        self.next_check = self.backup.check.schedule.next_after(now)
        return fire_at

    def _schedule_check(self, old: Backup | None, new: Backup) -> None:
        """Keep the next check time while its schedule stays (as for backups)."""
        if new.check is None:
            self.next_check = None
            return
        kept = old is not None and not old.paused and old.check is not None
        if not kept or old.check.schedule != new.check.schedule or self.next_check is None:
            self.next_check = new.check.schedule.next_after(self.clock())

    def apply(self, raw: dict | None) -> None:
        """A new version of the Backup (None: deleted). A broken or paused Backup stops the
        schedule with one warning; the same schedule keeps its next time."""
        old = self.backup
        if raw is None:
            self.problem(f"Backup {self.namespace}/{self.name} not found: not scheduling")
            self.backup, self.next_fire, self.next_check = None, None, None
            return
        try:
            new = parse_backup(raw)
        except InvalidBackup as exc:
            self.problem(f"{exc}: not scheduling until it is fixed")
            self.backup, self.next_fire, self.next_check = None, None, None
            return
        publish_repository(os.environ, repository_of(new))
        if new.paused:
            self.problem(f"Backup {self.namespace}/{self.name} is paused: not scheduling")
            self.backup, self.next_fire, self.next_check = new, None, None
            return
        self._last_problem = None
        self.backup = new
        if old is None or old.paused or old.schedule != new.schedule or self.next_fire is None:
            self.next_fire = new.schedule.next_after(self.clock())
        self._schedule_check(old, new)
        trigger = pending_trigger(raw, self.trigger_seen, self.host)
        if trigger is not None:  # restik backup-now: run at once
            log.info("backup requested (%s): running now", trigger)
            self.trigger_seen = self.trigger = trigger
            self.next_fire = self.clock()
        if old != new:
            log.info(
                "following Backup %s/%s: schedule %r, repository %s, next run %s",
                self.namespace,
                new.name,
                new.schedule.text,
                redact_url(repository_of(new)),
                self.next_fire.isoformat(timespec="seconds"),
            )

    def problem(self, message: str) -> None:
        if message != self._last_problem:
            log.warning("%s", message)
            self._last_problem = message
