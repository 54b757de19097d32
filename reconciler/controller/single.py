"""One workload between full cycles: what a relevant watch event costs (a GET, at most one
PATCH), planned by the same pure planner against the Backups of the last full cycle."""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping

from reconciler.controller.observe import is_labeled, slim, with_kind
from reconciler.controller.plan import UPDATE, BackupIndex, Plan, plan_batch
from reconciler.controller.podtemplate import WorkloadRef
from reconciler.controller.render import Renderer
from reconciler.controller.stats import CycleStats
from reconciler.kube.resource import WORKLOADS

log = logging.getLogger("restik.controller")


def plan_one(index: BackupIndex, obj: Mapping, renderer: Renderer) -> Plan:
    """The plan of one workload object (``obj`` is slimmed in place: pass a copy you own)."""
    result = Plan()
    plan_batch(index, [slim(obj)], renderer, result)
    result.finish()
    return result


def plans_change(index: BackupIndex, obj: dict, renderer: Renderer) -> bool:
    """Whether the planner would rewrite ``obj`` as it is (e.g. a watch event's copy)."""
    return bool(plan_one(index, obj, renderer).changes)


def reconcile_workload(controller, index: BackupIndex, ref: WorkloadRef) -> CycleStats:
    """GET ``ref`` fresh, plan it, apply the one change if there is one (print it in a dry
    run). An update that the last full cycle deferred (--max-rollouts) stays for the cycles,
    so an event never lets a workload jump the rollout queue. Backup status, RoleBindings and
    restarts of stale pods are left to the next full cycle."""
    started = time.monotonic()
    stats = CycleStats()
    res = WORKLOADS[ref.kind]
    obj = controller.kube.get_or_none(res.path(ref.namespace, ref.name))
    if obj is not None:
        with_kind(obj, res.api_version, ref.kind)
        stats.workloads = 1 if is_labeled(obj) else 0
        result = plan_one(index, obj, controller.renderer)
        result.changes = [
            c for c in result.changes if not (c.action == UPDATE and c.ref in controller.deferred)
        ]
        stats.planned = len(result.changes)
        if controller.settings.dry_run:
            if result.changes:
                controller._print_plan(result)
        elif result.changes:
            # _apply_changes starts a cycle's bookkeeping afresh; keep the full cycle's.
            deferred, patched = controller.deferred, controller.patched_now
            try:
                controller._apply_changes(result, stats)
            finally:
                controller.deferred = deferred
                controller.patched_now = patched | controller.patched_now
    stats.seconds = time.monotonic() - started
    return stats
