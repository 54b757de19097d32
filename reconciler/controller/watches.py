"""One watch of `restik run`: follow a collection from the last LIST's resourceVersion, hand
every change not made by restik to the loop, resume after errors with a backoff."""

from __future__ import annotations

import logging
import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from reconciler.kube.client import ApiError

log = logging.getLogger("restik.controller")

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


@dataclass
class Watch:
    """The watch of one collection (``kind`` None: the Backups), run by ``follow`` in its own
    thread until ``stop`` is set.

    - ``listed(path)``: the resourceVersion of the last LIST of ``path`` ("" if none);
    - ``own_writes``: resourceVersions restik wrote itself (its own writes are not events);
    - ``on_event(kind, type, obj)``: a change made by someone else;
    - ``on_own(kind, obj)``: restik's own write of a workload, seen on the watch;
    - ``on_gone()``: the resourceVersion left the server's watch cache: relist;
    - ``leading()``: whether this replica should watch at all."""

    kube: object
    path: str
    selector: str | None
    kind: str | None
    stop: threading.Event
    listed: Callable[[str], str]
    own_writes: object
    on_event: Callable[[str | None, str, dict], None]
    on_own: Callable[[str, dict], None]
    on_gone: Callable[[], None]
    leading: Callable[[], bool]
    timeout: int = WATCH_TIMEOUT

    def follow(self) -> None:
        """Hand every change not made by this controller to ``on_event``; resume after errors.

        A failed watch (an ERROR event, an error answer, a dropped connection) is retried
        after an exponential, capped, jittered backoff, never at once. A 410 Gone means the
        resourceVersion left the server's watch cache: the loop is woken to relist, and the
        watch resumes from that LIST's resourceVersion (or from "" if none is newer). While
        this replica is not the leader it does not watch at all.
        """
        rv = self.listed(self.path)
        failures = 0
        while not self.stop.is_set():
            if not self.leading():
                self.stop.wait(1.0)
                rv = None  # resume from the next cycle's LIST once leader again
                continue
            if rv is None:
                rv = self.listed(self.path)
            rv, failed, gone, events = self._stream(rv)
            if events:
                failures = 0
            if not failed:
                continue
            failures += 1
            stale = rv
            if gone:
                self.on_gone()  # relist: events may have been missed
            self.stop.wait(watch_backoff(failures))
            if gone:
                listed = self.listed(self.path)
                rv = listed if listed != stale else ""

    def _stream(self, rv: str) -> tuple[str, bool, bool, int]:
        """One watch request from ``rv``: (the last resourceVersion seen, failed?, 410?, events
        seen)."""
        started = time.monotonic()
        events = 0
        try:
            for event in self.kube.watch(self.path, rv, self.selector, timeout_s=self.timeout):
                if self.stop.is_set() or not self.leading():
                    return rv, False, False, events
                obj = event.get("object") or {}
                if event.get("type") == "ERROR":
                    log.info("watch %s: %s", self.path, obj.get("message") or obj.get("reason"))
                    return rv, True, obj.get("code") == 410, events
                events += 1
                new_rv = (obj.get("metadata") or {}).get("resourceVersion")
                if new_rv:
                    rv = new_rv
                if event.get("type") == "BOOKMARK":
                    continue
                if new_rv in self.own_writes:
                    if self.kind is not None and event.get("type") != "DELETED":
                        self.on_own(self.kind, obj)  # what restik wrote is what it saw
                    continue
                self.on_event(self.kind, event.get("type"), obj)
        except ApiError as exc:
            log.debug("watch %s: %s", self.path, exc)
            return rv, True, exc.status == 410, events
        # the server ended the watch: normal at its timeout, a fault when at once
        return rv, events == 0 and time.monotonic() - started < 1.0, False, events
