"""The planner's changes as workload patches, at most --max-rollouts updates per cycle."""

from __future__ import annotations

from reconciler.controller.actions import PatchWorkload
from reconciler.controller.patch import merge_patch
from reconciler.controller.plan import UPDATE, Plan
from reconciler.controller.podtemplate import WorkloadRef
from reconciler.controller.rollout import template_hash


def reconcile_workloads(plan: Plan, max_rollouts: int = 0) -> list[PatchWorkload]:
    """One merge patch per change, guarded by the resourceVersion it was planned from (a
    write in between answers 409: replanned next cycle). An image upgrade changes every
    sidecar at once: only the first ``max_rollouts`` updates (0: all) go out now, the rest in
    later cycles (they stay planned); injections and removals are never held back."""
    actions = []
    updates = 0
    for change in plan.changes:
        if change.action == UPDATE:
            if max_rollouts and updates >= max_rollouts:
                continue
            updates += 1
        patch = merge_patch(change.before, change.after)
        patch.setdefault("metadata", {})["resourceVersion"] = change.before["metadata"].get(
            "resourceVersion"
        )
        actions.append(
            PatchWorkload(
                change.ref,
                change.action,
                patch,
                restart=change.restart,
                template_hash=template_hash(change.after),
            )
        )
    return actions


def deferred(plan: Plan, patches: list[PatchWorkload]) -> set[WorkloadRef]:
    """The planned changes that wait for a later cycle (--max-rollouts)."""
    sent = {a.ref for a in patches}
    return {c.ref for c in plan.changes if c.ref not in sent}
