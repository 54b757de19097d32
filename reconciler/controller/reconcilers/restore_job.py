"""The objects a Restore creates (pure): the restore Job of a PVC target, the executor's
RoleBinding, their names, and what the Job and the pods tell about a PVC target."""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping

from reconciler.api.backup import Backup
from reconciler.api.constants import API_VERSION, RESTORE_KIND
from reconciler.api.restore import Restore
from reconciler.controller.pod import UNKNOWN_USER
from reconciler.controller.reconcilers.rbac import MANAGED_BY, MANAGER
from reconciler.controller.reconcilers.restore_executor import (
    RESTORE_ANNOTATION,
    render_executor,
)

TARGET_VOLUME = "restik-restore-target"
JOB_TARGET = "/restik/target"
RESTORE_CLUSTER_ROLE = "restik-restore"
EXEC_CLUSTER_ROLE = "restik-restore-exec"  # pods get/list, pods/exec: a dump Restore's Job
JOB_TTL = 3600
MAX_NAME = 63


def job_name(restore: str) -> str:
    return _short(f"restik-restore-{restore}")


def rolebinding_name(restore: str, role: str = RESTORE_CLUSTER_ROLE) -> str:
    """restik-restore-<restore>; another role's binding is "<role>:<restore>" (a Restore's
    name has no ':', so Restore exec-x's binding is never Restore x's exec binding)."""
    if role == RESTORE_CLUSTER_ROLE:
        return _short(f"{role}-{restore}")
    return _short(f"{role}:{restore}")


def _short(name: str) -> str:
    if len(name) <= MAX_NAME:
        return name
    digest = hashlib.sha256(name.encode()).hexdigest()[:8]
    return name[: MAX_NAME - 9].rstrip("-.") + "-" + digest


# --- the Job of a PVC target -----------------------------------------------------------------


def restore_job(raw: Mapping, restore: Restore, backup: Backup, image: str) -> dict:
    """A Job that mounts the claim and runs `restik restore-run` once, as root (restic then
    restores every file's owner)."""
    container, volumes = render_executor(
        image,
        restore,
        backup,
        target=JOB_TARGET,
        target_volume=TARGET_VOLUME,
        user=UNKNOWN_USER,
        workload_ref=None,
    )
    claim = {"name": TARGET_VOLUME, "persistentVolumeClaim": {"claimName": restore.claim_name}}
    return executor_job(raw, restore, container, [claim, *volumes])


def executor_job(raw: Mapping, restore: Restore, container: dict, volumes: list[dict]) -> dict:
    """The Job that runs the executor ``container`` once (never retried: one try, its
    reason kept), owned by the Restore."""
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {
            "name": job_name(restore.name),
            "namespace": restore.namespace,
            "labels": {MANAGED_BY: MANAGER, RESTORE_ANNOTATION: _short(restore.name)},
            "ownerReferences": [_owner(raw)],
        },
        "spec": {
            "backoffLimit": 0,  # restore-run never restores twice; one try, its reason kept
            "ttlSecondsAfterFinished": JOB_TTL,
            "template": {
                "metadata": {"labels": {MANAGED_BY: MANAGER}},
                "spec": {
                    "restartPolicy": "Never",
                    "containers": [container],
                    "volumes": volumes,
                },
            },
        },
    }


def _owner(raw: Mapping) -> dict:
    meta = raw["metadata"]
    return {
        "apiVersion": API_VERSION,
        "kind": RESTORE_KIND,
        "name": meta["name"],
        "uid": meta.get("uid"),
        "controller": True,
        "blockOwnerDeletion": False,
    }


def restore_rolebinding(
    raw: Mapping, service_accounts: Iterable[str], role: str = RESTORE_CLUSTER_ROLE
) -> dict:
    """The executor's rights (the restik-restore ClusterRole, or ``role``) for the pods
    that run it."""
    meta = raw["metadata"]
    return {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "RoleBinding",
        "metadata": {
            "name": rolebinding_name(meta["name"], role),
            "namespace": meta["namespace"],
            "labels": {MANAGED_BY: MANAGER},
            "ownerReferences": [_owner(raw)],
        },
        "roleRef": {
            "apiGroup": "rbac.authorization.k8s.io",
            "kind": "ClusterRole",
            "name": role,
        },
        "subjects": [
            {"kind": "ServiceAccount", "name": sa, "namespace": meta["namespace"]}
            for sa in sorted(set(service_accounts))
        ],
    }


def mounting_pods(pods: Iterable[Mapping], claim: str, except_job: str | None = None) -> list[str]:
    """Names of the pods that mount ``claim`` and have not ended (the Job's own excepted)."""
    out = []
    for pod in pods:
        meta = pod.get("metadata") or {}
        if except_job and (meta.get("labels") or {}).get("job-name") == except_job:
            continue
        if (pod.get("status") or {}).get("phase") in ("Succeeded", "Failed"):
            continue
        for v in (pod.get("spec") or {}).get("volumes") or ():
            if ((v or {}).get("persistentVolumeClaim") or {}).get("claimName") == claim:
                out.append(str(meta.get("name")))
                break
    return sorted(out)


def job_failure(job: Mapping) -> tuple[str, str] | None:
    """(reason, message) when the Job failed as the Job controller reports it (its Failed
    or FailureTarget condition True, or a failed pod: backoffLimit is 0), else None."""
    js = job.get("status") or {}
    for cond in js.get("conditions") or ():
        if not isinstance(cond, Mapping) or cond.get("status") != "True":
            continue
        if cond.get("type") in ("Failed", "FailureTarget"):
            reason = str(cond.get("reason") or "JobFailed")
            return reason, str(cond.get("message") or "the Job's pod failed")
    failed = js.get("failed")
    if isinstance(failed, int) and failed > 0:
        return "PodFailed", f"{failed} pod(s) of the Job failed"
    return None
