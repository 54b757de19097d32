"""The long-running `restik run`: leader election, watches that wake the loop, signals."""

from __future__ import annotations

import argparse
import logging
import signal
import threading
import time

from reconciler.api.constants import CONFIG_LABEL, EXIT_CHANGES, EXIT_ERROR, EXIT_OK
from reconciler.controller.cycle import Controller
from reconciler.controller.metrics import ControllerMetrics
from reconciler.controller.observe import slim
from reconciler.controller.options import Settings
from reconciler.controller.plan import BackupIndex
from reconciler.controller.podtemplate import WorkloadRef
from reconciler.controller.relevance import IRRELEVANT, RELEVANT, Relevance, fingerprint
from reconciler.controller.shard import Shard, ShardKube
from reconciler.controller.single import plans_change, reconcile_workload
from reconciler.controller.stats import CycleStats
from reconciler.controller.watches import WATCH_TIMEOUT, WATCH_TIMEOUT_LEADER_ELECT, Watch
from reconciler.kube.client import ApiError, Kube
from reconciler.kube.lease import LeaderElector
from reconciler.logs import setup_logging

log = logging.getLogger("restik.controller")


class Loop:
    """The long-running process: leader election, watches that wake the loop, signals."""

    def __init__(self, controller: Controller, settings: Settings):
        self.controller = controller
        self.settings = settings
        self.stop = threading.Event()
        self.wake = threading.Event()
        self.last_cycle_end = time.monotonic()  # of the last successful cycle (health)
        self.last_attempt_end = 0.0  # of the last cycle, failed or not (rate limit)
        self.leader = not settings.leader_elect
        self.threads: list[threading.Thread] = []
        # What the watches hand to the loop (under self.lock): a full cycle, or single
        # workloads to reconcile.
        self.lock = threading.Lock()
        self.full_needed = True
        # relevant: GET + plan + PATCH (the value: the event's resourceVersion)
        self.pending: dict[WorkloadRef, str | None] = {}
        self.unknown: dict[WorkloadRef, dict] = {}  # first seen: plan the event's copy first
        self.relevance = Relevance(RELEVANCE_LIMIT)
        self.index: BackupIndex | None = None  # the Backups of the last full cycle
        self.next_full = 0.0

    def healthy(self) -> bool:
        limit = max(3 * self.settings.interval, 60.0)
        return not self.leader or time.monotonic() - self.last_cycle_end < limit

    def request_stop(self, *_args) -> None:
        log.info("stopping after the current cycle")
        self.stop.set()
        self.wake.set()

    def run(self) -> int:
        if self.settings.leader_elect:
            self.elector = LeaderElector(
                self.controller.kube,
                self.settings.lease_namespace,
                self.settings.lease_name,
                self.settings.identity,
                on_change=self._leadership,
            )
            self.controller.leading = self.elector.is_leader
            self._start(self.elector.run, self.stop)
        watches_started = False
        while not self.stop.is_set():
            self.wake.clear()  # before taking the work: a later event wakes the next wait
            if self._leading():
                full, todo = self._take_work()
                if full:
                    stats = self._one_cycle()
                    self.last_attempt_end = time.monotonic()
                    if stats is not None:
                        self.index = self.controller.backup_index()
                    # While restik restarts pods itself, look again soon: each step waits
                    # for the previous pod's replacement to become Ready.
                    wait = self.settings.interval
                    if self.controller.pending_restarts or self.controller.restore_restarts:
                        wait = min(wait, RESTART_POLL)
                    self.next_full = self.last_attempt_end + wait
                    if not watches_started and self.controller.last_resource_versions:
                        self._start_watches()
                        watches_started = True
                else:
                    self._reconcile_pending(todo)
            if self._leading():
                wait = max(0.0, self.next_full - time.monotonic())
            else:
                wait = self.settings.interval  # until leadership changes (it wakes us)
            woke = self.wake.wait(wait)
            if woke and not self.stop.is_set() and (self.full_needed or self.index is None):
                # Let a burst of events settle into one cycle, and never run full cycles
                # closer than MIN_CYCLE_GAP: a storm of Backup events (or of 410s asking for
                # a relist) costs at most one cycle of LISTs per gap.
                gap = MIN_CYCLE_GAP - (time.monotonic() - self.last_attempt_end)
                self.stop.wait(max(0.1, gap))
        if self.settings.leader_elect:
            self.elector.release()
        return EXIT_OK

    def _take_work(self) -> tuple[bool, dict]:
        """(full cycle?, workloads to reconcile one by one: ref -> (the relevant event's
        resourceVersion, or the first-seen event's copy to plan first)). A full cycle when
        asked for, when due (--interval), before the Backups are known, or when more
        workloads wait for a GET than a cycle costs."""
        with self.lock:
            full = (
                self.full_needed
                or self.index is None
                or time.monotonic() >= self.next_full
                or len(self.pending) > MAX_PENDING
            )
            todo = {ref: (None, obj) for ref, obj in self.unknown.items()}
            todo.update((ref, (rv, None)) for ref, rv in self.pending.items())
            self.pending, self.unknown = {}, {}
            if full:
                self.full_needed = False
                return True, {}
            return False, todo

    def _reconcile_pending(self, todo: dict) -> None:
        index, c = self.index, self.controller
        for ref, (rv, seen) in todo.items():
            if self.stop.is_set() or not self._leading():
                return
            if rv is not None and rv in c.own_writes:
                continue  # restik's own write, seen by the watch before its answer came
            # Never seen before: the event's own copy, planned in memory, decides whether
            # the workload needs anything at all (a status update of an in-sync one: no).
            if seen is not None and not plans_change(index, seen, c.renderer):
                continue
            try:
                stats = reconcile_workload(c, index, ref)
            except ApiError as exc:
                log.error("reconciling %s/%s failed: %s", ref.namespace, ref, exc)
                with self.lock:
                    self.relevance.forget(ref)  # its next event is looked at afresh
                if c.metrics:
                    c.metrics.errors.inc()
                continue
            if stats.patched or stats.errors or stats.conflicts:
                log.info(
                    "event: %s %s/%s patched=%d conflicts=%d errors=%d in %.2fs",
                    ref.kind,
                    ref.namespace,
                    ref.name,
                    stats.patched,
                    stats.conflicts,
                    stats.errors,
                    stats.seconds,
                )
            if stats.conflicts or stats.errors:
                with self.lock:
                    self.relevance.forget(ref)
            if c.metrics:
                c.metrics.errors.inc(stats.errors)
                c.metrics.conflicts.inc(stats.conflicts)

    def _event(self, kind: str | None, event_type: str, obj: dict) -> None:
        """Hand one watch event (not restik's own write) to the loop: a Backup event or a
        deletion asks for a full cycle; a workload event that cannot change the plan is
        dropped; any other reconciles that one workload."""
        meta = obj.get("metadata") or {}
        ref = WorkloadRef(kind, meta.get("namespace") or "default", meta.get("name"))
        if kind is None or event_type not in ("ADDED", "MODIFIED"):
            if kind is not None:
                with self.lock:
                    self.relevance.forget(ref)  # a new object of that name starts afresh
            self._request_full()
            return
        with self.lock:
            verdict = self.relevance.classify(ref, obj)
            if verdict == IRRELEVANT:
                return
            if verdict == RELEVANT or ref in self.pending:
                # GET it, whatever the event's copy says
                self.pending[ref] = meta.get("resourceVersion")
                self.unknown.pop(ref, None)
            elif ref in self.unknown or len(self.unknown) < MAX_PENDING_UNKNOWN:
                self.unknown[ref] = slim(obj)  # the newest copy is the one to plan
            else:
                # A storm of first sights: left to the next full cycle, which sees them all;
                # forgotten, so that a later event of the same version is looked at again.
                self.relevance.forget(ref)
                return
        self.wake.set()

    def _request_full(self) -> None:
        with self.lock:
            self.full_needed = True
        self.wake.set()

    def _leadership(self, leader: bool) -> None:
        log.info("leadership %s", "acquired" if leader else "lost")
        if leader and not self.leader:
            # Another leader may have injected sidecars meanwhile, and restik trusts only its
            # own record of them: look for orphans as after a start (the unselected LIST).
            self.controller.first_cycle = True
        self.leader = leader
        with self.lock:
            self.full_needed = True  # what happened meanwhile is not known: relist
            self.pending, self.unknown = {}, {}
        if self.controller.metrics:
            self.controller.metrics.set_leader(leader)
        self.wake.set()

    def _one_cycle(self) -> CycleStats | None:
        metrics = self.controller.metrics
        try:
            stats = self.controller.cycle()
        except (ApiError, TimeoutError) as exc:
            log.error("cycle failed: %s", exc)
            if metrics:
                metrics.errors.inc()
            return None
        self.last_cycle_end = time.monotonic()
        log.info("%s%s", self._shard_prefix(), stats.summary(), extra={"fields": stats.__dict__})
        if metrics:
            metrics.observe(stats)
        return stats

    def _shard_prefix(self) -> str:
        s = self.settings
        return f"shard {s.shard_index}/{s.shards}: " if s.shards > 1 else ""

    def _start(self, target, *args) -> None:
        t = threading.Thread(target=target, args=args, daemon=True)
        t.start()
        self.threads.append(t)

    def _start_watches(self) -> None:
        c = self.controller
        paths = [(c.backups_path, None, None)] if c.crd_ready else []
        paths += [(path, CONFIG_LABEL, kind) for kind, _, path in c.workload_paths()]
        timeout = WATCH_TIMEOUT_LEADER_ELECT if self.settings.leader_elect else WATCH_TIMEOUT
        for path, selector, kind in paths:
            watch = Watch(
                c.kube,
                path,
                selector,
                kind,
                stop=self.stop,
                listed=lambda p: self.controller.last_resource_versions.get(p, ""),
                own_writes=c.own_writes,
                on_event=self._event,
                on_own=self._remember,
                on_gone=self._request_full,
                leading=self._leading,
                timeout=timeout,
            )
            self._start(watch.follow)

    def _remember(self, kind: str, obj: dict) -> None:
        meta = obj.get("metadata") or {}
        ref = WorkloadRef(kind, meta.get("namespace") or "default", meta.get("name"))
        fp = fingerprint(obj)
        with self.lock:
            self.relevance.remember(ref, fp)

    def _leading(self) -> bool:
        return self.leader and self.controller.leading()


MIN_CYCLE_GAP = 1.0
# More single workloads waiting than this: one full cycle is cheaper than their GETs.
MAX_PENDING = 100
# Workloads never seen before, held with their event's copy until the loop plans them; a
# storm beyond this is left to the next full cycle (it sees them all).
MAX_PENDING_UNKNOWN = 1000
RELEVANCE_LIMIT = 20_000  # per-workload fingerprints kept (least recently seen dropped)
RESTART_POLL = 5.0


def main(args: argparse.Namespace) -> int:
    """Entry point of `restik run`."""

    setup_logging(args.log_level, args.log_format)
    try:
        settings = Settings.from_args(args)
    except ValueError as exc:
        log.error("%s", exc)
        return EXIT_ERROR
    try:
        kube = Kube.connect(settings.kubeconfig)
    except Exception as exc:  # pykube raises several types for a bad kubeconfig
        log.error("cannot load the Kubernetes configuration: %s", exc)
        return EXIT_ERROR
    if settings.shards > 1:
        kube = ShardKube(
            kube,
            Shard(settings.shards, settings.shard_index),
            lists=settings.shard_lists,
        )
        log.info(
            "shard %d of %d: namespaces whose SHA-256 mod %d is %d, --shard-lists %s; Lease %s",
            settings.shard_index,
            settings.shards,
            settings.shards,
            settings.shard_index,
            settings.shard_lists,
            settings.lease_name,
        )
    metrics = None
    if settings.metrics_port and not settings.once:
        metrics = ControllerMetrics(
            interval=settings.interval, shard=(settings.shard_index, settings.shards)
        )
    controller = Controller(kube, settings, metrics=metrics)
    if settings.once:
        try:
            stats = controller.cycle()
        except (ApiError, TimeoutError) as exc:
            log.error("cycle failed: %s", exc)
            return EXIT_ERROR
        prefix = f"shard {settings.shard_index}/{settings.shards}: " if settings.shards > 1 else ""
        log.info("%s%s", prefix, stats.summary())
        if stats.errors:
            return EXIT_ERROR
        if settings.dry_run:
            return EXIT_CHANGES if stats.planned else EXIT_OK
        return EXIT_OK
    runner = Loop(controller, settings)
    signal.signal(signal.SIGTERM, runner.request_stop)
    signal.signal(signal.SIGINT, runner.request_stop)
    server = None
    if metrics is not None:
        server = metrics.serve(settings.metrics_address, settings.metrics_port, runner.healthy)
    try:
        return runner.run()
    finally:
        if server is not None:
            server.shutdown()
            server.server_close()
