"""/metrics (Prometheus) and /healthz for the sidecar, on a small background HTTP server."""

from __future__ import annotations

import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, Counter, Gauge, generate_latest

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


def serve(metrics: Metrics, address: str, port: int, stale_after: float) -> ThreadingHTTPServer:
    """Serve /metrics and /healthz (200 while the main loop beats) on a daemon thread."""

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            path = self.path.split("?", 1)[0]
            if path == "/metrics":
                body, ctype, code = generate_latest(metrics.registry), CONTENT_TYPE_LATEST, 200
            elif path in ("/healthz", "/readyz", "/livez"):
                alive = time.monotonic() - metrics.heartbeat < stale_after
                body, ctype = (b"ok\n" if alive else b"main loop stalled\n"), "text/plain"
                code = 200 if alive else 503
            else:
                body, ctype, code = b"not found\n", "text/plain", 404
            self.send_response(code)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args) -> None:
            pass

    server = ThreadingHTTPServer((address, port), Handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, name="metrics", daemon=True).start()
    return server
