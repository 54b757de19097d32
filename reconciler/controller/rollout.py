"""Whether a workload's pods run its current pod template, and which pod restik restarts
next for the kinds that do not roll by themselves. Pure: objects in, decisions out."""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from reconciler.api.constants import HASH_ANNOTATION, MANUAL_RESTART_KINDS

# Rollout states, as shown in a Backup's status.rollout[].state
CURRENT = "Current"
ROLLING_OUT = "RollingOut"
PENDING = "Pending"


def needs_manual_restart(obj: Mapping) -> bool:
    """Kinds whose pods do not roll on a template change: ReplicaSets, ReplicationControllers,
    and StatefulSets/DaemonSets with ``updateStrategy.type: OnDelete``."""
    kind = obj.get("kind")
    if kind in MANUAL_RESTART_KINDS:
        return True
    if kind in ("StatefulSet", "DaemonSet"):
        strategy = _get(obj, "spec", "updateStrategy") or {}
        return isinstance(strategy, Mapping) and strategy.get("type") == "OnDelete"
    return False


@dataclass(frozen=True, slots=True)  # one per labeled workload in every cycle's snapshot
class Rollout:
    """One workload's rollout as its status (or, for restarted kinds, its pods) tell it."""

    state: str  # CURRENT, ROLLING_OUT or PENDING
    pods: int | None
    updated: int | None
    ready: int | None
    message: str = ""

    @property
    def current(self) -> bool:
        return self.state == CURRENT

    def entry(self, workload: str) -> dict:
        """The status.rollout[] item for ``workload`` ("Kind/name")."""
        out: dict = {"workload": workload, "current": self.current, "state": self.state}
        for key in ("pods", "updated", "ready"):
            value = getattr(self, key)
            if value is not None:
                out[key] = value
        if self.message:
            out["message"] = self.message
        return out


def observe_rollout(obj: Mapping) -> Rollout:
    """The rollout of a Deployment, StatefulSet or DaemonSet from its status, the way
    ``kubectl rollout status`` reads it. Kinds restik restarts (see needs_manual_restart)
    are Current here, with their counts: their pods tell the rest (plan_restart)."""
    kind = obj.get("kind")
    spec = obj.get("spec") if isinstance(obj.get("spec"), Mapping) else {}
    status = obj.get("status") if isinstance(obj.get("status"), Mapping) else {}
    generation = _get(obj, "metadata", "generation")
    observed = status.get("observedGeneration")
    if kind == "DaemonSet":
        desired = _int(status.get("desiredNumberScheduled"))
        updated = _int(status.get("updatedNumberScheduled"))
        ready = _int(status.get("numberReady"))
        pods = _int(status.get("currentNumberScheduled"))
    else:
        desired = _int(spec.get("replicas"), 1)
        updated = _int(status.get("updatedReplicas"))
        ready = _int(status.get("readyReplicas"))
        pods = _int(status.get("replicas"))
    if needs_manual_restart(obj):
        # Their controller never replaces pods for a template change: restik restarts them
        # and knows from their pods (plan_restart) whether they are current.
        return Rollout(CURRENT, pods, pods, ready)
    if generation is not None and (not isinstance(observed, int) or observed < generation):
        return Rollout(
            ROLLING_OUT, pods, None, ready, f"waiting for the {kind} controller to observe it"
        )
    if kind == "Deployment":
        if updated < desired or pods > updated:
            if spec.get("paused") is True:
                return Rollout(PENDING, pods, updated, ready, "paused: resume it to roll out")
            return Rollout(ROLLING_OUT, pods, updated, ready, f"{updated}/{desired} updated")
        available = _int(status.get("availableReplicas"))
        if available < updated:
            return Rollout(ROLLING_OUT, pods, updated, ready, f"{available}/{desired} available")
        return Rollout(CURRENT, pods, updated, ready)
    if kind == "StatefulSet":
        partition = _int(_get(spec, "updateStrategy", "rollingUpdate", "partition"))
        if updated < desired:
            if partition > 0 and updated >= max(0, desired - partition):
                return Rollout(
                    PENDING,
                    pods,
                    updated,
                    ready,
                    f"partition {partition}: pods below ordinal {partition} keep the old sidecar",
                )
            return Rollout(ROLLING_OUT, pods, updated, ready, f"{updated}/{desired} updated")
        if ready < desired:
            return Rollout(ROLLING_OUT, pods, updated, ready, f"{ready}/{desired} ready")
        return Rollout(CURRENT, pods, updated, ready)
    if kind == "DaemonSet":
        available = _int(status.get("numberAvailable"))
        if updated < desired:
            return Rollout(ROLLING_OUT, pods, updated, ready, f"{updated}/{desired} updated")
        if available < desired:
            return Rollout(ROLLING_OUT, pods, updated, ready, f"{available}/{desired} available")
        return Rollout(CURRENT, pods, updated, ready)
    return Rollout(CURRENT, pods, None, ready)


@dataclass(frozen=True)
class Restart:
    """What to do next for a workload whose pods restik restarts itself."""

    evict: str | None  # the pod to evict now, if any
    done: bool  # every pod runs the current template
    pods: int
    updated: int
    ready: int
    reason: str = ""  # why nothing is evicted now (while not done)

    def rollout(self) -> Rollout:
        if self.done:
            return Rollout(CURRENT, self.pods, self.updated, self.ready)
        message = f"{self.updated}/{self.pods} pods restarted"
        if self.reason:
            message += f"; {self.reason}"
        return Rollout(ROLLING_OUT, self.pods, self.updated, self.ready, message)


def plan_restart(
    owner: Mapping, pods: Sequence[Mapping], needs: Callable[[Mapping], bool] | None = None
) -> Restart:
    """The next pod of ``owner`` (a ReplicaSet, ReplicationController or OnDelete
    StatefulSet/DaemonSet) to evict so that it runs the current template, if any may go now.

    Rules: only pods the owner controls count; nothing while one of them terminates; at most
    one pod unavailable at a time (a pod that is not Ready may be evicted only when it is
    the only one not Ready and is itself stale); and never fewer than ``replicas - 1`` Ready
    pods after the eviction (a missing replacement counts as not Ready). StatefulSet pods go
    from the highest ordinal down, as the StatefulSet controller rolls them; others by name.
    ``needs``: which pods need the restart (default: those without the template's hash; a
    Restore's init container has its own rule, reconcilers/restore_pods.py).
    """
    uid = _get(owner, "metadata", "uid")
    want = template_hash(owner)
    if needs is None:

        def needs(pod: Mapping) -> bool:
            return _pod_hash(pod) != want

    mine = [p for p in pods if _controlled_by(p, uid)]
    terminating = [p for p in mine if _get(p, "metadata", "deletionTimestamp")]
    live = [p for p in mine if p not in terminating and _phase(p) not in ("Succeeded", "Failed")]
    stale = [p for p in live if needs(p)]
    ready = [p for p in live if is_ready(p)]
    counts = {"pods": len(live), "updated": len(live) - len(stale), "ready": len(ready)}
    if not stale:
        return Restart(None, True, **counts)
    replicas = _desired(owner, len(live))
    if terminating:
        name = _name(terminating[0])
        return Restart(None, False, **counts, reason=f"pod {name} is terminating")
    not_ready = [p for p in live if not is_ready(p)]
    if len(not_ready) > 1:
        names = ", ".join(sorted(_name(p) for p in not_ready))
        return Restart(None, False, **counts, reason=f"pods not Ready: {names}")
    if not_ready:
        if not_ready[0] not in stale:
            name = _name(not_ready[0])
            return Restart(None, False, **counts, reason=f"pod {name} is not Ready yet")
        pick = not_ready[0]
    else:
        pick = sorted(stale, key=_restart_order(owner))[0]
    ready_after = len(ready) - (1 if is_ready(pick) else 0)
    if ready_after < replicas - 1:
        return Restart(None, False, **counts, reason=f"{len(ready)}/{replicas} pods Ready: waiting")
    return Restart(_name(pick), False, **counts)


def restart_view(obj: Mapping) -> dict:
    """What plan_restart reads of a workload, kept from its LIST before the rest is dropped:
    kind, name, uid, replicas, restik's template hash and a DaemonSet's desired pod count."""
    meta = obj.get("metadata") if isinstance(obj.get("metadata"), Mapping) else {}
    spec = obj.get("spec") if isinstance(obj.get("spec"), Mapping) else {}
    view: dict = {
        "kind": obj.get("kind"),
        "metadata": {k: meta.get(k) for k in ("name", "namespace", "uid")},
        "spec": {"template": {"metadata": {"annotations": {}}}},
    }
    if "replicas" in spec:
        view["spec"]["replicas"] = spec["replicas"]
    current = template_hash(obj)
    if current is not None:
        view["spec"]["template"]["metadata"]["annotations"][HASH_ANNOTATION] = current
    desired = _get(obj, "status", "desiredNumberScheduled")
    if desired is not None:
        view["status"] = {"desiredNumberScheduled": desired}
    return view


def with_template_hash(view: Mapping, new_hash: str | None) -> dict:
    """``view`` (see restart_view) as it will be once its template carries ``new_hash``."""
    annotations = {HASH_ANNOTATION: new_hash} if new_hash is not None else {}
    spec = {**view["spec"], "template": {"metadata": {"annotations": annotations}}}
    return {**view, "spec": spec}


def slim_pod(pod: dict) -> dict:
    """What plan_restart reads of a pod: its metadata (without managedFields) and status."""
    meta = dict(pod.get("metadata") or {})
    meta.pop("managedFields", None)
    status = pod.get("status") if isinstance(pod.get("status"), Mapping) else {}
    return {
        "metadata": meta,
        "status": {k: status[k] for k in ("phase", "conditions") if k in status},
    }


def owner_uids(pod: Mapping) -> list:
    """The uids of a pod's ownerReferences (the owner plan_restart matches it to)."""
    refs = _get(pod, "metadata", "ownerReferences") or ()
    return [r.get("uid") for r in refs if isinstance(r, Mapping) and r.get("uid")]


def is_ready(pod: Mapping) -> bool:
    for cond in _get(pod, "status", "conditions") or ():
        if isinstance(cond, Mapping) and cond.get("type") == "Ready":
            return cond.get("status") == "True"
    return False


def _restart_order(owner: Mapping):
    if owner.get("kind") == "StatefulSet":
        pattern = re.compile(re.escape(str(_get(owner, "metadata", "name"))) + r"-(\d+)$")

        def by_ordinal(pod: Mapping):
            match = pattern.match(_name(pod))
            return (-int(match.group(1)) if match else 0, _name(pod))

        return by_ordinal
    return _name


def _desired(owner: Mapping, live: int) -> int:
    if owner.get("kind") == "DaemonSet":
        desired = _get(owner, "status", "desiredNumberScheduled")
        return desired if isinstance(desired, int) else live
    return _int(_get(owner, "spec", "replicas"), 1)


def template_hash(owner: Mapping) -> str | None:
    """restik's hash annotation in a workload's pod template (None: no sidecar)."""
    return (_get(owner, "spec", "template", "metadata", "annotations") or {}).get(HASH_ANNOTATION)


def _pod_hash(pod: Mapping) -> str | None:
    return (_get(pod, "metadata", "annotations") or {}).get(HASH_ANNOTATION)


def _controlled_by(pod: Mapping, uid: object) -> bool:
    refs = _get(pod, "metadata", "ownerReferences") or ()
    return any(isinstance(r, Mapping) and r.get("uid") == uid and uid for r in refs)


def _phase(pod: Mapping) -> str | None:
    return _get(pod, "status", "phase")


def _name(pod: Mapping) -> str:
    return str(_get(pod, "metadata", "name"))


def _int(value: object, default: int = 0) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else default


def _get(obj: object, *path: str):
    for key in path:
        if not isinstance(obj, Mapping):
            return None
        obj = obj.get(key)
    return obj


def rollouts_now(
    result, observed: dict, restarts: dict, deferred: set, pending_restarts: set, patched_now: set
) -> dict:
    """WorkloadRef -> Rollout for every labeled workload with restik's sidecar: what its
    status said at LIST time, unless this cycle knows better (patched now, deferred by
    --max-rollouts, or restarted by restik)."""
    patched = {c.ref for c in result.changes if c.action != "remove"}
    out = {}
    for ref, rollout in observed.items():
        if ref not in result.injected and ref not in patched:
            continue  # no sidecar (yet): a problem on the Backup says why
        if ref in deferred:
            rollout = Rollout(ROLLING_OUT, None, None, None, "queued by --max-rollouts")
        elif ref in restarts:
            if not restarts[ref].current:  # else: the same counts as the status has
                rollout = restarts[ref]
        elif ref in pending_restarts:
            rollout = Rollout(ROLLING_OUT, rollout.pods, None, rollout.ready, "restart pending")
        elif ref in patched_now:
            # what the next LIST will say until the workload's controller catches up
            message = f"waiting for the {ref.kind} controller to observe it"
            rollout = Rollout(ROLLING_OUT, rollout.pods, None, rollout.ready, message)
        out[ref] = rollout
    return out
