"""Leader election on a coordination.k8s.io/v1 Lease: only the holder acts."""

from __future__ import annotations

import hashlib
import logging
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime

from reconciler.api.times import parse_time
from reconciler.kube.client import ApiError, Kube
from reconciler.kube.resource import LEASES

log = logging.getLogger("restik.lease")

MAX_NAME = 253


def lease_name(backup: str, workload: str) -> str:
    """The Lease of a Backup's sidecars in one workload: the sidecar takes it, the controller
    names it in the sidecar's Role (the only Leases the sidecar may read and renew)."""
    name = f"restik-{backup}-{workload}".lower()
    if len(name) <= MAX_NAME:
        return name
    digest = hashlib.sha256(name.encode()).hexdigest()[:10]
    return name[: MAX_NAME - 11].rstrip("-.") + "-" + digest


def micro_time(t: datetime) -> str:
    return t.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def lease_record(lease: dict) -> tuple:
    """What changes whenever the holder renews: compared between reads, never with a clock."""
    meta = lease.get("metadata") or {}
    spec = lease.get("spec") or {}
    return (
        meta.get("resourceVersion"),
        spec.get("holderIdentity"),
        spec.get("renewTime"),
        spec.get("leaseDurationSeconds"),
    )


class LeaderElector:
    """Acquire, renew and release one Lease; ``on_change(bool)`` reports leadership changes.

    Expiry follows client-go's rule: the holder's renewTime is never compared with this
    machine's clock (clocks differ between nodes). A standby takes over when it has seen the
    same Lease record (resourceVersion, holder, renewTime) for leaseDurationSeconds of its own
    monotonic time. The holder counts itself leader only for ``renew_deadline`` after its last
    successful renewal (``is_leader()``), so it stops acting before a standby may start.
    """

    def __init__(
        self,
        kube: Kube,
        namespace: str,
        name: str,
        identity: str,
        *,
        duration: int = 15,
        retry_period: float = 2.0,
        on_change: Callable[[bool], None] | None = None,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        monotonic: Callable[[], float] = time.monotonic,
        renew_deadline: float | None = None,
    ):
        self.kube = kube
        self.namespace = namespace
        self.name = name
        self.identity = identity
        self.duration = duration
        self.retry_period = retry_period
        self.on_change = on_change
        self.clock = clock  # only for the timestamps written into the Lease
        self.monotonic = monotonic
        self.renew_deadline = renew_deadline if renew_deadline is not None else duration * 2 / 3
        self.leader = False
        self._observed: tuple | None = None  # the Lease record last read
        self._observed_at = 0.0  # monotonic time it was first seen
        self._renewed_at: float | None = None  # monotonic time of our last successful write

    @property
    def path(self) -> str:
        return LEASES.path(self.namespace, self.name)

    def acquire(self) -> str | None:
        """One attempt to take or renew the Lease: "acquired", "took over" or "renewed";
        None while another identity holds it. Other API errors are raised."""
        now = self.clock()
        started = self.monotonic()
        try:
            lease = self.kube.get_or_none(self.path)
            if lease is None:
                body = {
                    "apiVersion": LEASES.api_version,
                    "kind": "Lease",
                    "metadata": {"name": self.name, "namespace": self.namespace},
                    "spec": self._spec(now, now, 0),
                }
                self._wrote(self.kube.create(LEASES.path(self.namespace), body), started)
                return "acquired"
            record = lease_record(lease)
            if record != self._observed:
                self._observed, self._observed_at = record, started
            spec = lease.get("spec") or {}
            mine = spec.get("holderIdentity") == self.identity
            if not mine and not self._expired(spec, started):
                return None
            transitions = int(spec.get("leaseTransitions") or 0) + (0 if mine else 1)
            acquired = parse_time(spec.get("acquireTime")) if mine else now
            lease["spec"] = self._spec(acquired or now, now, transitions)
            # conditional on its resourceVersion: of two standbys, one wins
            self._wrote(self.kube.replace(self.path, lease), started)
            return "renewed" if mine else "took over"
        except ApiError as exc:
            if exc.conflict:
                return None  # someone else wrote first: try again next period
            raise

    def is_leader(self) -> bool:
        """Leader now: holding the Lease, renewed within renew_deadline (monotonic). A long
        cycle asks this between its steps and stops writing once it is False."""
        return (
            self.leader
            and self._renewed_at is not None
            and self.monotonic() - self._renewed_at < self.renew_deadline
        )

    def _expired(self, spec: dict, now: float) -> bool:
        if not spec.get("holderIdentity"):
            return True  # released
        duration = spec.get("leaseDurationSeconds") or self.duration
        return now - self._observed_at >= duration

    def _wrote(self, answer: dict, started: float) -> None:
        # Measured from before the request: the Lease is valid from when it was sent.
        self._renewed_at = started
        self._observed, self._observed_at = lease_record(answer), started

    def try_acquire(self) -> bool:
        """One attempt to take or renew the Lease; True while this identity holds it."""
        try:
            return self._set(self.acquire() is not None)
        except ApiError as exc:
            log.warning("lease %s/%s: %s", self.namespace, self.name, exc)
            # An unreachable API: step down rather than risk two active controllers.
            return self._set(False)

    def release(self) -> None:
        """Give the Lease up at shutdown so a standby takes over at once."""
        if not self.leader:
            return
        try:
            lease = self.kube.get_or_none(self.path)
            if lease and (lease.get("spec") or {}).get("holderIdentity") == self.identity:
                lease["spec"]["holderIdentity"] = None
                lease["spec"]["leaseDurationSeconds"] = 1
                lease["spec"]["renewTime"] = micro_time(self.clock())
                self.kube.replace(self.path, lease)
                log.info("released Lease %s/%s", self.namespace, self.name)
        except ApiError as exc:  # best effort: the Lease expires on its own
            log.warning("releasing lease %s/%s: %s", self.namespace, self.name, exc)
        self._set(False)

    def run(self, stop: threading.Event) -> None:
        while not stop.is_set():
            self.try_acquire()
            stop.wait(self.retry_period)

    def _spec(self, acquired: datetime, renewed: datetime, transitions: int) -> dict:
        return {
            "holderIdentity": self.identity,
            "leaseDurationSeconds": self.duration,
            "acquireTime": micro_time(acquired),
            "renewTime": micro_time(renewed),
            "leaseTransitions": transitions,
        }

    def _set(self, leader: bool) -> bool:
        if not leader:
            self._renewed_at = None
        if leader != self.leader:
            self.leader = leader
            if self.on_change:
                self.on_change(leader)
        return leader
