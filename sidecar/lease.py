"""One Lease per workload: of several replicas, only the holder backs up."""

from __future__ import annotations

import hashlib
import logging
import time
from datetime import UTC, datetime, timedelta

from sidecar.kube import Api, ApiError

log = logging.getLogger(__name__)

MAX_NAME = 253


def lease_name(backup: str, workload: str) -> str:
    name = f"restik-{backup}-{workload}".lower()
    if len(name) <= MAX_NAME:
        return name
    digest = hashlib.sha256(name.encode()).hexdigest()[:10]
    return name[: MAX_NAME - 11].rstrip("-.") + "-" + digest


def micro_time(t: datetime) -> str:
    return t.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def parse_micro_time(value: object) -> datetime | None:
    if not isinstance(value, str):
        return None
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None


def expired(spec: dict, now: datetime) -> bool:
    if not spec.get("holderIdentity"):
        return True
    renewed = parse_micro_time(spec.get("renewTime")) or parse_micro_time(spec.get("acquireTime"))
    duration = spec.get("leaseDurationSeconds") or 0
    return renewed is None or now > renewed + timedelta(seconds=duration)


class LeaseKeeper:
    """Acquire, renew and release a coordination.k8s.io/v1 Lease."""

    def __init__(self, api: Api, namespace: str, name: str, identity: str, duration: float):
        self.api = api
        self.namespace = namespace
        self.name = name
        self.identity = identity
        self.duration = max(1, round(duration))
        self._valid_until = 0.0  # monotonic: our own view, safe against clock skew
        self._path = f"/apis/coordination.k8s.io/v1/namespaces/{namespace}/leases"

    @property
    def holding(self) -> bool:
        return time.monotonic() < self._valid_until

    def _spec(self, now: datetime, transitions: int, acquired: str | None = None) -> dict:
        return {
            "holderIdentity": self.identity,
            "leaseDurationSeconds": self.duration,
            "acquireTime": acquired or micro_time(now),
            "renewTime": micro_time(now),
            "leaseTransitions": transitions,
        }

    def tick(self) -> bool:
        """Try to acquire or renew; True while we hold the Lease."""
        started = time.monotonic()
        now = datetime.now(UTC)
        try:
            current = self.api.get(f"{self._path}/{self.name}")
        except ApiError as exc:
            if exc.code != 404:
                raise
            body = {
                "apiVersion": "coordination.k8s.io/v1",
                "kind": "Lease",
                "metadata": {"name": self.name, "namespace": self.namespace},
                "spec": self._spec(now, 0),
            }
            try:
                self.api.create(self._path, body)
            except ApiError as exc2:
                if exc2.code == 409:  # another replica created it first
                    return self._lost()
                raise
            return self._won(started, "acquired")
        spec = current.get("spec") or {}
        mine = spec.get("holderIdentity") == self.identity
        if not mine and not expired(spec, now):
            return self._lost()
        transitions = int(spec.get("leaseTransitions") or 0) + (0 if mine else 1)
        acquired = spec.get("acquireTime") if mine else None
        current["spec"] = self._spec(now, transitions, acquired)
        try:
            self.api.replace(f"{self._path}/{self.name}", current)  # resourceVersion: optimistic
        except ApiError as exc:
            if exc.code == 409:
                return self._lost()
            raise
        return self._won(started, "renewed" if mine else "took over")

    def _won(self, started: float, how: str) -> bool:
        if not self.holding or how != "renewed":
            log.info("%s Lease %s/%s as %s", how, self.namespace, self.name, self.identity)
        self._valid_until = started + self.duration
        return True

    def _lost(self) -> bool:
        if self.holding:
            log.warning("lost Lease %s/%s", self.namespace, self.name)
        self._valid_until = 0.0
        return False

    def release(self) -> None:
        """Let another replica take over at once (as client-go's ReleaseOnCancel)."""
        if not self.holding:
            return
        self._valid_until = 0.0
        try:
            current = self.api.get(f"{self._path}/{self.name}")
            if (current.get("spec") or {}).get("holderIdentity") != self.identity:
                return
            current["spec"] = {
                **current["spec"],
                "holderIdentity": None,
                "leaseDurationSeconds": 1,
                "renewTime": micro_time(datetime.now(UTC)),
            }
            self.api.replace(f"{self._path}/{self.name}", current)
            log.info("released Lease %s/%s", self.namespace, self.name)
        except Exception as exc:  # best effort: the Lease expires on its own
            log.warning("could not release Lease %s/%s: %s", self.namespace, self.name, exc)
