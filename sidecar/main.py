"""`restik watch`, the sidecar: follow the Backup, run restic on its schedule, report each run.

Only the standard library is imported at module level: the CLI imports this module for
``add_arguments`` and the idle sidecar should stay small.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import socket
import sys
import tempfile
import threading
import time
from datetime import UTC, datetime

from reconciler.api.backup import InvalidBackup, parse_backup
from reconciler.api.constants import PLURAL
from reconciler.kube.client import ApiError, Kube
from reconciler.kube.resource import BACKUPS, PODS
from reconciler.logs import setup_logging
from sidecar import restic
from sidecar.follow import backoff, one_line, workload_from_pod
from sidecar.job import SECRET_MISSING, Job, Outcome
from sidecar.lease import LeaseKeeper, lease_name
from sidecar.metrics import Metrics
from sidecar.options import Settings, add_arguments, settings_from_args
from sidecar.report import BackupGone, report
from sidecar.restic import Failure, repository_of
from sidecar.runner import Runner, redact, redact_url, restic_env, secret_values
from sidecar.shell import publish_repository

log = logging.getLogger("restik.watch")

HEALTH_STALE_AFTER = 120.0  # seconds without a main-loop beat before /healthz fails
METRICS_RETRY = 5.0  # seconds between attempts to bind a taken metrics port


# --- logging -------------------------------------------------------------------------------


def configure_logging(level: str, fmt: str) -> None:

    secrets = secret_values(os.environ)
    setup_logging(level, fmt, lambda text: redact(text, secrets))


# --- the pod -------------------------------------------------------------------------------


# --- the sidecar ---------------------------------------------------------------------------


class Sidecar:
    def __init__(self, settings: Settings):
        self.s = settings
        self._cond = threading.Condition()
        self._raw: dict | None = None
        self._raw_seen = False
        self._changed = False
        self._stop = threading.Event()
        self._worker: threading.Thread | None = None
        self.backup = None  # the parsed Backup being scheduled, or None
        self._last_problem: str | None = None
        self.next_fire: datetime | None = None
        self._was_follower = False
        self._locks_tidied = False  # stale locks of remote repositories: once per process
        self.kube = None  # set once the API answers (see _start)
        self.lease = None  # of several replicas sharing one host: who backs up
        self.prune_lease = None  # of pods with a host each: who forgets and prunes
        self.workload: tuple[str, str] | None = None
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
        signal.signal(signal.SIGTERM, self.stop)
        signal.signal(signal.SIGINT, self.stop)
        self.pod_name = os.environ.get("POD_NAME") or socket.gethostname()
        self.namespace = s.namespace or os.environ.get("POD_NAMESPACE")
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
        """Connect, find the own pod and derive the snapshot host; raises while the API
        cannot be reached (no token, no kubeconfig, connection refused, 5xx, 401)."""

        s = self.s
        kube = Kube.connect(s.kubeconfig)
        ns = self.namespace or kube.default_namespace or "default"
        in_pod, workload, pod_node = self._find_pod(kube, ns)
        kind, wname = workload if workload else (None, None)
        if in_pod:
            node = os.environ.get("NODE_NAME") or pod_node
            if kind == "DaemonSet" and not node:
                log.warning(
                    "DaemonSet pod without NODE_NAME or spec.nodeName: host = pod name %s",
                    self.pod_name,
                )
            host = restic.host_for(kind, wname, self.pod_name, node)
        else:
            host = self.pod_name
            log.info("pod %s/%s not found: running as a single instance", ns, self.pod_name)

        cache_dir = s.cache_dir or os.environ.get("RESTIC_CACHE_DIR")
        if not cache_dir:
            cache_dir = tempfile.mkdtemp(prefix="restik-cache-")
        os.makedirs(cache_dir, exist_ok=True)
        lease = prune_lease = None
        if in_pod and kind:
            if restic.needs_lease(kind):
                name = lease_name(s.backup, wname)
                lease = LeaseKeeper(kube, ns, name, self.pod_name, s.lease_duration)
            else:
                name = lease_name(s.backup, wname + "-prune")
                prune_lease = LeaseKeeper(kube, ns, name, self.pod_name, s.lease_duration)
        version = restic.detect_version(s.restic)
        native = restic.has_retry_lock(version)
        log.info(
            "restic %s: %s",
            ".".join(map(str, version)) if version else "(version unknown)",
            "waits for locks itself (--retry-lock)"
            if native
            else "lock waits retried by restik with jitter",
        )
        self.kube, self.namespace, self.host = kube, ns, host
        self.lease, self.prune_lease = lease, prune_lease
        self.workload = (kind, wname) if kind else None
        self.ctx = restic.Context(
            host=host,
            cache_dir=cache_dir,
            restic=s.restic,
            retry_lock=s.lock_wait,
            native_retry_lock=native,
        )
        self.runner = Runner(
            restic_env(os.environ, cache_dir),
            stop_timeout=s.stop_timeout,
            command_timeout=s.run_timeout,
            backend_timeout=s.backend_timeout,
        )
        if self._stop.is_set():
            self.runner.stop()
        if self.metrics:
            self.metrics.labels["namespace"] = ns
        log.info(
            "restik watch: Backup %s/%s, workload %s, host %s%s",
            ns,
            s.backup,
            f"{kind}/{wname}" if kind else "-",
            host,
            f", Lease {lease.name}" if lease else "",
        )
        if prune_lease is not None:
            log.info("the holder of Lease %s forgets and prunes for all pods", prune_lease.name)

    def _reconnect_on_401(self, exc: Exception) -> None:
        """A 401: the token expired or was rotated (a projected token is rewritten by the
        kubelet); connect again, which reads the token file anew."""

        if not (isinstance(exc, ApiError) and exc.status == 401):
            return
        try:
            kube = Kube.connect(self.s.kubeconfig)
        except Exception as err:
            log.warning("reconnecting after 401: %s", one_line(err))
            return
        self.kube = kube
        for lease in (self.lease, self.prune_lease):
            if lease is not None:
                lease.kube = kube
        log.info("reconnected to the API after a 401 (token re-read)")

    def _find_pod(self, kube, ns: str) -> tuple[bool, tuple[str, str] | None, str | None]:
        """(in a pod, its workload, its node). Raises while the API cannot answer (so the
        start is retried): guessing then would back up under a wrong host."""

        workload = self.s.workload
        try:
            pod = kube.get(PODS.path(ns, self.pod_name))
        except ApiError as exc:
            if exc.not_found:
                return False, workload, None
            if exc.retryable or exc.status == 401:
                raise
            # e.g. 403 (RBAC without pods/get): go on with --workload and $NODE_NAME
            log.warning("cannot read pod %s: %s", self.pod_name, exc)
            return bool(os.environ.get("POD_NAME")), workload, None
        node = (pod.get("spec") or {}).get("nodeName")
        return True, workload or workload_from_pod(pod), node

    # --- following the Backup (a thread) ---

    def _follow(self) -> None:
        path = BACKUPS.path(self.namespace)
        selector = {"fieldSelector": f"metadata.name={self.s.backup}"}
        failures = 0
        while not self._stop.is_set():
            try:
                listed = self.kube.get(path, **selector)
                items = [i for i in listed.get("items") or [] if self._is_ours(i)]
                self.set_backup(items[0] if items else None)
                rv = listed["metadata"]["resourceVersion"]
                events = self.kube.watch(path, rv, None, int(self.s.resync), params=selector)
                for event in events:
                    failures = 0
                    kind, obj = event.get("type"), event.get("object") or {}
                    if kind == "ERROR":
                        log.debug("watch ended: %s", obj.get("message"))
                        break
                    if kind == "BOOKMARK" or not self._is_ours(obj):
                        continue
                    self.set_backup(None if kind == "DELETED" else obj)
                    if self._stop.is_set():
                        return
            except Exception as exc:
                failures += 1
                delay = backoff(failures)
                log.warning(
                    "following %s %s failed (%s); again in %.0fs",
                    PLURAL,
                    self.s.backup,
                    one_line(exc),
                    delay,
                )
                self._reconnect_on_401(exc)
                self._stop.wait(delay)

    def _is_ours(self, obj: dict) -> bool:
        return (obj.get("metadata") or {}).get("name") == self.s.backup

    # --- scheduling (the main thread) ---

    def _loop(self) -> None:
        while not self._stop.is_set():
            if self.metrics:
                self.metrics.beat()
            now = datetime.now(UTC)
            timeout = 1.0
            if self.next_fire is not None:
                timeout = max(0.0, min(timeout, (self.next_fire - now).total_seconds()))
            with self._cond:
                if not self._changed and timeout > 0:
                    self._cond.wait(timeout)
                changed, raw, seen = self._changed, self._raw, self._raw_seen
                self._changed = False
            if self._stop.is_set():
                break
            if changed and seen:
                self._apply(raw)
                if self.metrics:
                    self.metrics.status_seen((raw or {}).get("status"))
            if self._metrics_failed and time.monotonic() >= self._next_bind:
                self._bind_metrics()
            now = datetime.now(UTC)
            if self.next_fire is not None and now >= self.next_fire:
                fire_at = self.next_fire
                self.next_fire = self.backup.schedule.next_after(now)
                self._fire(fire_at)
            if self.metrics:
                self.metrics.schedule(self.backup and self.backup.schedule, self.next_fire)

    def _apply(self, raw: dict | None) -> None:
        old = self.backup
        if raw is None:
            self._problem(f"Backup {self.namespace}/{self.s.backup} not found: not scheduling")
            self.backup, self.next_fire = None, None
            return
        try:
            new = parse_backup(raw)
        except InvalidBackup as exc:
            self._problem(f"{exc}: not scheduling until it is fixed")
            self.backup, self.next_fire = None, None
            return
        publish_repository(os.environ, repository_of(new))
        if new.paused:
            self._problem(f"Backup {self.namespace}/{self.s.backup} is paused: not scheduling")
            self.backup, self.next_fire = new, None
            return
        self._last_problem = None
        self.backup = new
        if old is None or old.paused or old.schedule != new.schedule or self.next_fire is None:
            self.next_fire = new.schedule.next_after(datetime.now(UTC))
        if old != new:
            log.info(
                "following Backup %s/%s: schedule %r, repository %s, next run %s",
                self.namespace,
                new.name,
                new.schedule.text,
                _safe_url(repository_of(new)),
                self.next_fire.isoformat(timespec="seconds"),
            )

    def _problem(self, message: str) -> None:
        if message != self._last_problem:
            log.warning("%s", message)
            self._last_problem = message

    def _keep_lease(self) -> None:
        """Acquire/renew the Lease every third of its duration (its own thread: an API
        that hangs must not stall the schedule or /healthz)."""
        lease = self.lease or self.prune_lease
        while not self._stop.is_set():
            try:
                lease.tick()
            except Exception as exc:
                log.warning("Lease %s: %s", lease.name, one_line(exc))
                self._reconnect_on_401(exc)
            self._stop.wait(max(1.0, lease.duration / 3))

    def _fire(self, fire_at: datetime) -> None:
        backup = self.backup
        if backup is None or backup.paused:
            return
        if self._worker is not None and self._worker.is_alive():
            log.warning(
                "skipping the run due at %s: the previous run is still going",
                fire_at.isoformat(timespec="seconds"),
            )
            if self.metrics:
                self.metrics.skipped()
            return
        if self.lease is not None and not self.lease.holding:
            level = logging.DEBUG if self._was_follower else logging.INFO
            log.log(level, "not the holder of Lease %s: another replica backs up", self.lease.name)
            self._was_follower = True
            return
        self._was_follower = False
        self._worker = threading.Thread(target=self._run_once, args=(backup,), name="run")
        self._worker.start()

    def _run_once(self, backup) -> None:
        started = datetime.now(UTC)
        log.info("run of %s/%s started (host %s)", backup.namespace, backup.name, self.host)
        job = Job(
            backup,
            self.ctx,
            self.runner,
            stale_after=self.s.lock_stale_after,
            tidy_locks=not self._locks_tidied,
            designated=self.prune_lease is None or self.prune_lease.holding,
            workload=self.workload,
        )
        try:
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
            )
        except BackupGone as exc:
            event = None
            log.warning("%s: run not reported", exc)
        except Exception as exc:
            event = None
            log.error("could not report the run: %s", exc)
        level, hint = run_log_level(outcome, backup)
        log.log(
            level,
            "run of %s/%s %s in %.1fs%s: %s%s",
            backup.namespace,
            backup.name,
            "succeeded" if outcome.success else "FAILED",
            outcome.duration,
            f" (Event {event})" if event else "",
            outcome.message,
            hint,
        )

    def _shutdown(self) -> None:
        self._stop.set()
        if self.runner is not None:
            self.runner.stop()
        if self._worker is not None and self._worker.is_alive():
            log.info("waiting for the running backup to stop")
            self._worker.join(self.s.stop_timeout + 30)
        if self._lease_thread is not None:  # no renewal may follow the release
            self._lease_thread.join(self.s.lease_duration)
        for lease in (self.lease, self.prune_lease):
            if lease is not None:
                lease.release()
        if self._server is not None:
            self._server.shutdown()
        log.info("stopped")


def run_log_level(outcome: Outcome, backup) -> tuple[int, str]:
    """How loud a finished run is logged, and the next step for a failure: INFO for a
    success, WARNING for a failed run, ERROR when the repository cannot be used at all."""
    if outcome.success:
        return logging.INFO, ""
    secret = f"Secret {backup.namespace}/{backup.secret_name}"
    if outcome.failure is Failure.WRONG_PASSWORD:
        return logging.ERROR, f" (next: check the {secret}, key 'password')"
    if outcome.failure is Failure.NO_REPOSITORY:
        return logging.ERROR, " (next: check spec.destination and that the repository exists)"
    if outcome.reason == SECRET_MISSING:
        return logging.ERROR, f" (next: create the {secret} with key 'password', restart the pod)"
    if outcome.failure is Failure.LOCKED:
        return logging.WARNING, " (next: `restic list locks`; a stale lock is removed by restik)"
    return logging.WARNING, ""


def _safe_url(url: str) -> str:

    return redact_url(url)


def run(args: argparse.Namespace) -> int:
    """Run the sidecar until SIGTERM; the process exit code."""
    try:
        settings = settings_from_args(args)
    except ValueError as exc:
        print(f"restik watch: {exc}", file=sys.stderr)
        return 2
    configure_logging(settings.log_level, settings.log_format)
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
