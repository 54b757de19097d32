"""Warning Events on workloads whose problem no Backup can carry: a label naming a Backup
that does not exist ("did you mean www?")."""

from __future__ import annotations

import hashlib

from reconciler.controller.actions import CreateEvent
from reconciler.controller.plan import BACKUP_NOT_FOUND, Plan, Problem
from reconciler.kube.events import object_event
from reconciler.kube.resource import WORKLOADS


def warning_keys(plan: Plan) -> dict[tuple, Problem]:
    """The workload warnings of this plan by what identifies them: (workload, uid, reason,
    message). The same key in the next cycle is the same problem, already reported."""
    return {
        (p.ref, p.uid, p.reason, p.message): p
        for p in plan.problems
        if p.reason == BACKUP_NOT_FOUND and p.ref is not None
    }


def reconcile_workload_warnings(
    plan: Plan, reported: set[tuple], now: str, component: str, nonce: str = ""
) -> list[CreateEvent]:
    """One Warning Event per workload warning not yet ``reported`` (the keys of the Events
    this controller process sent; see warning_keys). Remembered in memory only: a restart
    of the controller reports each open problem once more. ``nonce`` makes the Event's
    name unique when the same problem is reported again within one second."""
    actions = []
    for key, problem in sorted(warning_keys(plan).items(), key=lambda kv: kv[0][0]):
        if key in reported:
            continue
        ref = problem.ref
        involved = {
            "apiVersion": WORKLOADS[ref.kind].api_version,
            "kind": ref.kind,
            "name": ref.name,
            "namespace": ref.namespace,
        }
        if problem.uid:
            involved["uid"] = problem.uid
        seed = f"{now}/{nonce}/{problem.uid}/{problem.reason}/{problem.message}"
        suffix = hashlib.sha256(seed.encode()).hexdigest()
        body = object_event(
            involved,
            name=f"{ref.name}.{suffix[:16]}",
            reason=problem.reason,
            message=problem.message,
            warning=True,
            now=now,
            component=component,
        )
        about = f"{ref.kind} {ref.namespace}/{ref.name}"
        actions.append(CreateEvent(body, about, problem.reason, remember=key))
    return actions
