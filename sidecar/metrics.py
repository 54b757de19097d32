"""Prometheus metrics of the sidecar; /metrics and /healthz are the controller's server."""

from __future__ import annotations

import threading
import time
from collections.abc import Mapping
from datetime import UTC, datetime
from http.server import ThreadingHTTPServer

from prometheus_client import REGISTRY, Counter, Gauge

from reconciler.api.times import parse_time
from reconciler.http import serve_http

LABELS = ("namespace", "backup")


class Metrics:
    def __init__(self, namespace: str, backup: str, registry=REGISTRY, clock=time.time):
        self.registry = registry
        self._clock = clock
        self.labels = {"namespace": namespace, "backup": backup}
        kw = {"labelnames": LABELS, "registry": registry}
        self.runs = Counter(
            "restik_backup_runs", "Backup runs by result", (*LABELS, "result"), registry=registry
        )
        self.last_success = Gauge(
            "restik_backup_last_success_timestamp_seconds", "End of the last successful run", **kw
        )
        self.last_duration = Gauge(
            "restik_backup_last_duration_seconds", "Duration of the last run", **kw
        )
        self.bytes_added = Gauge(
            "restik_backup_last_bytes_added", "Bytes added to the repository by the last run", **kw
        )
        self.last_run_success = Gauge(
            "restik_backup_last_run_success",
            "1 if the Backup's last run succeeded, 0 if it failed",
            **kw,
        )
        self.next_run = Gauge(
            "restik_backup_next_run_timestamp_seconds",
            "When the next run is scheduled (absent while paused or invalid)",
            **kw,
        )
        self.interval = Gauge(
            "restik_backup_schedule_interval_seconds",
            "The schedule interval that applies to the last success (or the start of "
            "scheduling): for @every and evenly spaced cron the interval; for uneven cron "
            "(weekdays only) half the time from that run's scheduled time to the second run "
            "after it. Absent while paused or invalid",
            **kw,
        )
        self.scheduled_since = Gauge(
            "restik_backup_scheduled_since_timestamp_seconds",
            "When this sidecar began scheduling the Backup (or resumed it after a pause): "
            "a success is due within two schedule periods of the later of this and the last "
            "success",
            **kw,
        )
        self.check = CheckMetrics(self.labels, registry, clock)
        self.heartbeat = time.monotonic()
        self._own_run_at = 0.0  # start of this process's last run (epoch seconds)
        self._success_at = 0.0
        self._since_at = 0.0
        self._scheduled: tuple | None = None
        self._schedule = None
        self._lock = threading.Lock()  # runs report from a worker thread

    def observe(
        self,
        success: bool,
        duration: float,
        bytes_added: int | None,
        started: datetime | None = None,
    ) -> None:
        self.runs.labels(**self.labels, result="success" if success else "failed").inc()
        self.last_duration.labels(**self.labels).set(duration)
        if bytes_added is not None:
            self.bytes_added.labels(**self.labels).set(bytes_added)
        with self._lock:
            self.last_run_success.labels(**self.labels).set(1 if success else 0)
            self._own_run_at = started.timestamp() if started else self._clock() - duration
            if success:
                self._success_at = self._clock()
                self.last_success.labels(**self.labels).set(self._success_at)
                self._export_interval()

    def status_seen(self, status: Mapping | None) -> None:
        """Take what the Backup's status says about runs, which outlives this process: the
        last success (so a restarted sidecar does not look as if it never succeeded) and,
        when the status is newer than this process's own last run (another replica holds
        the Lease, or this pod just started), the last run's result."""
        if not isinstance(status, Mapping):
            return
        success_at = _epoch(status.get("lastSuccessfulBackupTime"))
        run_at = _epoch(status.get("lastBackupTime"))
        with self._lock:
            self._take_status(success_at, run_at)
        self.check.status_seen(status)

    def _take_status(self, success_at: float | None, run_at: float | None) -> None:
        if success_at is not None and success_at > self._success_at:
            self._success_at = success_at
            self.last_success.labels(**self.labels).set(success_at)
            self._export_interval()
        if run_at is not None and run_at > self._own_run_at:
            ok = success_at is not None and success_at >= run_at
            self.last_run_success.labels(**self.labels).set(1 if ok else 0)

    def schedule(self, schedule, next_fire: datetime | None) -> None:
        """Export the next run, the start of scheduling and the interval; all go away while
        nothing is scheduled (paused, invalid or deleted Backup), so no alert compares
        against them."""
        key = (schedule, next_fire)
        if key == self._scheduled:
            return
        was_scheduled = self._scheduled is not None and self._scheduled[1] is not None
        self._scheduled = key
        with self._lock:
            if next_fire is None or schedule is None:
                self._schedule = None
                for gauge in (self.next_run, self.interval, self.scheduled_since):
                    try:
                        gauge.remove(self.labels["namespace"], self.labels["backup"])
                    except KeyError:
                        pass
                return
            if not was_scheduled:
                self._since_at = self._clock()
                self.scheduled_since.labels(**self.labels).set(self._since_at)
            self.next_run.labels(**self.labels).set(next_fire.timestamp())
            self._schedule = schedule
            self._export_interval()

    def _export_interval(self) -> None:
        if self._schedule is None:
            return
        base = datetime.fromtimestamp(max(self._success_at, self._since_at), UTC)
        seconds = self._schedule.interval_at(base).total_seconds()
        self.interval.labels(**self.labels).set(seconds)

    def skipped(self) -> None:
        self.runs.labels(**self.labels, result="skipped").inc()

    def beat(self) -> None:
        self.heartbeat = time.monotonic()

    def serve(self, address: str, port: int, stale_after: float) -> ThreadingHTTPServer:
        """/metrics, and /healthz: 200 while the main loop beats at least every stale_after."""
        return serve_http(
            address,
            port,
            self.registry,
            lambda: time.monotonic() - self.heartbeat < stale_after,
        )


class CheckMetrics:
    """The series of spec.check (`restic check` runs), named as the backup runs' are. Every
    sidecar of the Backup exports the schedule and what status.lastCheck says (the check's
    pod writes it), so that a failed or overdue check alerts whichever pod is scraped; only
    the pod that checks counts runs. All go away when the Backup has no spec.check."""

    def __init__(self, labels: dict, registry, clock):
        self.labels = labels  # the Metrics' own dict: the namespace is filled in later
        self._clock = clock
        kw = {"labelnames": LABELS, "registry": registry}
        self.runs = Counter(
            "restik_check_runs", "restic check runs by result", (*LABELS, "result"),
            registry=registry,
        )  # fmt: skip
        self.last_run_success = Gauge(
            "restik_check_last_run_success",
            "1 if the Backup's last restic check succeeded, 0 if it failed",
            **kw,
        )
        self.last_success = Gauge(
            "restik_check_last_success_timestamp_seconds",
            "Start of the last successful restic check",
            **kw,
        )
        self.last_duration = Gauge(
            "restik_check_last_duration_seconds", "Duration of the last restic check", **kw
        )
        self.interval = Gauge(
            "restik_check_schedule_interval_seconds",
            "The interval of spec.check.schedule that applies to the last successful check "
            "(as restik_backup_schedule_interval_seconds). Absent without spec.check",
            **kw,
        )
        self.scheduled_since = Gauge(
            "restik_check_scheduled_since_timestamp_seconds",
            "When this sidecar began scheduling checks: a successful check is due within two "
            "check periods of the later of this and the last successful check",
            **kw,
        )
        self._gauges = (self.last_run_success, self.last_success, self.last_duration,
                        self.interval, self.scheduled_since)  # fmt: skip
        self._schedule = None
        self._since_at = 0.0
        self._success_at = 0.0
        self._run_at = 0.0  # start of the newest check known (own run or status)
        self._lock = threading.Lock()

    def observe(self, success: bool, duration: float, started: datetime) -> None:
        self.runs.labels(**self.labels, result="success" if success else "failed").inc()
        with self._lock:
            if self._schedule is None:  # spec.check was removed while it ran
                return
            self.last_duration.labels(**self.labels).set(duration)
            self._take(started.timestamp(), success)

    def status_seen(self, status: Mapping) -> None:
        last = status.get("lastCheck")
        if not isinstance(last, Mapping):
            return
        run_at = _epoch(last.get("time"))
        if run_at is None:
            return
        with self._lock:
            if self._schedule is not None:
                success_at = _epoch(status.get("lastSuccessfulCheckTime"))
                if success_at is not None and success_at > self._success_at:
                    self._take(success_at, True)
                if run_at > self._run_at:
                    self._take(run_at, last.get("result") == "Success")

    def _take(self, run_at: float, success: bool) -> None:
        if run_at >= self._run_at:
            self._run_at = run_at
            self.last_run_success.labels(**self.labels).set(1 if success else 0)
        if success and run_at > self._success_at:
            self._success_at = run_at
            self.last_success.labels(**self.labels).set(run_at)
        self._export_interval()

    def schedule(self, schedule) -> None:
        """spec.check.schedule while checks are scheduled, else None (every series goes)."""
        with self._lock:
            if schedule == self._schedule:
                return
            was, self._schedule = self._schedule, schedule
            if schedule is None:
                for gauge in self._gauges:
                    try:
                        gauge.remove(self.labels["namespace"], self.labels["backup"])
                    except KeyError:
                        pass
                self._success_at = self._run_at = 0.0
                return
            if was is None:
                self._since_at = self._clock()
                self.scheduled_since.labels(**self.labels).set(self._since_at)
            self._export_interval()

    def _export_interval(self) -> None:
        if self._schedule is None:
            return
        base = datetime.fromtimestamp(max(self._success_at, self._since_at), UTC)
        self.interval.labels(**self.labels).set(self._schedule.interval_at(base).total_seconds())


def _epoch(value: object) -> float | None:
    """Seconds since the epoch of an RFC 3339 status time, or None."""
    when = parse_time(value)
    return when.timestamp() if when else None
