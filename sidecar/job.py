"""One backup run: init if the repository is missing, backup, forget; stale locks cleared."""

from __future__ import annotations

import dataclasses
import logging
import os
import random
import socket
import time
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from reconciler.api.backup import Backup
from reconciler.api.constants import PER_POD_HOST_KINDS
from sidecar import restic
from sidecar.restic import Context, Failure
from sidecar.runner import Result, Runner

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Outcome:
    success: bool
    message: str
    duration: float
    summary: restic.Summary | None = None
    failure: Failure | None = None
    initialised: bool = False
    interrupted: bool = False
    # A CamelCase word for the LastRunSucceeded condition when the cause is known
    # (e.g. SecretMissing); else derived from ``failure``.
    reason: str | None = None

    @property
    def condition_reason(self) -> str:
        if self.reason:
            return self.reason
        if self.success:
            return "Success"
        return FAILURE_REASONS.get(self.failure, "Failed")


FAILURE_REASONS = {
    Failure.WRONG_PASSWORD: "WrongPassword",
    Failure.LOCKED: "RepositoryLocked",
    Failure.NO_REPOSITORY: "NoRepository",
}


def format_bytes(n: int) -> str:
    size = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if size < 1024 or unit == "TiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{n} B"  # pragma: no cover


def success_message(summary: restic.Summary, duration: float) -> str:
    return (
        f"snapshot {summary.snapshot_id} saved: {summary.files_new} new, "
        f"{summary.files_changed} changed, {summary.files_unmodified} unmodified files, "
        f"{format_bytes(summary.data_added)} added in {duration:.1f}s"
    )


MAX_LOCK_PAUSE = 10.0


def lock_pause(attempt: int) -> float:
    """Pause before retrying a locked repository: growing, capped, jittered so that the
    pods of a workload, all fired by the same cron, do not retry in step."""
    base = min(MAX_LOCK_PAUSE, 0.5 * 2 ** min(attempt - 1, 6))
    return base * (0.5 + random.random())  # noqa: S311 - jitter, not crypto


PASSWORD_SOURCES = ("RESTIC_PASSWORD", "RESTIC_PASSWORD_FILE", "RESTIC_PASSWORD_COMMAND")
SECRET_MISSING = "SecretMissing"  # noqa: S105 (a condition reason, not a password)


def missing_password(backup: Backup, env: Mapping[str, str]) -> str | None:
    """Why restic has no password, or None. The sidecar references the Secret as optional
    (a missing Secret must not keep the application's pod from starting), so a missing
    Secret or key shows up here as an unset RESTIC_PASSWORD."""
    if any(env.get(name) for name in PASSWORD_SOURCES):
        return None
    return (
        f"Secret {backup.namespace}/{backup.secret_name} "
        "(spec.destination.repositorySecretName) is missing or has no non-empty key "
        '"password": RESTIC_PASSWORD is not set, restic was not started. Create the '
        "Secret with that key, then restart the pod: environment variables are fixed "
        "when the container starts"
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


class Job:
    """Runs the restic commands of one Backup run, in order, with their recoveries."""

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
        designated: bool = True,
        workload: tuple[str, str] | None = None,
    ):
        """``tidy_locks``: after a successful run, remove stale locks even where none got in
        the way (a killed run's non-exclusive lock would otherwise stay forever). For a local
        repository this costs a directory listing and is always done; for a remote one it
        costs a restic call, so the sidecar asks for it once per process."""
        self.tidy_locks = tidy_locks
        # Only the designated pod of a workload runs `forget` (and `prune`): both take an
        # exclusive lock, which would fail or stall the backups of the other pods.
        self.designated = designated
        self.workload = workload
        self.backup = backup
        self.ctx = ctx
        self.runner = runner
        self.stale_after = stale_after
        self.hostname = hostname or socket.gethostname()
        self.clock = clock

    def run(self) -> Outcome:
        started = time.monotonic()
        initialised = False
        self._locks_before = self._local_locks()
        problem = missing_password(self.backup, self.runner.env)
        if problem is not None:
            log.error("%s", problem)
            return Outcome(
                success=False,
                message=problem,
                duration=time.monotonic() - started,
                reason=SECRET_MISSING,
            )
        result = self._with_lock_recovery(restic.render_backup(self.backup, self.ctx))
        if not result.ok and not result.interrupted:
            kind = restic.classify(result.code, result.stderr)
            if kind is Failure.NO_REPOSITORY:
                # Only here: a missing config file. Never on a wrong password or network error,
                # and never over files that are there: they belong to some repository.
                leftovers = self._local_leftovers()
                if leftovers:
                    # A count, never the names: the message becomes an Event and a status
                    # that readers of the namespace see (issue 13 item 3).
                    return self._refused(
                        f"repository {self._repo} has no config but is not empty "
                        f"({leftovers} entries): not initialising over it; restore the "
                        "repository or clear the directory",
                        started,
                    )
                log.info("repository %s does not exist yet: initialising", self._repo)
                init = self.runner.run(restic.render_init(self.backup, self.ctx))
                if init.ok:
                    initialised = True
                elif "already exists" not in init.stderr:  # another replica was first
                    return self._failed(init, started, "restic init failed: ")
                result = self._with_lock_recovery(restic.render_backup(self.backup, self.ctx))
        summary = restic.parse_summary(result.stdout) if result.code in (0, 3) else None
        if result.interrupted and not result.ok:
            return self._failed(result, started, "interrupted by shutdown: ", initialised)
        if result.code == restic.EXIT_INCOMPLETE and summary is not None:
            # Snapshot saved but incomplete: report it, and keep older snapshots (no forget).
            return Outcome(
                success=False,
                message=f"snapshot {summary.snapshot_id} saved but incomplete: "
                + restic.first_error_line(result.stderr, result.code),
                duration=time.monotonic() - started,
                summary=summary,
                failure=Failure.OTHER,
                initialised=initialised,
            )
        if not result.ok:
            return self._failed(result, started, "", initialised)
        if summary is None:
            return self._failed(result, started, "restic backup printed no summary: ", initialised)
        if not self._snapshot_stored(summary.snapshot_id):
            # restic 0.14 "saves" into a vanished local repository's re-created directories.
            return self._refused(
                f"repository {self._repo} disappeared during the run: snapshot "
                f"{summary.snapshot_id[:8]} is in no repository",
                started,
                initialised,
            )

        forget_args = self._forget_args() if self.designated else None
        if forget_args is not None:
            forget = self._with_lock_recovery(forget_args)
            if not forget.ok:
                prefix = f"snapshot {summary.snapshot_id} saved, but restic forget failed: "
                outcome = self._failed(forget, started, prefix, initialised)
                return dataclasses.replace(outcome, summary=summary)
        self._tidy_locks()
        duration = time.monotonic() - started
        return Outcome(
            success=True,
            message=success_message(summary, duration),
            duration=duration,
            summary=summary,
            initialised=initialised,
        )

    @property
    def _repo(self) -> str:
        return restic.repository_of(self.backup)

    @property
    def _local_dir(self) -> Path | None:
        """The repository's directory when it is on a filesystem restik can see."""
        repo = self._repo
        if repo.startswith("local:"):
            repo = repo[len("local:") :]
        return Path(repo) if repo.startswith("/") else None

    def _local_leftovers(self) -> int:
        """How many entries the repository's directory has (0 when it is not there)."""
        local = self._local_dir
        if local is None or not local.is_dir():
            return 0
        return sum(1 for _ in local.iterdir())

    def _snapshot_stored(self, snapshot_id: str) -> bool:
        local = self._local_dir
        if local is None:
            return True  # remote backends answer for themselves
        snapshots = local / "snapshots"
        return (local / "config").is_file() and any(snapshots.glob(f"{snapshot_id}*"))

    def _local_locks(self) -> set[str]:
        local = self._local_dir
        if local is None or not (local / "locks").is_dir():
            return set()
        return {p.name for p in (local / "locks").iterdir()}

    def _tidy_locks(self) -> None:
        local = self._local_dir
        if local is not None:
            # Only a lock that was there before this run and outlived it can be a leftover;
            # the locks of other pods' runs that started meanwhile are not worth a look.
            if not self._locks_before & self._local_locks():
                return
        elif not self.tidy_locks:
            return
        self._clear_stale_locks()

    def _refused(self, message: str, started: float, initialised: bool = False) -> Outcome:
        log.error("%s", message)
        return Outcome(
            success=False,
            message=message,
            duration=time.monotonic() - started,
            failure=Failure.OTHER,
            initialised=initialised,
        )

    def _failed(
        self, result: Result, started: float, prefix: str = "", initialised: bool = False
    ) -> Outcome:
        kind = restic.classify(result.code, result.stderr)
        return Outcome(
            success=False,
            message=prefix + restic.first_error_line(result.stderr, result.code),
            duration=time.monotonic() - started,
            failure=kind,
            initialised=initialised,
            interrupted=result.interrupted,
        )

    def _forget_args(self) -> list[str] | None:
        """`forget` for every host of the workload (the designated pod forgets for all)."""
        if self.backup.retention is None or not self.backup.retention.keeps_anything:
            return None
        kind = self.workload[0] if self.workload else None
        if kind not in PER_POD_HOST_KINDS:
            return restic.render_forget(self.backup, self.ctx)
        listed = self.runner.run(restic.render_source_snapshots(self.backup, self.ctx))
        if not listed.ok:
            log.warning(
                "cannot list snapshots (%s): forgetting only host %s this time",
                restic.first_error_line(listed.stderr, listed.code),
                self.ctx.host,
            )
            return restic.render_forget(self.backup, self.ctx)
        hosts = restic.workload_hosts(
            listed.stdout, kind, self.workload[1] if self.workload else None, self.ctx.host
        )
        return restic.render_forget(self.backup, self.ctx, hosts)

    def _with_lock_recovery(self, args: list[str]) -> Result:
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
                if self._clear_stale_locks():
                    log.info("the lock on %s is gone (stale, or released); retrying", self._repo)
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
                self._repo,
                pause,
            )
            if self.runner.sleep(pause):
                return result  # stopping

    def _clear_stale_locks(self) -> bool:
        listed = self.runner.run(restic.render_list_locks(self.backup, self.ctx))
        if not listed.ok:
            log.warning("cannot list locks: %s", restic.first_error_line(listed.stderr))
            return False
        locks = []
        for lock_id in listed.stdout.split():
            cat = self.runner.run(restic.render_cat_lock(self.backup, self.ctx, lock_id))
            if not cat.ok:
                continue  # removed meanwhile
            lock = restic.parse_lock(lock_id, cat.stdout)
            if lock is not None:
                locks.append(lock)
        if not locks:
            return True  # the lock went away on its own: worth one retry
        now = self.clock()
        fresh = [
            lock
            for lock in locks
            if not restic.is_stale(
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
                self._repo,
                ", ".join(f"pid {lk.pid} on {lk.hostname}" for lk in fresh),
            )
            return False
        # Every lock is stale by our threshold. Plain `unlock` removes what restic itself
        # thinks stale; --remove-all only when it would keep one we know is stale.
        remove_all = not restic.restic_would_remove(
            locks, now=now, hostname=self.hostname, process_alive=pid_exists
        )
        log.warning(
            "removing %d stale lock(s) from %s%s",
            len(locks),
            self._repo,
            " (--remove-all)" if remove_all else "",
        )
        unlock = self.runner.run(restic.render_unlock(self.backup, self.ctx, remove_all=remove_all))
        if not unlock.ok:
            log.warning("restic unlock failed: %s", restic.first_error_line(unlock.stderr))
        return unlock.ok
