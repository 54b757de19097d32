"""`restik watch`, the sidecar: follow the Backup, run its Job on schedule, report each run.

The pieces: scheduler (cron timing), job (one run's steps), report (the Event), process
(signals, logging, the run's thread), follow/lease/metrics (the API and the port)."""

from __future__ import annotations

import argparse
import logging
import os
import socket
import sys
import threading
import time
from datetime import UTC, datetime

from sidecar import restic
from sidecar.check import check_and_report
from sidecar.environment import scrub
from sidecar.follow import backoff, follow_backup, one_line
from sidecar.job import Job, Pod
from sidecar.metrics import Metrics
from sidecar.options import Settings, add_arguments, settings_from_args
from sidecar.outcome import Outcome, log_outcome, run_log_level
from sidecar.podexec import PodExec
from sidecar.process import RunThread, configure_logging, on_stop_signals, restic_runner
from sidecar.report import BackupGone, record_trigger, report
from sidecar.scheduler import Scheduler
from sidecar.startup import locate, reconnect_on_401

log = logging.getLogger("restik.watch")

HEALTH_STALE_AFTER = 120.0  # seconds without a main-loop beat before /healthz fails
METRICS_RETRY = 5.0  # seconds between attempts to bind a taken metrics port
CHECK_POLL = 0.2  # seconds between looks at the run thread while a check waits for it


class Sidecar:
    def __init__(self, settings: Settings):
        self.s = settings
        self._cond = threading.Condition()
        self._raw: dict | None = None
        self._raw_seen = False
        self._changed = False
        self._stop = threading.Event()
        self._worker = RunThread()
        self.schedule = Scheduler(settings.backup)
        self._was_follower = False
        self._check_pending = False  # spec.check is due, waiting for the run thread
        self._locks_tidied = False  # stale locks of remote repositories: once per process
        self.kube = None  # set once the API answers (see _start)
        self.lease = None  # of several replicas sharing one host: who backs up
        self.prune_lease = None  # of pods with a host each: who forgets and prunes
        self.workload: tuple[str, str] | None = None
        self.pod_spec: dict | None = None  # where hooks and dump commands run
        self.pod_name = os.environ.get("POD_NAME") or socket.gethostname()
        self.namespace = settings.namespace or os.environ.get("POD_NAMESPACE")
        self.host = self.pod_name  # the snapshot host, known once the pod was read
        self.ctx: restic.Context | None = None
        self.runner = None
        self.metrics = None
        self._server = None
        self._lease_thread: threading.Thread | None = None
        self._metrics_failed = False
        self._next_bind = 0.0

    # called from the follower thread
    def set_backup(self, raw: dict | None) -> None:
        with self._cond:
            self._raw, self._raw_seen, self._changed = raw, True, True
            self._cond.notify_all()

    def stop(self, signum=None, frame=None) -> None:
        if not self._stop.is_set():
            log.info("stopping (signal %s)", signum)
        self._stop.set()

    def main(self) -> int:
        """Run until SIGTERM. Nothing outside restik's control makes it exit: without a
        token or an API it retries with backoff, without its metrics port it runs without
        metrics and tries the port again; a sidecar must not crash-loop its pod."""
        s = self.s
        on_stop_signals(self.stop)
        self.schedule.namespace = self.namespace
        if s.metrics_port:
            self.metrics = Metrics(self.namespace or "", s.backup)
            self._bind_metrics()
        threading.Thread(target=self._start, name="start", daemon=True).start()
        try:
            self._loop()
        finally:
            self._shutdown()
        return 0

    # --- metrics port ---

    def _bind_metrics(self) -> None:
        s = self.s
        self._next_bind = time.monotonic() + METRICS_RETRY
        try:
            self._server = self.metrics.serve(s.metrics_address, s.metrics_port, HEALTH_STALE_AFTER)
        except OSError as exc:
            if not self._metrics_failed:
                log.error(
                    "cannot serve /metrics and /healthz on %s:%d (%s): running without them "
                    "and trying again every %.0fs; a liveness probe on this port fails meanwhile",
                    s.metrics_address,
                    s.metrics_port,
                    exc,
                    METRICS_RETRY,
                )
            self._metrics_failed = True
            return
        if self._metrics_failed:
            log.info(
                "serving /metrics and /healthz on %s:%d now", s.metrics_address, s.metrics_port
            )
        self._metrics_failed = False

    # --- starting: API connection, own pod, host (a thread, retried until it works) ---

    def _start(self) -> None:
        failures = 0
        while not self._stop.is_set():
            try:
                self._setup()
            except Exception as exc:
                failures += 1
                delay = backoff(failures)
                log.warning(
                    "cannot start following Backup %s (%s); again in %.0fs, no runs until then",
                    self.s.backup,
                    one_line(exc),
                    delay,
                )
                self._stop.wait(delay)
                continue
            break
        if self._stop.is_set():
            return
        if self.lease is not None or self.prune_lease is not None:
            self._lease_thread = threading.Thread(
                target=self._keep_lease, name="lease", daemon=True
            )
            self._lease_thread.start()
        self._follow()

    def _setup(self) -> None:
        s = self.s
        place = locate(s, self.pod_name, self.namespace)
        ctx, runner = restic_runner(s, place.host)
        self.kube, self.namespace, self.host = place.kube, place.namespace, place.host
        self.schedule.namespace, self.pod_spec = place.namespace, place.pod_spec
        self.schedule.host = place.host
        self.lease, self.prune_lease = place.lease, place.prune_lease
        self.workload = place.workload
        self.ctx, self.runner = ctx, runner
        if self._stop.is_set():
            self.runner.stop()
        if self.metrics:
            self.metrics.labels["namespace"] = place.namespace
        kind, wname = place.workload or (None, None)
        log.info(
            "restik watch: Backup %s/%s, workload %s, host %s%s",
            place.namespace,
            s.backup,
            f"{kind}/{wname}" if kind else "-",
            place.host,
            f", Lease {place.lease.name}" if place.lease else "",
        )
        if place.prune_lease is not None:
            log.info(
                "the holder of Lease %s forgets and prunes for all pods", place.prune_lease.name
            )

    def _reconnect_on_401(self, exc: Exception) -> None:
        kube = reconnect_on_401(self.s, exc, (self.lease, self.prune_lease))
        if kube is not None:
            self.kube = kube

    # --- following the Backup (a thread) ---

    def _follow(self) -> None:
        follow_backup(lambda: self.kube, self.namespace, self.s.backup, self.s.resync,
                      self.set_backup, self._stop, self._reconnect_on_401)  # fmt: skip

    # --- scheduling (the main thread) ---

    def _loop(self) -> None:
        while not self._stop.is_set():
            if self.metrics:
                self.metrics.beat()
            timeout = self.schedule.wait(1.0, datetime.now(UTC))
            if self._check_pending:  # start it as soon as the run going on ends
                timeout = min(timeout, CHECK_POLL)
            with self._cond:
                if not self._changed and timeout > 0:
                    self._cond.wait(timeout)
                changed, raw, seen = self._changed, self._raw, self._raw_seen
                self._changed = False
            if self._stop.is_set():
                break
            if changed and seen:
                self.schedule.apply(raw)
                if self.metrics:
                    self.metrics.status_seen((raw or {}).get("status"))
            if self._metrics_failed and time.monotonic() >= self._next_bind:
                self._bind_metrics()
            fire_at = self.schedule.due(datetime.now(UTC))
            if fire_at is not None:
                self._fire(fire_at)
            self._check_pending |= self.schedule.check_due(datetime.now(UTC)) is not None
            if self._check_pending and not self._worker.busy:
                self._check_pending = False
                self._start_check()
            if self.metrics:
                backup = self.schedule.backup
                self.metrics.schedule(backup and backup.schedule, self.schedule.next_fire)
                checks = self.schedule.next_check and backup.check.schedule
                self.metrics.check.schedule(checks or None)

    def _keep_lease(self) -> None:
        """Acquire/renew the Lease every third of its duration (its own thread: an API
        that hangs must not stall the schedule or /healthz)."""
        lease = self.lease or self.prune_lease
        while not self._stop.is_set():
            try:
                lease.tick()
                if lease is self.prune_lease and lease.suspect:
                    self.schedule.problem(f"{lease.suspect} (no pod forgets and prunes meanwhile)")
            except Exception as exc:
                log.warning("Lease %s: %s", lease.name, one_line(exc))
                self._reconnect_on_401(exc)
            self._stop.wait(max(1.0, lease.duration / 3))

    def _fire(self, fire_at: datetime) -> None:
        backup = self.schedule.backup
        if backup is None or backup.paused:
            return
        if self._worker.busy:
            log.warning(
                "skipping the run due at %s: the previous run is still going",
                fire_at.isoformat(timespec="seconds"),
            )
            if self.metrics:
                self.metrics.skipped()
            return
        if self.lease is not None and not self.lease.holding and self.lease.suspect:
            # Someone else's Lease, not another replica's: a Failed run (Event, metrics).
            self._worker.start(self._run_once, backup, self.lease.suspect)
            return
        if self.lease is not None and not self.lease.holding:
            level = logging.DEBUG if self._was_follower else logging.INFO
            log.log(level, "not the holder of Lease %s: another replica backs up", self.lease.name)
            self._was_follower = True
            return
        self._was_follower = False
        self._worker.start(self._run_once, backup)

    def _start_check(self) -> None:
        """spec.check in the run thread (after a backup that is running: never both at
        once), by the pod that prunes only: one check per repository."""
        backup = self.schedule.backup
        if backup is None or backup.paused or backup.check is None:
            return  # paused or changed while the check waited
        for lease in (self.lease, self.prune_lease):
            if lease is not None and not lease.holding:
                log.debug("not the holder of Lease %s: another pod checks", lease.name)
                return
        self._worker.start(
            check_and_report, backup, self.ctx, self.runner, self.kube,
            stale_after=self.s.lock_stale_after, host=self.host, instance=self.pod_name,
            metrics=self.metrics and self.metrics.check,
        )  # fmt: skip

    def _run_once(self, backup, refused: str | None = None) -> None:
        """One run and its report; ``refused``: not run, reported as Failed with that reason."""
        started = datetime.now(UTC)
        trigger = self.schedule.take_trigger()
        log.info("run of %s/%s started (host %s)", backup.namespace, backup.name, self.host)
        job = Job(
            backup,
            self.ctx,
            self.runner,
            stale_after=self.s.lock_stale_after,
            tidy_locks=not self._locks_tidied,
            designated=self.prune_lease is None or self.prune_lease.holding,
            workload=self.workload,
            pod=self._pod(),
        )
        try:
            if refused is not None:
                outcome = Outcome(success=False, message=refused, duration=0.0)
            else:
                outcome = job.run()
            self._locks_tidied = self._locks_tidied or outcome.success
        except Exception as exc:  # e.g. restic missing: still a Failed Event, never a crash
            log.exception("run failed")
            outcome = Outcome(success=False, message=f"{type(exc).__name__}: {exc}", duration=0.0)
        if self.metrics:
            added = outcome.summary.data_added if outcome.summary else None
            self.metrics.observe(outcome.success, outcome.duration, added, started)
        try:
            event = report(
                self.kube,
                self.namespace,
                backup.name,
                outcome,
                started=started,
                now=datetime.now(UTC),
                host=self.host,
                instance=self.pod_name,
                current=self._latest(),
            )
        except BackupGone as exc:
            event = None
            log.warning("%s: run not reported", exc)
        except Exception as exc:
            event = None
            log.error("could not report the run: %s", exc)
        if trigger is not None and event is not None:
            try:  # which run served `restik backup-now` (it waits for every host's Event)
                record_trigger(self.kube, self.namespace, backup.name, self.host, trigger,
                               event, outcome.success, datetime.now(UTC))  # fmt: skip
            except Exception as exc:
                log.warning("could not record the served backup request: %s", one_line(exc))
        level, hint = run_log_level(outcome, backup)
        log_outcome(log, level, "run", backup, outcome, event, hint)

    def _latest(self) -> dict | None:
        """The Backup as the follower last read it (None: not read, or deleted)."""
        with self._cond:
            return self._raw

    def _pod(self) -> Pod | None:
        """The own pod for hooks and dump commands (None outside a pod)."""
        if not os.environ.get("POD_NAME") and self.pod_spec is None:
            return None
        return Pod(self.namespace, self.pod_name, self.pod_spec, PodExec.from_kube(self.kube))

    def _shutdown(self) -> None:
        self._stop.set()
        if self.runner is not None:
            self.runner.stop()
        self._worker.join(self.s.stop_timeout + 30)
        if self._lease_thread is not None:  # no renewal may follow the release
            self._lease_thread.join(self.s.lease_duration)
        for lease in (self.lease, self.prune_lease):
            if lease is not None:
                lease.release()
        if self._server is not None:
            self._server.shutdown()
        log.info("stopped")


def run(args: argparse.Namespace) -> int:
    """Run the sidecar until SIGTERM; the process exit code."""
    loud, quiet = scrub()  # before anything reads the environment (RESTIC_CACHE_DIR, ...)
    try:
        settings = settings_from_args(args)
    except ValueError as exc:
        print(f"restik watch: {exc}", file=sys.stderr)
        return 2
    configure_logging(settings.log_level, settings.log_format)
    if loud:
        log.warning("ignoring environment variables restik does not pass on: %s", loud)
    if quiet:
        log.debug("dropped environment variables: %s", quiet)
    try:
        return Sidecar(settings).main()
    except Exception as exc:
        log.error("restik watch failed: %s", exc, exc_info=settings.log_level == "debug")
        return 1


def main(argv: list[str] | None = None) -> int:
    """`python -m sidecar.main`, for trying the sidecar without the full CLI."""
    parser = argparse.ArgumentParser(prog="restik watch")
    add_arguments(parser)
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
