"""One Lease per workload: of several replicas, only the holder backs up."""

from __future__ import annotations

import hashlib
import logging
import time

from reconciler.kube.client import Kube
from reconciler.kube.lease import LeaderElector

log = logging.getLogger(__name__)

MAX_NAME = 253


def lease_name(backup: str, workload: str) -> str:
    name = f"restik-{backup}-{workload}".lower()
    if len(name) <= MAX_NAME:
        return name
    digest = hashlib.sha256(name.encode()).hexdigest()[:10]
    return name[: MAX_NAME - 11].rstrip("-.") + "-" + digest


class LeaseKeeper(LeaderElector):
    """The controller's Lease protocol, with the holder's validity kept on the monotonic
    clock (safe against clock skew): a failed renewal keeps the Lease until it runs out."""

    def __init__(self, kube: Kube, namespace: str, name: str, identity: str, duration: float):
        super().__init__(kube, namespace, name, identity, duration=max(1, round(duration)))
        self._valid_until = 0.0

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
            return self._set(False)
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
