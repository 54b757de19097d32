"""The restic repository of one Backup as a run sees it: its local directory (when restik
can see it), waits for locks held by other runs, and stale locks (a dead restic's) removed."""

from __future__ import annotations

import json
import logging
import os
import random
import socket
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from reconciler.api.backup import Backup
from reconciler.api.times import parse_time
from sidecar import restic
from sidecar.restic import Context, Failure
from sidecar.runner import Result, Runner

log = logging.getLogger(__name__)

# restic's own notion of a stale lock (lock.go): older than this, or its process is gone.
RESTIC_STALE_AFTER = timedelta(minutes=30)


@dataclass(frozen=True)
class Lock:
    id: str
    time: datetime | None
    hostname: str
    pid: int
    exclusive: bool


def parse_lock(lock_id: str, text: str) -> Lock | None:
    try:
        raw = json.loads(text)
    except ValueError:
        return None
    if not isinstance(raw, dict):
        return None
    return Lock(
        id=lock_id,
        time=parse_time(raw.get("time")),
        hostname=str(raw.get("hostname") or ""),
        pid=int(raw.get("pid") or 0),
        exclusive=bool(raw.get("exclusive")),
    )


def is_stale(
    lock: Lock,
    *,
    now: datetime,
    stale_after: timedelta,
    hostname: str,
    process_alive: Callable[[int], bool],
) -> bool:
    """A lock older than the threshold, or one of this host whose process is gone."""
    if lock.time is None or now - lock.time > stale_after:
        return True
    return lock.hostname == hostname and not process_alive(lock.pid)


def restic_would_remove(
    locks: Iterable[Lock], *, now: datetime, hostname: str, process_alive: Callable[[int], bool]
) -> bool:
    """Whether plain `restic unlock` removes every one of these locks (no --remove-all)."""
    return all(
        is_stale(
            lock,
            now=now,
            stale_after=RESTIC_STALE_AFTER,
            hostname=hostname,
            process_alive=process_alive,
        )
        for lock in locks
    )


def pid_exists(pid: int) -> bool:
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def restic_alive(pid: int) -> bool:
    """A live restic process with this pid (a recycled pid of another program is not)."""
    if not pid_exists(pid):
        return False
    try:
        with open(f"/proc/{pid}/comm") as f:
            return f.read().strip().startswith("restic")
    except OSError:
        return True


MAX_LOCK_PAUSE = 10.0


def lock_pause(attempt: int) -> float:
    """Pause before retrying a locked repository: growing, capped, jittered so that the
    pods of a workload, all fired by the same cron, do not retry in step."""
    base = min(MAX_LOCK_PAUSE, 0.5 * 2 ** min(attempt - 1, 6))
    return base * (0.5 + random.random())  # noqa: S311 - jitter, not crypto


class Repository:
    """Lock handling and local checks of one Backup's repository, for the runs of a Job."""

    def __init__(
        self,
        backup: Backup,
        ctx: Context,
        runner: Runner,
        *,
        stale_after: timedelta = timedelta(minutes=30),
        hostname: str | None = None,
        clock=lambda: datetime.now(UTC),
        tidy_locks: bool = False,
    ):
        self.backup = backup
        self.ctx = ctx
        self.runner = runner
        self.stale_after = stale_after
        self.hostname = hostname or socket.gethostname()
        self.clock = clock
        self.tidy_locks = tidy_locks
        self.locks_before = self.local_locks()

    @property
    def name(self) -> str:
        return restic.repository_of(self.backup)

    @property
    def local_dir(self) -> Path | None:
        """The repository's directory when it is on a filesystem restik can see."""
        repo = self.name
        if repo.startswith("local:"):
            repo = repo[len("local:") :]
        return Path(repo) if repo.startswith("/") else None

    def leftovers(self) -> int:
        """How many entries the repository's directory has (0 when it is not there)."""
        local = self.local_dir
        if local is None or not local.is_dir():
            return 0
        return sum(1 for _ in local.iterdir())

    def snapshot_stored(self, snapshot_id: str) -> bool:
        local = self.local_dir
        if local is None:
            return True  # remote backends answer for themselves
        snapshots = local / "snapshots"
        return (local / "config").is_file() and any(snapshots.glob(f"{snapshot_id}*"))

    def local_locks(self) -> set[str]:
        local = self.local_dir
        if local is None or not (local / "locks").is_dir():
            return set()
        return {p.name for p in (local / "locks").iterdir()}

    def tidy(self) -> None:
        local = self.local_dir
        if local is not None:
            # Only a lock that was there before this run and outlived it can be a leftover;
            # the locks of other pods' runs that started meanwhile are not worth a look.
            if not self.locks_before & self.local_locks():
                return
        elif not self.tidy_locks:
            return
        self.clear_stale_locks()

    def with_lock_recovery(self, args: list[str]) -> Result:
        """Run; while the repository is locked by another run, wait for it: restic >= 0.16
        waits itself (`--retry-lock`), older restic is run again after a jittered pause,
        until ``ctx.retry_lock`` seconds have passed. A stale lock (a dead restic's) is
        removed with `restic unlock`."""
        deadline = time.monotonic() + self.ctx.retry_lock
        stale_checked = False
        attempt = 0
        while True:
            result = self.runner.run(args)
            if result.ok or result.interrupted:
                return result
            if restic.classify(result.code, result.stderr) is not Failure.LOCKED:
                return result
            if not stale_checked or self.ctx.native_retry_lock:
                stale_checked = True
                if self.clear_stale_locks():
                    log.info("the lock on %s is gone (stale, or released); retrying", self.name)
                    continue
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return result
            if self.ctx.native_retry_lock:
                continue  # restic waited a slice itself; the next slice
            attempt += 1
            pause = min(remaining, lock_pause(attempt))
            log.info(
                "repository %s is locked by another run; trying again in %.1fs",
                self.name,
                pause,
            )
            if self.runner.sleep(pause):
                return result  # stopping

    def clear_stale_locks(self) -> bool:
        listed = self.runner.run(restic.render_list_locks(self.backup, self.ctx))
        if not listed.ok:
            log.warning("cannot list locks: %s", restic.first_error_line(listed.stderr))
            return False
        locks = []
        for lock_id in listed.stdout.split():
            cat = self.runner.run(restic.render_cat_lock(self.backup, self.ctx, lock_id))
            if not cat.ok:
                continue  # removed meanwhile
            lock = parse_lock(lock_id, cat.stdout)
            if lock is not None:
                locks.append(lock)
        if not locks:
            return True  # the lock went away on its own: worth one retry
        now = self.clock()
        fresh = [
            lock
            for lock in locks
            if not is_stale(
                lock,
                now=now,
                stale_after=self.stale_after,
                hostname=self.hostname,
                process_alive=restic_alive,
            )
        ]
        if fresh:
            log.info(
                "repository %s is locked by %s (not stale)",
                self.name,
                ", ".join(f"pid {lk.pid} on {lk.hostname}" for lk in fresh),
            )
            return False
        # Every lock is stale by our threshold. Plain `unlock` removes what restic itself
        # thinks stale; --remove-all only when it would keep one we know is stale.
        remove_all = not restic_would_remove(
            locks, now=now, hostname=self.hostname, process_alive=pid_exists
        )
        log.warning(
            "removing %d stale lock(s) from %s%s",
            len(locks),
            self.name,
            " (--remove-all)" if remove_all else "",
        )
        unlock = self.runner.run(restic.render_unlock(self.backup, self.ctx, remove_all=remove_all))
        if not unlock.ok:
            log.warning("restic unlock failed: %s", restic.first_error_line(unlock.stderr))
        return unlock.ok
