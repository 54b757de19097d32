"""Prometheus metrics of the sidecar; /metrics and /healthz are the controller's server."""

from __future__ import annotations

import time
from http.server import ThreadingHTTPServer

from prometheus_client import REGISTRY, Counter, Gauge

from reconciler.metrics import serve_http

LABELS = ("namespace", "backup")


class Metrics:
    def __init__(self, namespace: str, backup: str, registry=REGISTRY):
        self.registry = registry
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
        self.heartbeat = time.monotonic()

    def observe(self, success: bool, duration: float, bytes_added: int | None) -> None:
        self.runs.labels(**self.labels, result="success" if success else "failed").inc()
        self.last_duration.labels(**self.labels).set(duration)
        if bytes_added is not None:
            self.bytes_added.labels(**self.labels).set(bytes_added)
        if success:
            self.last_success.labels(**self.labels).set(time.time())

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
