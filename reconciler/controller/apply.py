"""Apply: the only place where the controller writes to the API, with one error policy.

Every write: leadership checked first (once lost, the rest of the cycle writes nothing);
409 → a conflict (counted, the object is replanned next cycle); 404 → gone (logged at info;
for a delete that is the goal); any other ApiError → an error (counted, logged with the
object); 429 on an eviction → a PodDisruptionBudget says wait (logged, next cycle). Each
write's answer resourceVersion is noted, so the loop's watches skip the controller's own
writes; each carried-out write is counted in CycleStats and restik_writes_total{kind}."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Mapping

from reconciler.controller.actions import (
    EVENT,
    EVICTION,
    JOB,
    ROLEBINDING,
    STATUS,
    WORKLOAD,
    Action,
    CreateEvent,
    CreateObject,
    DeleteObject,
    Evict,
    PatchRestoreInit,
    PatchRestoreStatus,
    PatchStatus,
    PatchWorkload,
    ReplaceObject,
)
from reconciler.controller.stats import CycleStats
from reconciler.kube.client import ApiError, Kube

log = logging.getLogger("restik.controller")

OWN_WRITES_LIMIT = 10_000
VERBS = {
    PatchWorkload: "patching",
    PatchRestoreInit: "patching",
    PatchRestoreStatus: "patching",
    Evict: "evicting",
    CreateObject: "creating",
    ReplaceObject: "replacing",
    DeleteObject: "deleting",
    PatchStatus: "patching",
    CreateEvent: "creating",
}
STAT_FIELDS = {
    WORKLOAD: "patched",
    EVICTION: "restarted",
    ROLEBINDING: "rbac_writes",
    STATUS: "status_writes",
    EVENT: "events",
    JOB: "jobs",
}


class Applier:
    """Carries out one cycle's actions in order. ``max_evictions``: successful evictions
    per cycle (--max-restarts); a PodDisruptionBudget's "wait" uses none of them."""

    def __init__(
        self,
        kube: Kube,
        stats: CycleStats,
        *,
        leading: Callable[[], bool] = lambda: True,
        own_writes: set[str] | None = None,
        metrics=None,
        max_evictions: int | None = None,
    ):
        self.kube = kube
        self.stats = stats
        self.leading = leading
        self.own_writes = own_writes if own_writes is not None else set()
        self.metrics = metrics
        self.evictions_left = max_evictions
        self.done: set[tuple] = set()  # keys of the actions carried out

    def apply(self, actions: Iterable[Action]) -> list[Action]:
        """The actions carried out, in order. An action whose ``needs`` was not carried out
        is skipped, and so is every eviction once the budget is spent."""
        applied = []
        for action in actions:
            if action.needs is not None and action.needs not in self.done:
                continue
            if isinstance(action, Evict) and self.evictions_left is not None:
                if self.evictions_left <= 0:
                    continue
            if not self.may_write():
                break
            if self._write(action):
                self.done.add(action.key)
                applied.append(action)
        return applied

    def may_write(self) -> bool:
        """False once leadership is lost: the rest of the cycle writes nothing."""
        if not self.stats.lost_leadership and not self.leading():
            self.stats.lost_leadership = True
        return not self.stats.lost_leadership

    def _write(self, action: Action) -> bool:
        try:
            answer = self._send(action)
        except ApiError as exc:
            if exc.conflict:
                self.stats.conflicts += 1
                log.info("%s changed meanwhile; replanning next cycle", action.what)
            elif exc.not_found:
                log.info("%s is gone", action.what)
                return isinstance(action, DeleteObject)  # deleted already: what was wanted
            else:
                self.stats.errors += 1
                log.error("%s %s failed: %s", VERBS[type(action)], action.what, exc)
            return False
        if answer is None:  # an eviction a PodDisruptionBudget does not allow now
            log.info(
                "restart of %s/%s waits: a PodDisruptionBudget does not allow evicting pod %s now",
                action.owner.namespace,
                action.owner,
                action.pod,
            )
            return False
        if action.write != EVENT:
            self.note_write(answer)
        self._count(action)
        return True

    def _send(self, action: Action):
        kube = self.kube
        if isinstance(action, (PatchWorkload, PatchStatus)):  # PatchRestoreStatus is one
            return kube.merge_patch(action.path, action.patch)
        if isinstance(action, Evict):
            return {} if kube.evict(action.owner.namespace, action.pod) else None
        if isinstance(action, (CreateObject, CreateEvent)):
            return kube.create(action.path, action.body)
        if isinstance(action, ReplaceObject):
            return kube.replace(action.path, action.body)
        if isinstance(action, DeleteObject):
            return kube.delete(action.path, action.body)
        raise TypeError(f"not an action: {action!r}")

    def _count(self, action: Action) -> None:
        field = STAT_FIELDS[action.write]
        setattr(self.stats, field, getattr(self.stats, field) + 1)
        if self.metrics:
            self.metrics.writes.labels(action.write).inc()
        if isinstance(action, PatchWorkload):
            if self.metrics:
                self.metrics.patches.labels(action.action).inc()
            log.info("%s %s: %s", action.action, action.part, action.what)
        elif isinstance(action, Evict):
            if self.evictions_left is not None:
                self.evictions_left -= 1
            if self.metrics:
                self.metrics.restarts.inc()
            log.info("restarted (evicted) %s", action.what)
        elif isinstance(action, CreateEvent):
            log.info("sent a Warning %s: %s", action.what, action.body.get("message"))
        elif isinstance(action, PatchStatus):  # a Backup's or a Restore's
            log.debug("wrote the %s", action.what)
        else:
            verb = {CreateObject: "created", ReplaceObject: "replaced", DeleteObject: "deleted"}
            log.info("%s %s", verb[type(action)], action.what)

    def note_write(self, answer: Mapping) -> None:
        rv = (
            (answer.get("metadata") or {}).get("resourceVersion")
            if isinstance(answer, Mapping)
            else None
        )
        if rv:
            self.own_writes.add(rv)
            if len(self.own_writes) > OWN_WRITES_LIMIT:
                self.own_writes.clear()
