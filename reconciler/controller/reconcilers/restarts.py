"""Which stale pods to evict now, for the workloads whose pods do not roll by themselves
(ReplicaSets, ReplicationControllers, OnDelete StatefulSets and DaemonSets)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from reconciler.controller.actions import Evict, PatchWorkload
from reconciler.controller.observe import Snapshot
from reconciler.controller.podtemplate import WorkloadRef
from reconciler.controller.rollout import Rollout, plan_restart, with_template_hash


@dataclass
class Restarts:
    actions: list[Evict] = field(default_factory=list)
    rollouts: dict[WorkloadRef, Rollout] = field(default_factory=dict)  # of each one looked at
    done: set[WorkloadRef] = field(default_factory=set)  # every pod current, or the owner gone
    waiting: dict[WorkloadRef, str] = field(default_factory=dict)  # why nothing goes now


def reconcile_restarts(snapshot: Snapshot, patches: Sequence[PatchWorkload]) -> Restarts:
    """One decision per restart candidate (rollout.plan_restart: at most one pod per workload
    and cycle, only while every other pod is Ready). A workload patched in this cycle is
    judged by the template it is about to get, and its eviction needs that patch to land.
    A candidate whose namespace's pods could not be listed waits for the next cycle."""
    patched = {a.ref: a for a in patches if a.restart}
    out = Restarts()
    for ref in sorted(snapshot.restart_candidates):
        owner = snapshot.restart_owners.get(ref)
        if owner is None:
            out.done.add(ref)  # deleted, or no longer a workload restik restarts
            continue
        if ref.namespace not in snapshot.pod_namespaces:
            continue
        patch = patched.get(ref)
        if patch is not None:
            owner = with_template_hash(owner, patch.template_hash)
        pods = snapshot.pods.get(owner["metadata"]["uid"], [])
        decision = plan_restart(owner, pods)
        out.rollouts[ref] = decision.rollout()
        if decision.done:
            out.done.add(ref)
        elif decision.evict is None:
            out.waiting[ref] = decision.reason
        else:
            needs = patch.key if patch is not None else None
            out.actions.append(Evict(ref, decision.evict, needs=needs))
    return out
