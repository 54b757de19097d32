"""One workload between full cycles: what a relevant watch event costs (a GET, at most one
PATCH), planned by the same pure planner against the Backups of the last full cycle."""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping

from reconciler.controller.apply import Applier
from reconciler.controller.observe import is_labeled, slim, with_kind
from reconciler.controller.plan import REMOVE, BackupIndex, Plan, plan_batch
from reconciler.controller.podtemplate import WorkloadRef
from reconciler.controller.reconcilers.workloads import reconcile_workloads
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
    """GET ``ref`` fresh, plan it, apply its one patch if there is one (print it in a dry
    run), through the same Applier as a full cycle (resourceVersion precondition, 409 =
    conflict, restik's own writes noted). Backup status, RoleBindings and restarts of stale
    pods are left to the next full cycle, which learns of this patch through
    ``known_injected`` and ``pending_restarts``."""
    started = time.monotonic()
    stats = CycleStats()
    res = WORKLOADS[ref.kind]
    obj = controller.kube.get_or_none(res.path(ref.namespace, ref.name))
    if obj is not None:
        with_kind(obj, res.api_version, ref.kind)
        stats.workloads = 1 if is_labeled(obj) else 0
        result = plan_one(index, obj, controller.renderer)
        stats.planned = len(result.changes)
        if controller.settings.dry_run:
            if result.changes:
                controller._print_plan(result)
        elif result.changes:
            applier = Applier(
                controller.kube,
                stats,
                leading=controller.leading,
                own_writes=controller.own_writes,
                metrics=controller.metrics,
            )
            for action in applier.apply(reconcile_workloads(result)):
                if action.action == REMOVE:
                    controller.known_injected.discard(action.ref)
                else:
                    controller.known_injected.add(action.ref)
                if action.restart:
                    controller.pending_restarts.add(action.ref)
                log.info("%s restik sidecar: %s (watch event)", action.action, action.what)
    stats.seconds = time.monotonic() - started
    return stats
