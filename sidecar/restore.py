"""`restik restore-run`: run one Restore for one host, once (in an init container or a Job).

The executor reads the Restore and its Backup, waits while the Backup is missing, lets one
replica of a shared host restore, chooses the snapshot and runs restic. Its parts:
snapshots (choosing one of one host), restore_restic (restic and its progress),
restore_latest (the default restore: restic picks the newest snapshot and names it),
restore_status (status entries and Events), restore_once (runs once, the claim's note).
restore_start may have started restic already (an EarlyRestore): the executor then
takes over its output, status and Events."""

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
from typing import TYPE_CHECKING

from reconciler.api.backup import Backup, InvalidBackup, parse_backup
from reconciler.api.restore import InvalidRestore, Restore, parse_restore
from reconciler.kube.events import rfc3339
from reconciler.kube.resource import BACKUPS
from reconciler.logs import setup_logging
from sidecar import restic
from sidecar.follow import one_line
from sidecar.restic import Context
from sidecar.restore_latest import (
    LATEST_SINCE,
    TextProgress,
    latest_env,
    latest_source,
    render_latest,
)
from sidecar.restore_once import (
    annotate_claim,
    as_one_replica,
    check_claim,
    earlier_restore,
    finished_host,
    is_finished,
    own_entry,
    restored_note,
    shares_host,
    target_host,
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
    restore_context_version,
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

if TYPE_CHECKING:  # loaded in run() when needed: the default restore never loads pykube
    from reconciler.kube.client import Kube

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
        early=None,
    ):
        self.s = settings
        self.listing = listing  # an EarlyListing (sidecar.restore_start) or None
        self.early = early  # an EarlyRestore (sidecar.restore_start) or None
        self.kube = kube
        self.env = dict(os.environ if env is None else env)
        self.clock = clock
        self.namespace = settings.namespace or self.env.get("POD_NAMESPACE")
        self.namespace = self.namespace or kube.default_namespace or "default"
        self.pod = self.env.get("POD_NAME")
        self._stop = threading.Event()
        self.secrets = secret_values(self.env)
        self.process = RestoreProcess(self._stop, self.secrets)
        if early is not None:  # its restic runs: read, checked and stoppable already
            self.namespace = early.namespace
            self._stop = early.stopping
            self.process = early.process
        self.status = RestoreStatus(kube, self.namespace, settings.restore, self.pod, clock)
        self.restoring: Snapshot | None = None  # the snapshot being restored, once known
        self.source: str | None = None  # the host whose snapshot it is

    def run(self) -> int:
        if self.early is not None:
            e = self.early
            return self._restore(e.raw, e.restore, e.backup, e.target_host)
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
        return target_host(
            restore, self.s.host, self.s.workload, self.pod, self.env.get("NODE_NAME")
        )

    def _shares_host(self, restore: Restore) -> bool:
        return shares_host(restore, self.pod)

    def _one_replica(self, restore: Restore, host: str) -> int:
        from sidecar.lease import LeaseKeeper, lease_name

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
        early, self.early = self.early, None
        started = early.started if early is not None else self.clock()
        target = self.s.target or backup.source_path
        source_host = self.source = restore.source_host(target_host)
        progress = None
        self.status.begin(restore, target_host, source_host, started)
        try:
            if early is not None:  # checked before restic started
                ctx, runner_env, version = early.ctx, early.env, LATEST_SINCE
            else:
                ctx, runner_env, version = restore_context_version(
                    backup, target_host, self.s.restic, self.s.cache_dir, self.env
                )
                if restore.is_pvc:
                    check_claim(self.kube, self.namespace, restore)
            latest = latest_source(restore, backup, target_host)
            if early is not None or (latest is not None and version >= LATEST_SINCE):
                if self.listing is not None:
                    self.listing.close()  # restic picks the snapshot itself
                progress = self._restore_latest(
                    raw, restore, backup, ctx, runner_env, target_host, target, started, early
                )
            else:
                progress = self._restore_listed(
                    raw, restore, backup, ctx, runner_env, target_host, target, started
                )
            snapshot = self.restoring
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
                raw, restore, target_host, self.source, started, self.restoring, None, exc
            )
        except Exception as exc:  # an API or OS error: still a Failed Restore, never silent
            log.exception("restore failed")
            failed = RestoreFailed("Error", f"{type(exc).__name__}: {one_line(exc)}")
            return self.status.finish(
                raw, restore, target_host, self.source, started, self.restoring, None, failed
            )
        finally:
            if early is not None and early.proc.poll() is None:
                early.close()  # an error while following it: restic must not run on
        snapshot = self.restoring
        if restore.is_pvc:
            annotate_claim(self.kube, self.namespace, restore, snapshot, self.clock())
        return self.status.finish(
            raw, restore, target_host, self.source, started, snapshot, progress, None
        )

    def _started(self, raw: Mapping, target_host: str, snapshot: Snapshot, target: str) -> None:
        self.restoring = snapshot
        log.info(
            "restoring snapshot %s of host %s (%s) into %s",
            snapshot.short_id,
            snapshot.host,
            rfc3339(snapshot.time),
            target,
        )
        self.status.event(
            raw,
            "RestoreStarted",
            f"host {target_host}: restoring snapshot "
            f"{snapshot.short_id} of {snapshot.host} ({rfc3339(snapshot.time)}) into {target}",
        )

    def _restore_latest(
        self, raw, restore, backup, ctx, env, target_host, target, started, early
    ) -> Progress:
        """restic picks the newest snapshot of the source host and names it in its first
        line (sidecar.restore_latest); no listing unless it finds none."""
        source_host = restore.source_host(target_host)

        def on_started(snapshot: Snapshot) -> None:
            self._started(raw, target_host, snapshot, target)
            self.status.progress(restore, target_host, source_host, snapshot, text, started)

        def on_progress(now: Progress) -> None:
            if self.restoring is not None:
                self.status.progress(
                    restore, target_host, source_host, self.restoring, now, started
                )

        text = TextProgress(target, source_host, on_started)
        if early is not None:
            proc = early.proc
        else:
            os.makedirs(target, exist_ok=True)
            args = render_latest(backup, ctx, restore, source_host, target)
            proc = self.process.start(args, latest_env(env, self.s.progress_interval))
        try:
            return self.process.follow(proc, text, on_progress, self.s.progress_interval)
        except RestoreFailed:
            if text.no_snapshot:
                raise self._no_snapshot(backup, ctx, env, restore, source_host) from None
            raise

    def _no_snapshot(self, backup, ctx, env, restore, source_host) -> RestoreFailed:
        """restic found no snapshot of the host: the listing says what exists."""
        snapshots = self._snapshots(backup, ctx, env)
        try:
            choose_snapshot(snapshots, restore, source_host, backup.source_path)
        except NoSnapshot as exc:
            return RestoreFailed(exc.reason, str(exc))
        # one landed since restic looked: still no silent success, say what exists now
        return RestoreFailed(
            "NoSnapshot",
            f"restic found no snapshot of host {source_host}; "
            + describe_snapshots(snapshots, backup.source_path),
        )

    def _restore_listed(
        self, raw, restore, backup, ctx, runner_env, target_host, target, started
    ) -> Progress:
        """The listing picks the snapshot (spec.snapshot, spec.asOf, a claim's source host),
        then `restic restore <id>:<path> --json`."""
        source_host = restore.source_host(target_host)
        snapshots = self._snapshots(backup, ctx, runner_env)
        try:
            if restore.is_pvc and restore.claim_name not in restore.hosts:
                source_host = self.source = claim_source(snapshots, restore, backup.source_path)
            snapshot = choose_snapshot(snapshots, restore, source_host, backup.source_path)
        except NoSnapshot as exc:
            raise RestoreFailed(exc.reason, str(exc)) from None
        self._started(raw, target_host, snapshot, target)
        os.makedirs(target, exist_ok=True)
        args = render_restore(backup, ctx, restore, snapshot.id, target)

        def on_progress(now: Progress) -> None:
            self.status.progress(restore, target_host, source_host, snapshot, now, started)

        return self.process.run(args, runner_env, on_progress, self.s.progress_interval)

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


def run(
    args: argparse.Namespace,
    listing=None,
    executor_class: type[Executor] = Executor,
    early=None,
) -> int:
    """`restik restore-run`: the exit code (0 restored, 1 failed, 2 bad invocation).
    ``listing``: the snapshot listing sidecar.restore_start began, if any; ``early``: the
    restic restore it spawned, if any; ``executor_class``: sidecar.restore_dump.DumpExecutor
    for a dump Restore's Job."""
    try:
        settings = settings_from_args(args)
    except ValueError as exc:
        print(f"restik restore-run: {exc}", file=sys.stderr)
        return 2
    secret = secret_values(os.environ)
    setup_logging(settings.log_level, settings.log_format, lambda text: redact(text, secret))
    if early is not None:
        kube = early.kube  # the client that read, before restic started
    else:
        from reconciler.kube.client import Kube

        try:
            kube = Kube.connect(settings.kubeconfig)
        except Exception as exc:
            log.error("restik restore-run: %s", one_line(exc))
            return 1
    if early is not None:
        executor = executor_class(settings, kube, listing=listing, early=early)
    else:
        executor = executor_class(settings, kube, listing=listing)
    signal.signal(signal.SIGTERM, executor.stop)
    try:
        return executor.run()
    except Exception as exc:
        log.error("restik restore-run failed: %s", one_line(exc))
        return 1
