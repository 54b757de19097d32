"""Leader election on a coordination.k8s.io/v1 Lease: only the holder acts."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

from reconciler.kube import ApiError, Kube, api_path

log = logging.getLogger("restik.lease")
LEASE_API = "coordination.k8s.io/v1"


def micro_time(t: datetime) -> str:
    return t.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def parse_time(text: object) -> datetime | None:
    if not isinstance(text, str):
        return None
    for fmt in ("%Y-%m-%dT%H:%M:%S.%fZ", "%Y-%m-%dT%H:%M:%SZ"):
        try:
            return datetime.strptime(text, fmt).replace(tzinfo=UTC)
        except ValueError:
            continue
    return None


def lease_expired(spec: dict, now: datetime) -> bool:
    renewed = parse_time(spec.get("renewTime")) or parse_time(spec.get("acquireTime"))
    duration = spec.get("leaseDurationSeconds") or 0
    if not spec.get("holderIdentity") or renewed is None:
        return True
    return renewed + timedelta(seconds=duration) < now


class LeaderElector:
    """Acquire, renew and release one Lease; ``on_change(bool)`` reports leadership changes."""

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
    ):
        self.kube = kube
        self.namespace = namespace
        self.name = name
        self.identity = identity
        self.duration = duration
        self.retry_period = retry_period
        self.on_change = on_change
        self.clock = clock
        self.leader = False

    @property
    def path(self) -> str:
        return api_path(LEASE_API, "leases", self.namespace, self.name)

    def acquire(self) -> str | None:
        """One attempt to take or renew the Lease: "acquired", "took over" or "renewed";
        None while another identity holds it. Other API errors are raised."""
        now = self.clock()
        try:
            lease = self.kube.get_or_none(self.path)
            if lease is None:
                body = {
                    "apiVersion": LEASE_API,
                    "kind": "Lease",
                    "metadata": {"name": self.name, "namespace": self.namespace},
                    "spec": self._spec(now, now, 0),
                }
                self.kube.create(api_path(LEASE_API, "leases", self.namespace), body)
                return "acquired"
            spec = lease.get("spec") or {}
            mine = spec.get("holderIdentity") == self.identity
            if not mine and not lease_expired(spec, now):
                return None
            transitions = int(spec.get("leaseTransitions") or 0) + (0 if mine else 1)
            acquired = parse_time(spec.get("acquireTime")) if mine else now
            lease["spec"] = self._spec(acquired or now, now, transitions)
            self.kube.replace(self.path, lease)  # conditional on its resourceVersion
            return "renewed" if mine else "took over"
        except ApiError as exc:
            if exc.conflict:
                return None  # someone else wrote first: try again next period
            raise

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
        if leader != self.leader:
            self.leader = leader
            if self.on_change:
                self.on_change(leader)
        return leader
