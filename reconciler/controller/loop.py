"""The long-running `restik run`: leader election, watches that wake the loop, signals."""

from __future__ import annotations

import argparse
import logging
import random
import signal
import threading
import time

from reconciler.api.constants import CONFIG_LABEL, EXIT_CHANGES, EXIT_ERROR, EXIT_OK
from reconciler.controller.cycle import Controller
from reconciler.controller.metrics import ControllerMetrics
from reconciler.controller.options import Settings
from reconciler.controller.stats import CycleStats
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
                "restik-controller",
                self.settings.identity,
                on_change=self._leadership,
            )
            self.controller.leading = self.elector.is_leader
            self._start(self.elector.run, self.stop)
        watches_started = False
        while not self.stop.is_set():
            if self.leader and self.controller.leading():
                self._one_cycle()
                self.last_attempt_end = time.monotonic()
                if not watches_started and self.controller.last_resource_versions:
                    self._start_watches()
                    watches_started = True
            # While restik restarts pods itself, look again soon: each step waits for the
            # previous pod's replacement to become Ready.
            wait = self.settings.interval
            if self.controller.pending_restarts:
                wait = min(wait, RESTART_POLL)
            woke = self.wake.wait(wait)
            if woke and not self.stop.is_set():
                # Let a burst of events settle into one cycle, and never run cycles closer
                # than MIN_CYCLE_GAP: a storm of events (or of 410s asking for a relist)
                # costs at most one cycle of LISTs per gap.
                gap = MIN_CYCLE_GAP - (time.monotonic() - self.last_attempt_end)
                self.stop.wait(max(0.1, gap))
            self.wake.clear()
        if self.settings.leader_elect:
            self.elector.release()
        return EXIT_OK

    def _leadership(self, leader: bool) -> None:
        log.info("leadership %s", "acquired" if leader else "lost")
        if leader and not self.leader:
            # Another leader may have injected sidecars meanwhile, and restik trusts only its
            # own record of them: look for orphans as after a start (the unselected LIST).
            self.controller.first_cycle = True
        self.leader = leader
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
        log.info("%s", stats.summary(), extra={"fields": stats.__dict__})
        if metrics:
            metrics.observe(stats)
        return stats

    def _start(self, target, *args) -> None:
        t = threading.Thread(target=target, args=args, daemon=True)
        t.start()
        self.threads.append(t)

    def _start_watches(self) -> None:
        c = self.controller
        paths = [(c.backups_path, None)] if c.crd_ready else []
        paths += [(path, CONFIG_LABEL) for _, _, path in c.workload_paths()]
        for path, selector in paths:
            self._start(self._watch, path, selector)

    def _watch(self, path: str, selector: str | None) -> None:
        """Wake the loop on any change not made by this controller; resume after errors.

        A failed watch (an ERROR event, an error answer, a dropped connection) is retried
        after an exponential, capped, jittered backoff, never at once. A 410 Gone means the
        resourceVersion left the server's watch cache: the loop is woken to relist, and the
        watch resumes from that LIST's resourceVersion (or from "" if none is newer). While
        this replica is not the leader it does not watch at all.
        """
        kube = self.controller.kube
        rv = self.controller.last_resource_versions.get(path, "")
        failures = 0
        timeout = WATCH_TIMEOUT_LEADER_ELECT if self.settings.leader_elect else WATCH_TIMEOUT
        while not self.stop.is_set():
            if not self._leading():
                self.stop.wait(1.0)
                rv = None  # resume from the next cycle's LIST once leader again
                continue
            if rv is None:
                rv = self.controller.last_resource_versions.get(path, "")
            gone = failed = False
            started = time.monotonic()
            events = 0
            try:
                for event in kube.watch(path, rv, selector, timeout_s=timeout):
                    if self.stop.is_set() or not self._leading():
                        break
                    obj = event.get("object") or {}
                    if event.get("type") == "ERROR":
                        failed = True
                        gone = obj.get("code") == 410
                        log.info("watch %s: %s", path, obj.get("message") or obj.get("reason"))
                        break
                    events += 1
                    failures = 0
                    new_rv = (obj.get("metadata") or {}).get("resourceVersion")
                    if new_rv:
                        rv = new_rv
                    if event.get("type") == "BOOKMARK" or new_rv in self.controller.own_writes:
                        continue
                    self.wake.set()
                else:
                    # the server ended the watch: normal at its timeout, a fault when at once
                    failed = events == 0 and time.monotonic() - started < 1.0
            except ApiError as exc:
                log.debug("watch %s: %s", path, exc)
                failed = True
                gone = exc.status == 410
            if not failed:
                continue
            failures += 1
            stale = rv
            if gone:
                self.wake.set()  # relist: events may have been missed
            self.stop.wait(watch_backoff(failures))
            if gone:
                listed = self.controller.last_resource_versions.get(path, "")
                rv = listed if listed != stale else ""

    def _leading(self) -> bool:
        return self.leader and self.controller.leading()


MIN_CYCLE_GAP = 1.0
RESTART_POLL = 5.0
WATCH_TIMEOUT = 300
# With leader election a watch is at most this long, so a replica that lost the Lease stops
# watching within it (a blocked read cannot be interrupted from another thread).
WATCH_TIMEOUT_LEADER_ELECT = 60
WATCH_BACKOFF_BASE = 0.5
WATCH_BACKOFF_CAP = 30.0


def watch_backoff(failures: int, rand=random.random) -> float:
    """Seconds before watching again after ``failures`` failures in a row: exponential from
    WATCH_BACKOFF_BASE, capped at WATCH_BACKOFF_CAP, with jitter (50-100 %) so that the
    watches of many replicas and kinds do not come back in step."""
    ceiling = min(WATCH_BACKOFF_CAP, WATCH_BACKOFF_BASE * 2 ** max(0, failures - 1))
    return ceiling * (0.5 + rand() / 2)


def main(args: argparse.Namespace) -> int:
    """Entry point of `restik run`."""

    setup_logging(args.log_level, args.log_format)
    settings = Settings.from_args(args)
    try:
        kube = Kube.connect(settings.kubeconfig)
    except Exception as exc:  # pykube raises several types for a bad kubeconfig
        log.error("cannot load the Kubernetes configuration: %s", exc)
        return EXIT_ERROR
    metrics = None
    if settings.metrics_port and not settings.once:
        metrics = ControllerMetrics(interval=settings.interval)
    controller = Controller(kube, settings, metrics=metrics)
    if settings.once:
        try:
            stats = controller.cycle()
        except (ApiError, TimeoutError) as exc:
            log.error("cycle failed: %s", exc)
            return EXIT_ERROR
        log.info("%s", stats.summary())
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
