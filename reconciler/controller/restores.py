"""The Restores' part of a controller cycle: observe (one LIST of Restores, then each one's
Backup, target, pods and Job), plan (reconcilers/restores.py, pure), the plan as actions
(reconcilers/restore_actions.py, pure), carried out by the cycle's Applier."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime

from reconciler.api.backup import InvalidBackup, parse_backup
from reconciler.api.constants import API_VERSION, RESTORE_KIND, WORKLOAD_KINDS
from reconciler.api.restore import FINISHED, InvalidRestore, parse_restore
from reconciler.controller.observe import selector_string, with_kind
from reconciler.controller.reconcilers.restore_actions import restore_actions
from reconciler.controller.reconcilers.restores import RestoreActions, job_name, plan_restore
from reconciler.controller.rollout import needs_manual_restart
from reconciler.kube.client import ApiError
from reconciler.kube.events import rfc3339
from reconciler.kube.resource import JOBS, PODS, PVCS, RESTORES, ROLEBINDINGS, WORKLOADS

log = logging.getLogger("restik.controller")
COMPONENT = "restik-controller"
# A settled Restore is looked at again after this long even when unchanged, so that its
# init container re-applied to the workload (a GitOps tool syncing an old render) is
# taken out again: one GET of the workload (and of its pods) per finished Restore this often.
SETTLED_RECHECK_S = 600.0


def sync_restores(
    controller,
    applier,
    raw_backups: Iterable[Mapping],
    stats,
    rolebindings: Mapping[tuple[str, str], Mapping] | None = None,
    evicted: frozenset | set = frozenset(),
) -> dict:
    """Observe, plan and apply every Restore (its writes through ``applier``, the cycle's
    only writer); (namespace, name) -> phase (for the metric). ``rolebindings``: restik's
    RoleBindings as the cycle listed them (None: each Restore's is read); ``evicted``: the
    workloads one of whose pods the sidecar's restarts evicted in this cycle (a Restore
    evicts none of theirs then: one pod of a workload at a time).

    A Restore whose plan said it is settled (finished, its init container out, no pod of
    its workload left to restart) and wrote nothing is remembered with its resourceVersion
    and costs no request in later cycles while it stays unchanged (any change to it, e.g.
    a new spec.runID, has it observed and planned again), for SETTLED_RECHECK_S at most."""
    kube, settings = controller.kube, controller.settings
    try:
        restores = kube.list(RESTORES.path(settings.namespace)).get("items") or []
    except ApiError as exc:
        if not exc.not_found:  # no Restore CRD (yet): nothing to do
            stats.errors += 1
            log.error("listing Restores: %s", exc)
        return {}
    backups = {
        ((b.get("metadata") or {}).get("namespace"), (b.get("metadata") or {}).get("name")): b
        for b in raw_backups
    }
    phases = {}
    restarting = False
    now = datetime.now(UTC)
    settled = controller.settled_restores
    for raw in restores:
        with_kind(raw, API_VERSION, RESTORE_KIND)
        meta = raw["metadata"]
        key = (meta.get("namespace"), meta.get("name"))
        version = (meta.get("uid"), meta.get("resourceVersion"))
        seen = settled.get(key)
        if seen and seen[0] == version and time.monotonic() - seen[1] < SETTLED_RECHECK_S:
            # finished and done with: nothing to read or plan
            phases[key] = (raw.get("status") or {}).get("phase")
            continue
        settled.pop(key, None)
        if not applier.may_write():
            break
        try:
            acts = _plan_one(controller, raw, backups, now)
            bindings = rolebindings if rolebindings is not None else _rolebinding(kube, acts)
            if acts.evict is not None and acts.evict[0] in evicted:
                acts.evict = None
        except ApiError as exc:
            stats.errors += 1
            log.error("Restore %s/%s: %s", key[0], key[1], exc)
            continue
        actions = restore_actions(raw, acts, bindings, rfc3339(now), COMPONENT)
        applier.apply(actions)
        if acts.settled and not actions and version[1]:
            settled[key] = (version, time.monotonic())
        phases[key] = acts.phase
        restarting = restarting or acts.restarting
    listed = {
        ((r.get("metadata") or {}).get("namespace"), r["metadata"].get("name")) for r in restores
    }
    for key in set(settled) - listed:  # deleted Restores
        del settled[key]
    controller.restore_restarts = restarting  # the loop looks again soon meanwhile
    if controller.metrics is not None:
        controller.metrics.set_restore_phases(phases)
    return phases


def _rolebinding(kube, acts: RestoreActions) -> dict:
    """The executor's RoleBindings (and a dump Restore's exec one) that exist already."""
    out = {}
    for binding in (acts.rolebinding, acts.exec_rolebinding):
        if binding is None:
            continue
        meta = binding["metadata"]
        live = kube.get_or_none(ROLEBINDINGS.path(meta["namespace"], meta["name"]))
        if live is not None:
            out[(meta["namespace"], meta["name"])] = live
    return out


def _job_pods(kube, ns: str, job: Mapping) -> list:
    """The pods of a restore Job (one that cannot start is reported)."""
    selector = f"job-name={job['metadata']['name']}"
    return kube.list(PODS.path(ns), label_selector=selector).get("items") or []


def _plan_one(controller, raw: dict, backups: Mapping, now: datetime) -> RestoreActions:
    """Read what the planner needs of one Restore: its Backup (from the cycle's LIST), its
    claim and Job or its workload, and the pods that matter: before the Job, the
    namespace's (who mounts the claim); then the Job's (a pod that cannot start); the
    workload's while the Restore runs (hosts, restarts, dead pods), and after it ends only
    for the kinds restik restarts (a pod stuck in the init container)."""
    kube = controller.kube
    ns = raw["metadata"]["namespace"]
    backup = None
    workload = claim = job = None
    pods: list = []
    seen = False
    try:
        restore = parse_restore(raw)
    except InvalidRestore:
        restore = None
    if restore is not None:
        status = raw.get("status") or {}
        finished = status.get("phase") in FINISHED and status.get("runID") == restore.run_id
        braw = backups.get((ns, restore.backup))
        if braw is not None:
            try:
                backup = parse_backup(braw)
            except InvalidBackup as exc:
                backup = exc
        if restore.is_pvc:
            claim = kube.get_or_none(PVCS.path(ns, restore.claim_name))
            job = kube.get_or_none(JOBS.path(ns, job_name(restore.name)))
            if claim is not None and job is None:
                pods = kube.list(PODS.path(ns)).get("items") or []
            elif job is not None and not finished:
                pods = _job_pods(kube, ns, job)
        elif restore.workload_kind in WORKLOAD_KINDS:
            res = WORKLOADS[restore.workload_kind]
            workload = kube.get_or_none(res.path(ns, restore.workload_name))
            if workload is not None:
                with_kind(workload, res.api_version, restore.workload_kind)
                selector = selector_string(workload, restore.workload_kind)
                if restore.command is not None and not finished:
                    # a dump: its Job execs into the pods (restore_dump)
                    job = kube.get_or_none(JOBS.path(ns, job_name(restore.name)))
                if job is not None:
                    pods = _job_pods(kube, ns, job)
                elif selector and (not finished or needs_manual_restart(workload)):
                    pods = kube.list(PODS.path(ns), label_selector=selector).get("items") or []
                    seen = True
    return plan_restore(
        raw,
        backup,
        workload=workload,
        claim=claim,
        pods=pods,
        job=job,
        image=controller.renderer.image,
        now=now,
        pods_seen=seen,
    )
