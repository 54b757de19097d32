"""The Restore planner (pure): a Restore, its Backup, its target and the pods in, the
actions out — the init container restik-restore in or out of a workload's pod template, the
restore Job of a PVC target, the RoleBinding of the executor, the Restore's status and
Warning Events. No I/O, no clock (``now`` is given)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import datetime

from reconciler.api.backup import Backup, InvalidBackup
from reconciler.api.constants import RESTORE_CONTAINER
from reconciler.api.hosts import per_pod_hosts
from reconciler.api.restore import FINISHED, InvalidRestore, Restore, parse_restore
from reconciler.controller.pod import app_user
from reconciler.controller.podtemplate import WorkloadError, WorkloadRef
from reconciler.controller.reconcilers.rbac import service_account
from reconciler.controller.reconcilers.restore_dump import plan_dump
from reconciler.controller.reconcilers.restore_executor import (
    RESTORE_ANNOTATION,
    executor_hash,
    executor_repository,
    inject_restore,
    remove_restore,
    render_executor,
    restore_mark,
)
from reconciler.controller.reconcilers.restore_job import (
    EXEC_CLUSTER_ROLE,
    executor_job,
    job_failure,
    job_name,
    mounting_pods,
    restore_job,
    restore_rolebinding,
    rolebinding_name,
)
from reconciler.controller.reconcilers.restore_pods import (
    blocked_conditions,
    dead_hosts,
    fail_hosts,
    restore_restart,
)
from reconciler.controller.reconcilers.restore_result import (
    RestoreActions,
    fail_with_job,
    pending,
    set_status,
)
from reconciler.controller.rollout import Restart, needs_manual_restart
from reconciler.kube.events import clip, rfc3339

__all__ = [
    "EXEC_CLUSTER_ROLE",
    "RESTORE_ANNOTATION",
    "RestoreActions",
    "executor_hash",
    "executor_job",
    "executor_repository",
    "inject_restore",
    "job_failure",
    "job_name",
    "mounting_pods",
    "plan_restore",
    "remove_restore",
    "render_executor",
    "restore_job",
    "restore_mark",
    "restore_rolebinding",
    "rolebinding_name",
]


# --- the plan --------------------------------------------------------------------------------


def plan_restore(
    raw: Mapping,
    backup: Backup | InvalidBackup | None,
    *,
    workload: Mapping | None = None,
    claim: Mapping | None = None,
    pods: Iterable[Mapping] = (),
    job: Mapping | None = None,
    image: str,
    now: datetime,
    pods_seen: bool = False,
) -> RestoreActions:
    """What to do for one Restore this cycle. ``pods``: the workload's pods, or the Job's
    (or, before the Job, the namespace's); ``pods_seen``: they were listed (a host whose
    pod is not among them is gone; offline, nothing is judged by pods)."""
    status = dict(raw.get("status") or {})
    acts = RestoreActions(phase=status.get("phase") or "Pending")
    try:
        restore = parse_restore(raw)
    except InvalidRestore as exc:
        return set_status(acts, status, {"phase": "Invalid", "message": clip(str(exc))})
    pods = list(pods)
    new: dict = {}
    if status.get("target") != restore.target:
        new["target"] = restore.target
    finished = status.get("phase") in FINISHED and status.get("runID") == restore.run_id
    if finished:
        if workload is not None and restore_mark(workload) is not None:
            _take_out(acts, workload, restore)  # one rollout in, one out
        elif workload is not None and not needs_manual_restart(workload):
            acts.settled = True  # its pods roll by themselves: none to restart
        elif workload is not None and pods_seen:
            decision = _restart(acts, workload, pods, restore, finished=True)
            acts.settled = decision is None or decision.done
        elif restore.is_pvc:
            acts.settled = True  # its claim, Job and pods change nothing once it ended
        return set_status(acts, status, new)
    if backup is None or isinstance(backup, InvalidBackup):
        why = (
            f"Backup {restore.namespace}/{restore.backup} not found"
            if backup is None
            else f"Backup {restore.namespace}/{restore.backup} is invalid: {backup}"
        )
        return pending(acts, status, new, why)
    if backup.source_command is not None or restore.command is not None:
        return plan_dump(acts, raw, restore, backup, status, new, workload, pods, job, image, now)
    if restore.is_pvc:
        return _plan_claim(acts, raw, restore, backup, status, new, claim, pods, job, image, now)
    if workload is None:
        return pending(
            acts, status, new, f"{restore.target} not found in namespace {restore.namespace}"
        )
    return _plan_workload(
        acts, raw, restore, backup, status, new, workload, pods, image, now, pods_seen
    )


def _plan_claim(acts, raw, restore, backup, status, new, claim, pods, job, image, now):
    if claim is None:
        why = f"PersistentVolumeClaim {restore.namespace}/{restore.claim_name} not found"
        return pending(acts, status, new, why)
    if job is None:
        users = mounting_pods(pods, restore.claim_name)
        if users:
            message = (
                f"PersistentVolumeClaim {restore.namespace}/{restore.claim_name} is in use by "
                f"pod {', '.join(users)}: restik does not restore into a mounted volume; stop "
                "them (scale to 0) and the restore starts"
            )
            if status.get("message") != message:
                acts.events.append(("ClaimInUse", message))
            new["conditions"] = blocked_conditions(status, "ClaimInUse", message, now)
            return pending(acts, status, new, message)
        if any(c.get("type") == "Blocked" for c in status.get("conditions") or ()):
            new["conditions"] = blocked_conditions(status, "", "", now)
        acts.job = restore_job(raw, restore, backup, image)
        acts.rolebinding = restore_rolebinding(raw, ["default"])
        if status.get("phase") in (None, "Pending", "Invalid"):
            new["message"] = f"Job {acts.job['metadata']['name']} restores into the claim"
            new["phase"] = "Pending"
        return set_status(acts, status, new)
    fail_with_job(acts, status, new, restore, job, pods, now)
    return set_status(acts, status, new)


def _plan_workload(acts, raw, restore, backup, status, new, workload, pods, image, now, seen):
    ref = WorkloadRef(
        str(workload.get("kind")),
        restore.namespace,
        str((workload.get("metadata") or {}).get("name")),
    )
    user = app_user(workload, backup.source_volume)
    container, volumes = render_executor(
        image,
        restore,
        backup,
        target=backup.source_path,
        target_volume=backup.source_volume,
        user=user,
        workload_ref=str(ref),
    )
    mark = f"{restore.name}/{executor_hash(container, volumes)}"
    acts.rolebinding = restore_rolebinding(raw, [service_account(workload)])
    if restore_mark(workload) != mark:
        try:
            after = inject_restore(workload, container, volumes, mark)
        except WorkloadError as exc:
            message = f"{ref}: {exc}"
            if status.get("message") != message:
                acts.events.append(("WorkloadMisconfigured", message))
            new["conditions"] = blocked_conditions(status, "WorkloadMisconfigured", message, now)
            return pending(acts, status, new, message)
        acts.workload = (ref, workload, after)
        if status.get("phase") in (None, "Pending", "Invalid"):
            new["phase"] = "Pending"
            new["message"] = (
                f"init container {RESTORE_CONTAINER} added to {ref}: its pods restart and "
                "restore before the application starts"
            )
        return set_status(acts, status, new)
    if seen and status.get("phase") == "Running":
        dead = dead_hosts(status, restore.run_id, pods)
        if dead:
            fail_hosts(acts.events, new, restore, status, dead, now)
            return set_status(acts, status, new)
    if seen:
        _restart(acts, workload, pods, restore, finished=False)
    # multi-host: the Restore succeeds when every expected host's entry did
    hosts = per_pod_hosts(workload, pods)
    if hosts and status.get("phase") == "Running":
        entries = {
            h.get("host"): h
            for h in status.get("hosts") or ()
            if isinstance(h, Mapping) and h.get("runID") == restore.run_id
        }
        if all((entries.get(h) or {}).get("phase") == "Succeeded" for h in hosts):
            new.update(
                {
                    "phase": "Succeeded",
                    "completionTime": rfc3339(now),
                    "runID": restore.run_id,
                    "snapshot": f"{len(hosts)} hosts",
                    "message": f"restored {len(hosts)} hosts: {', '.join(sorted(hosts))}",
                }
            )
    return set_status(acts, status, new)


def _restart(acts, workload: Mapping, pods, restore: Restore, *, finished: bool) -> Restart | None:
    """The restart of the workload's pods for the init container (restore_restart), into
    ``acts``; the decision (None for the kinds that roll by themselves)."""
    decision = restore_restart(workload, pods, restore.name, finished)
    if decision is not None and not decision.done:
        acts.restarting = True
        if decision.evict is not None:
            acts.evict = (_ref(workload, restore), decision.evict)
    return decision


def _ref(workload: Mapping, restore: Restore) -> WorkloadRef:
    name = str((workload.get("metadata") or {}).get("name"))
    return WorkloadRef(str(workload.get("kind")), restore.namespace, name)


def _take_out(acts: RestoreActions, workload: Mapping, restore: Restore) -> None:
    mark = restore_mark(workload) or ""
    if mark.split("/", 1)[0] != restore.name:
        return  # another Restore's init container: not this one's to remove
    ref = WorkloadRef(
        str(workload.get("kind")),
        restore.namespace,
        str((workload.get("metadata") or {}).get("name")),
    )
    acts.workload = (ref, workload, remove_restore(workload))
