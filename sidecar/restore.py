"""`restik restore-run`: run one Restore for one host, once (in an init container or a Job).

The executor reads the Restore and its Backup, waits while the Backup is missing, lets one
replica of a shared host restore, chooses the snapshot and runs restic. Its parts:
snapshots (choosing one of one host), restore_restic (restic and its progress),
restore_status (status entries and Events), restore_once (runs once, the claim's note)."""

from __future__ import annotations

import argparse
import logging
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Callable, Mapping
from datetime import UTC, datetime

from reconciler.api.backup import Backup, InvalidBackup, parse_backup
from reconciler.api.restore import InvalidRestore, Restore, parse_restore
from reconciler.kube.client import Kube
from reconciler.kube.events import rfc3339
from reconciler.kube.resource import BACKUPS
from reconciler.logs import setup_logging
from sidecar import restic
from sidecar.follow import one_line
from sidecar.lease import LeaseKeeper, lease_name
from sidecar.restic import Context
from sidecar.restore_once import (
    annotate_claim,
    as_one_replica,
    check_claim,
    earlier_restore,
    finished_host,
    is_finished,
    own_entry,
    restored_note,
)
from sidecar.restore_options import RestoreSettings, settings_from_args
from sidecar.restore_restic import (
    FAILURE_REASONS,
    RESTORE_SINCE,
    Progress,
    RestoreFailed,
    RestoreProcess,
    render_restore,
    restic_failed,
    restore_context,
)
from sidecar.restore_status import (
    COMPONENT,
    MAX_ERROR,
    RestoreStatus,
    figures,
    host_entry,
    with_host,
)
from sidecar.runner import redact, secret_values
from sidecar.snapshots import (
    NoSnapshot,
    Snapshot,
    choose_snapshot,
    claim_source,
    describe_snapshots,
    parse_snapshots,
    select_snapshot,
)

# the names other code and tests import from here
__all__ = [
    "COMPONENT",
    "FAILURE_REASONS",
    "MAX_ERROR",
    "RESTORE_SINCE",
    "Executor",
    "NoSnapshot",
    "Progress",
    "RestoreFailed",
    "RestoreProcess",
    "RestoreStatus",
    "Snapshot",
    "describe_snapshots",
    "earlier_restore",
    "figures",
    "host_entry",
    "is_finished",
    "own_entry",
    "parse_snapshots",
    "render_restore",
    "restic_failed",
    "restore_context",
    "restored_note",
    "run",
    "select_snapshot",
    "with_host",
]

log = logging.getLogger("restik.restore")

LISTING_TIMEOUT = 600  # seconds `restic snapshots` may take


class Executor:
    """One Restore, one host. ``run()`` returns the exit code: 0 restored (or restored
    before), 1 failed, 2 bad invocation."""

    def __init__(
        self,
        settings: RestoreSettings,
        kube: Kube,
        *,
        env: Mapping[str, str] | None = None,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        listing=None,
    ):
        self.s = settings
        self.listing = listing  # an EarlyListing (sidecar.restore_start) or None
        self.kube = kube
        self.env = dict(os.environ if env is None else env)
        self.clock = clock
        self.namespace = settings.namespace or self.env.get("POD_NAMESPACE")
        self.namespace = self.namespace or kube.default_namespace or "default"
        self.pod = self.env.get("POD_NAME")
        self._stop = threading.Event()
        self.secrets = secret_values(self.env)
        self.status = RestoreStatus(kube, self.namespace, settings.restore, self.pod, clock)
        self.process = RestoreProcess(self._stop, self.secrets)

    def run(self) -> int:
        raw = self.status.read()
        if raw is None:
            log.warning(
                "Restore %s/%s not found (deleted?): nothing to restore",
                self.namespace,
                self.s.restore,
            )
            return 0
        try:
            restore = parse_restore(raw)
        except InvalidRestore as exc:
            log.error("%s", exc)
            self.status.invalid(str(exc))
            return 1
        status = raw.get("status") or {}
        if is_finished(status, restore):
            return self._already(status, restore)
        target_host = self._target_host(restore)
        done = finished_host(status, target_host, restore.run_id)
        if done:
            log.info("host %s was restored already (%s): not again", target_host, done)
            return 0 if done == "Succeeded" else 1
        if self._shares_host(restore):
            return self._one_replica(restore, target_host)
        return self._restore_when_ready(raw, restore, target_host)

    def stop(self, signum=None, frame=None) -> None:
        self._stop.set()
        self.process.stop()

    # -- before restoring: run once, one replica, the Backup

    def _already(self, status: Mapping, restore: Restore) -> int:
        phase = status.get("phase")
        log.info(
            "Restore %s/%s finished already (%s): it never runs again; create a new Restore "
            "(or change spec.runID) to restore once more",
            self.namespace,
            restore.name,
            phase,
        )
        return 0 if phase == "Succeeded" else 1

    def _target_host(self, restore: Restore) -> str:
        """The host this run restores: --host, else as the sidecar names it (pod, node or
        workload), else the claim's name for a PVC target."""
        if self.s.host:
            return self.s.host
        if restore.is_pvc:
            return restore.claim_name
        kind, name = self.s.workload or (restore.workload_kind, restore.workload_name)
        pod = self.pod or name
        return restic.host_for(kind, name, pod, self.env.get("NODE_NAME"))

    def _shares_host(self, restore: Restore) -> bool:
        """The replicas of a Deployment, ReplicaSet or ReplicationController share one host
        (and usually one volume): one of them restores, the others wait for it."""
        return (
            not restore.is_pvc
            and self.pod is not None
            and restic.needs_lease(restore.workload_kind)
        )

    def _one_replica(self, restore: Restore, host: str) -> int:
        lease = LeaseKeeper(
            self.kube,
            self.namespace,
            lease_name(f"restore-{restore.name}", host),
            self.pod,
            self.s.lease_duration,
        )
        return as_one_replica(
            lease,
            self.status.read,
            restore,
            host,
            self._stop,
            self.s.wait_interval,
            lambda current: self._restore_when_ready(current, restore, host),
        )

    def _restore_when_ready(self, raw: Mapping, restore: Restore, target_host: str) -> int:
        backup = self._wait_for_backup(restore)
        if backup is None:
            return 1  # stopped while waiting
        return self._restore(raw, restore, backup, target_host)

    def _wait_for_backup(self, restore: Restore) -> Backup | None:
        """The Backup, waiting while it is missing or invalid (GitOps applies in any order:
        that is Pending, not Failed)."""
        noted = None
        while not self._stop.is_set():
            raw = self.kube.get_or_none(BACKUPS.path(self.namespace, restore.backup))
            why = None
            if raw is None:
                why = f"Backup {self.namespace}/{restore.backup} not found"
            else:
                try:
                    return parse_backup(raw)
                except InvalidBackup as exc:
                    why = str(exc)
            if why != noted:
                log.warning("%s: waiting", why)
                self.status.pending(f"{why}: waiting")
                noted = why
            self._stop.wait(self.s.wait_interval)
        return None

    # -- restoring

    def _restore(self, raw: Mapping, restore: Restore, backup: Backup, target_host: str) -> int:
        started = self.clock()
        target = self.s.target or backup.source_path
        source_host = restore.source_host(target_host)
        snapshot = progress = None
        self.status.begin(restore, target_host, source_host, started)
        try:
            ctx, runner_env = restore_context(
                backup, target_host, self.s.restic, self.s.cache_dir, self.env
            )
            if restore.is_pvc:
                check_claim(self.kube, self.namespace, restore)
            snapshots = self._snapshots(backup, ctx, runner_env)
            try:
                if restore.is_pvc and restore.claim_name not in restore.hosts:
                    source_host = claim_source(snapshots, restore, backup.source_path)
                snapshot = choose_snapshot(snapshots, restore, source_host, backup.source_path)
            except NoSnapshot as exc:
                raise RestoreFailed(exc.reason, str(exc)) from None
            log.info(
                "restoring snapshot %s of host %s (%s) into %s",
                snapshot.short_id,
                source_host,
                rfc3339(snapshot.time),
                target,
            )
            self.status.event(
                raw,
                "RestoreStarted",
                f"host {target_host}: restoring snapshot "
                f"{snapshot.short_id} of {source_host} ({rfc3339(snapshot.time)}) into {target}",
            )
            os.makedirs(target, exist_ok=True)
            args = render_restore(backup, ctx, restore, snapshot.id, target)
            chosen = snapshot

            def on_progress(now: Progress) -> None:
                self.status.progress(restore, target_host, source_host, chosen, now, started)

            progress = self.process.run(args, runner_env, on_progress, self.s.progress_interval)
            if (
                progress.total_files == 0
                and progress.files == 0
                and (snapshot.files or restore.include or restore.exclude)
            ):
                raise RestoreFailed(
                    "NothingRestored",
                    "restic restored no file: the include/exclude patterns "
                    f"({', '.join(restore.include) or '-'} / {', '.join(restore.exclude) or '-'}) "
                    f"match nothing in snapshot {snapshot.short_id}",
                )
        except RestoreFailed as exc:
            return self.status.finish(
                raw, restore, target_host, source_host, started, snapshot, None, exc
            )
        except Exception as exc:  # an API or OS error: still a Failed Restore, never silent
            log.exception("restore failed")
            failed = RestoreFailed("Error", f"{type(exc).__name__}: {one_line(exc)}")
            return self.status.finish(
                raw, restore, target_host, source_host, started, snapshot, None, failed
            )
        if restore.is_pvc:
            annotate_claim(self.kube, self.namespace, restore, snapshot, self.clock())
        return self.status.finish(
            raw, restore, target_host, source_host, started, snapshot, progress, None
        )

    def _restic(self, args: list[str], env: Mapping[str, str]) -> subprocess.CompletedProcess:
        try:
            return subprocess.run(
                args,
                capture_output=True,
                text=True,
                env=dict(env),
                stdin=subprocess.DEVNULL,
                timeout=LISTING_TIMEOUT,
                errors="replace",
            )
        except subprocess.TimeoutExpired as exc:
            raise RestoreFailed(
                "Error", f"restic snapshots did not answer within {LISTING_TIMEOUT}s"
            ) from exc

    def _snapshots(self, backup: Backup, ctx: Context, env: Mapping) -> list[Snapshot]:
        """Every snapshot of the Backup's path (all hosts: for the reason when none fits)."""
        argv = restic.render_source_snapshots(backup, ctx)
        early = None
        if self.listing is not None:
            try:
                early = self.listing.take(argv)
            except subprocess.TimeoutExpired as exc:
                raise RestoreFailed(
                    "Error", f"restic snapshots did not answer within {LISTING_TIMEOUT}s"
                ) from exc
        if early is not None:
            log.debug("the snapshot listing started ahead is the Backup's: using it")
        proc = early if early is not None else self._restic(argv, env)
        if proc.returncode != 0:
            stderr = redact(proc.stderr, self.secrets)
            raise restic_failed(proc.returncode, stderr, "listing snapshots")
        return parse_snapshots(proc.stdout)


def run(args: argparse.Namespace, listing=None, executor_class: type[Executor] = Executor) -> int:
    """`restik restore-run`: the exit code (0 restored, 1 failed, 2 bad invocation).
    ``listing``: the snapshot listing sidecar.restore_start began, if any; ``executor_class``:
    sidecar.restore_dump.DumpExecutor for a dump Restore's Job."""
    try:
        settings = settings_from_args(args)
    except ValueError as exc:
        print(f"restik restore-run: {exc}", file=sys.stderr)
        return 2
    secret = secret_values(os.environ)
    setup_logging(settings.log_level, settings.log_format, lambda text: redact(text, secret))
    try:
        kube = Kube.connect(settings.kubeconfig)
    except Exception as exc:
        log.error("restik restore-run: %s", one_line(exc))
        return 1
    executor = executor_class(settings, kube, listing=listing)
    signal.signal(signal.SIGTERM, executor.stop)
    try:
        return executor.run()
    except Exception as exc:
        log.error("restik restore-run failed: %s", one_line(exc))
        return 1
