"""One Lease per workload: of several replicas, only the holder backs up."""

from __future__ import annotations

import logging
import time

from reconciler.kube.client import ApiError, Kube
from reconciler.kube.lease import LeaderElector, lease_name
from reconciler.kube.resource import PODS
from sidecar.follow import workload_from_pod

__all__ = ["LeaseKeeper", "lease_name"]

log = logging.getLogger(__name__)


class LeaseKeeper(LeaderElector):
    """The controller's Lease protocol, with the holder's validity kept on the monotonic
    clock (safe against clock skew): a failed renewal keeps the Lease until it runs out.

    Anything bound to the sidecar's Role (the application's containers share its
    ServiceAccount) may write the Lease: ``suspect`` says why the current holder is not
    plausibly a sidecar of this workload (a duration beyond ours, a holder that is a pod of
    another workload, or no pod at all yet renews), and the sidecar reports it as a Failed
    run rather than waiting silently. A holder's duration never counts beyond ours."""

    def __init__(self, kube: Kube, namespace: str, name: str, identity: str, duration: float):
        super().__init__(kube, namespace, name, identity, duration=max(1, round(duration)))
        self._valid_until = 0.0
        self.suspect: str | None = None
        self._own_workload: tuple | None = None  # of our own pod, read once
        self._trusted: set[str] = set()  # holders seen to be pods of our workload
        self._absent: dict[str, tuple] = {}  # holder without a pod -> the record then

    def _expired(self, spec: dict, now: float) -> bool:
        if not spec.get("holderIdentity"):
            return True  # released
        duration = spec.get("leaseDurationSeconds")
        if not isinstance(duration, int) or duration <= 0:
            duration = self.duration
        return now - self._observed_at >= min(duration, self.duration)

    def check_holder(self) -> str | None:
        """Why the Lease's holder (another identity) is implausible, or None."""
        if self._observed is None:
            return None
        _, holder, _, duration = self._observed
        where = f"Lease {self.namespace}/{self.name}"
        fix = (
            f"no restik sidecar wrote it; delete the Lease and check who may write Leases "
            f"in namespace {self.namespace}"
        )
        if isinstance(duration, int) and duration > self.duration:
            return (
                f"{where} is held by {holder!r} for {duration}s, longer than the "
                f"{self.duration}s restik's sidecars use: {fix}"
            )
        if not isinstance(holder, str) or not holder or holder in self._trusted:
            return None
        try:
            if self._own_workload is None:
                own = self.kube.get_or_none(PODS.path(self.namespace, self.identity))
                self._own_workload = (workload_from_pod(own) if own else None,)
            pod = self.kube.get_or_none(PODS.path(self.namespace, holder))
        except ApiError as exc:  # e.g. 403: no verdict, asked again at the next renewal
            log.debug("%s: cannot read the holder's pod %s: %s", where, holder, exc)
            return None
        if pod is None:
            first = self._absent.setdefault(holder, self._observed)
            if first[:3] == self._observed[:3]:
                return None  # a pod that ended without releasing: the Lease runs out
            return f"{where} is renewed by {holder!r}, which is no pod of namespace " + (
                f"{self.namespace}: {fix}"
            )
        theirs, (ours,) = workload_from_pod(pod), self._own_workload
        if theirs != ours:
            what = f"{ours[0]}/{ours[1]}" if ours else "this pod's workload"
            return f"{where} is held by pod {holder}, which is not a pod of {what}: {fix}"
        self._trusted.add(holder)
        return None

    @property
    def holding(self) -> bool:
        return time.monotonic() < self._valid_until

    def tick(self) -> bool:
        """Try to acquire or renew; True while we hold the Lease. API errors are raised."""
        started = time.monotonic()
        how = self.acquire()
        if how is None:
            if self.holding:
                log.warning("lost Lease %s/%s", self.namespace, self.name)
            self._valid_until = 0.0
            self.suspect = self.check_holder()
            return self._set(False)
        self.suspect = None
        if not self.holding or how != "renewed":
            log.info("%s Lease %s/%s as %s", how, self.namespace, self.name, self.identity)
        self._valid_until = started + self.duration
        return self._set(True)

    def release(self) -> None:
        """Let another replica take over at once (as client-go's ReleaseOnCancel)."""
        if not self.holding:
            return
        self._valid_until = 0.0
        super().release()
