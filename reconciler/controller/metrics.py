"""Prometheus metrics and the /healthz endpoint of `restik run`."""

from __future__ import annotations

import time
from collections.abc import Callable
from http.server import ThreadingHTTPServer

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from reconciler.api.restore import PHASES
from reconciler.http import serve_http


class ControllerMetrics:
    def __init__(self, interval: float | None = None, shard: tuple[int, int] = (0, 1)) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.cycle_seconds = Histogram(
            "restik_cycle_duration_seconds",
            "Duration of one reconcile cycle",
            buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60),
            registry=r,
        )
        self.patches = Counter(
            "restik_patches_total", "Workload patches applied", ["action"], registry=r
        )
        self.restarts = Counter("restik_restarts_total", "Stale pods deleted", registry=r)
        self.writes = Counter(
            "restik_writes_total",
            "Successful API writes of the controller by kind "
            "(workload, eviction, rolebinding, status, event, job)",
            ["kind"],
            registry=r,
        )
        self.errors = Counter("restik_errors_total", "Failed API calls and cycles", registry=r)
        self.conflicts = Counter("restik_conflicts_total", "Writes that hit a 409", registry=r)
        self.backups = Gauge("restik_backups", "Backups by readiness", ["ready"], registry=r)
        self.workloads = Gauge("restik_workloads", "Labeled workloads", registry=r)
        self.leader = Gauge("restik_leader", "1 while this replica holds the Lease", registry=r)
        self.backup_ready = Gauge(
            "restik_backup_ready",
            "1 if the Backup's Ready condition is True, 0 if it is not",
            ["namespace", "backup"],
            registry=r,
        )
        self.last_cycle = Gauge(
            "restik_last_cycle_timestamp_seconds",
            "End of the last completed reconcile cycle (the process start before the first)",
            registry=r,
        )
        self.last_cycle.set(time.time())
        self.interval = Gauge(
            "restik_cycle_interval_seconds",
            "The --interval between full reconcile cycles",
            registry=r,
        )
        if interval is not None:
            self.interval.set(interval)
        self.shard = Gauge(
            "restik_shard_info",
            "This controller's shard (--shard-index) of --shards; 1 while running",
            ["shard", "shards"],
            registry=r,
        )
        self.shard.labels(str(shard[0]), str(shard[1])).set(1)
        self._ready_keys: set[tuple[str, str]] = set()
        self.restore_phase = Gauge(
            "restik_restore_phase",
            "1 for a Restore's current phase (Pending, Running, Succeeded, Failed, Invalid)",
            ["namespace", "restore", "phase"],
            registry=r,
        )
        self._restore_series: set[tuple[str, str, str]] = set()

    def set_leader(self, leader: bool) -> None:
        self.leader.set(1 if leader else 0)
        if not leader:  # the new leader reports readiness; ours would go stale
            for key in self._ready_keys:
                self.backup_ready.remove(*key)
            self._ready_keys = set()

    def observe(self, stats) -> None:
        self.last_cycle.set(time.time())
        self.leader.set(1)  # only the leader (or the only replica) completes cycles
        self.cycle_seconds.observe(stats.seconds)
        self.errors.inc(stats.errors)
        self.conflicts.inc(stats.conflicts)
        self.backups.labels("true").set(stats.ready)
        self.backups.labels("false").set(stats.not_ready)
        self.workloads.set(stats.workloads)
        # A dry run writes no status: its readiness is unknown, not "no Backups".
        if stats.readiness or not stats.backups:
            self._set_readiness(stats.readiness)

    def _set_readiness(self, readiness: dict) -> None:
        for key, status in readiness.items():
            self.backup_ready.labels(*key).set(1 if status == "True" else 0)
        for key in self._ready_keys - readiness.keys():  # deleted Backups
            self.backup_ready.remove(*key)
        self._ready_keys = set(readiness)

    def set_restore_phases(self, phases: dict) -> None:
        """(namespace, restore) -> phase; series of deleted Restores go."""
        series = set()
        for (namespace, restore), current in phases.items():
            for phase in PHASES:
                self.restore_phase.labels(namespace, restore, phase).set(
                    1 if phase == current else 0
                )
                series.add((namespace, restore, phase))
        for key in self._restore_series - series:
            self.restore_phase.remove(*key)
        self._restore_series = series

    def serve(self, address: str, port: int, healthy: Callable[[], bool]) -> ThreadingHTTPServer:
        return serve_http(address, port, self.registry, healthy)
