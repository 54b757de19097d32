"""The Restore planner's branch for a dump (pure): a Backup whose ``backupSource.command``
streamed a command's output into restic is restored by ``spec.command``: a Job runs `restik
restore-run --into-pods`, which pipes `restic dump` of each target pod's snapshot into that
command, run in the pod through pods/exec. The pod template is never touched (the
application must be running to receive the dump); the Job waits for Ready pods."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime

from reconciler.api.backup import Backup
from reconciler.api.hosts import per_pod_hosts
from reconciler.api.restore import Restore
from reconciler.controller.dumptargets import dump_targets
from reconciler.controller.observe import selector_string
from reconciler.controller.pod import UNKNOWN_USER, AppUser
from reconciler.controller.podtemplate import WorkloadRef
from reconciler.controller.reconcilers.restore_executor import render_executor
from reconciler.controller.reconcilers.restore_job import (
    EXEC_CLUSTER_ROLE,
    executor_job,
    restore_rolebinding,
)
from reconciler.controller.reconcilers.restore_result import (
    RestoreActions,
    fail_with_job,
    pending,
    set_status,
)

# The Job's user when the repository is remote: it writes nothing but restic's cache (an
# emptyDir); a local repository is written as the Backup's user, else as root (restic takes
# its lock there), as the PVC target's Job does.
NON_ROOT = AppUser(65532, 65532)


def _invalid(acts: RestoreActions, status: Mapping, new: dict, restore: Restore, text: str):
    message = f"Restore {restore.namespace}/{restore.name}: {text}"
    return set_status(acts, status, {**new, "phase": "Invalid", "message": message})


def plan_dump(
    acts: RestoreActions,
    raw: Mapping,
    restore: Restore,
    backup: Backup,
    status: Mapping,
    new: dict,
    workload: Mapping | None,
    pods: list[Mapping],
    job: Mapping | None,
    image: str,
    now: datetime,
) -> RestoreActions:
    """A Restore with spec.command, or of a Backup whose source is a command."""
    of = f"Backup {restore.namespace}/{restore.backup}"
    if backup.source_command is None:
        text = (
            f"spec.command: {of} backs up volume {backup.source_volume!r} at "
            f"{backup.source_path} (files, not a command's output): there is no dump to pipe "
            "into a command; remove spec.command to restore the files into the volume"
        )
        return _invalid(acts, status, new, restore, text)
    if restore.command is None:
        text = (
            f"spec.command: required: {of} backs up the output of "
            f"`{' '.join(backup.source_command.command)}` (spec.backupSource.command), not "
            "files; give the command that reads the dump on stdin in the target's pods, "
            "e.g. spec.command: {command: [psql, -X, -d, postgres]}"
        )
        return _invalid(acts, status, new, restore, text)
    if workload is None:
        return pending(
            acts, status, new, f"{restore.target} not found in namespace {restore.namespace}"
        )
    if job is not None:
        fail_with_job(acts, status, new, restore, job, pods, now)  # pods: the Job's
        return set_status(acts, status, new)
    kind = str(workload.get("kind"))
    name = str((workload.get("metadata") or {}).get("name"))
    ref = WorkloadRef(kind, restore.namespace, name)
    why = _not_ready(ref, workload, pods)
    if why:
        return pending(acts, status, new, why)
    selector = selector_string(workload, kind)
    if not selector:
        return pending(acts, status, new, f"{ref} has no pod selector")
    user = UNKNOWN_USER
    if backup.run_as_user is not None:
        user = AppUser(backup.run_as_user, backup.run_as_group)
    elif not backup.is_local:
        user = NON_ROOT
    container, volumes = render_executor(
        image,
        restore,
        backup,
        target=None,
        target_volume=None,
        user=user,
        workload_ref=str(ref),
        into_pods=selector,
    )
    acts.job = executor_job(raw, restore, container, list(volumes))
    acts.rolebinding = restore_rolebinding(raw, ["default"])
    acts.exec_rolebinding = restore_rolebinding(raw, ["default"], EXEC_CLUSTER_ROLE)
    if status.get("phase") in (None, "Pending", "Invalid"):
        new["phase"] = "Pending"
        new["message"] = (
            f"Job {acts.job['metadata']['name']} pipes the dump into "
            f"`{' '.join(restore.command.command)}` in the pods of {ref}"
        )
    return set_status(acts, status, new)


def _not_ready(ref: WorkloadRef, workload: Mapping, pods: list[Mapping]) -> str:
    """Why the dump cannot go in yet ("" when it can): a StatefulSet's or DaemonSet's every
    host needs its pod Ready (each receives its own snapshot), another kind one Ready pod."""
    targets = dump_targets(ref.kind, ref.name, pods)
    hosts = per_pod_hosts(workload, pods)
    if hosts is None:
        if targets:
            return ""
        return f"waiting for a Ready pod of {ref} to receive the dump"
    ready = {t.host for t in targets if t.ready}
    missing = sorted(hosts - ready)
    if hosts and not missing:
        return ""
    waiting = ", ".join(missing) or "its pods"
    return f"waiting for the pods of {ref} to be Ready to receive the dump: {waiting}"
