"""The Restore planner (pure): a Restore, its Backup, its target and the pods in, the
actions out — the init container restik-restore in or out of a workload's pod template, the
restore Job of a PVC target, the RoleBinding of the executor, the Restore's status and
Warning Events. No I/O, no clock (``now`` is given)."""

from __future__ import annotations

import copy
import hashlib
import json
from collections.abc import Iterable, Mapping, MutableMapping
from dataclasses import dataclass, field
from datetime import datetime

from reconciler.api.backup import Backup, InvalidBackup
from reconciler.api.constants import (
    API_VERSION,
    CACHE_MOUNT,
    REPO_MOUNT,
    RESTORE_CONTAINER,
    RESTORE_KIND,
    SECRET_ENV,
    SECRET_PASSWORD_KEY,
    TOKEN_MOUNT,
)
from reconciler.api.restore import FINISHED, InvalidRestore, Restore, parse_restore
from reconciler.controller.pod import UNKNOWN_USER, AppUser, app_user
from reconciler.controller.podtemplate import WorkloadError, WorkloadRef, pod_template
from reconciler.controller.reconcilers.rbac import MANAGED_BY, MANAGER, service_account
from reconciler.controller.render import _environment, _repo_volume, _to_data
from reconciler.kube.events import clip, rfc3339, with_condition

# On the pod template: which Restore's init container is there, and the hash of what was
# rendered ("<restore>/<hash>"); restik owns restik-restore only where this is set.
RESTORE_ANNOTATION = "backup.appscode.com/restore"
RESTORE_VOLUME_PREFIX = "restik-restore-"
CACHE_VOLUME = "restik-restore-cache"
TOKEN_VOLUME = "restik-restore-token"  # noqa: S105 - a volume name
REPO_VOLUME = "restik-restore-repo"
TARGET_VOLUME = "restik-restore-target"
JOB_TARGET = "/restik/target"
RESTORE_CLUSTER_ROLE = "restik-restore"
EXEC_CLUSTER_ROLE = "restik-restore-exec"  # pods get/list, pods/exec: a dump Restore's Job
JOB_TTL = 3600
MAX_NAME = 63


@dataclass
class RestoreActions:
    status: dict | None = None  # fields to merge into status (None: nothing to write)
    workload: tuple[WorkloadRef, Mapping, Mapping] | None = None  # (ref, before, after)
    job: dict | None = None  # to create
    rolebinding: dict | None = None  # to create when absent
    exec_rolebinding: dict | None = None  # the same, for a dump Restore's pods/exec
    events: list[tuple[str, str]] = field(default_factory=list)  # Warning (reason, message)
    phase: str | None = None  # the phase after this plan (for the metric)


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


# --- rendering -----------------------------------------------------------------------------


def render_executor(
    image: str,
    restore: Restore,
    backup: Backup,
    *,
    target: str,
    target_volume: str,
    user: AppUser,
    workload_ref: str | None,
    into_pods: str | None = None,
) -> tuple[dict, tuple[dict, ...]]:
    """The executor container and restik's volumes for it (names restik-restore-*).
    ``into_pods``: the label selector of the pods a dump Restore execs into (then there is
    no target volume: ``target`` and ``target_volume`` are None)."""
    env = _environment()
    run_as_user = user.user if user.user else 0
    run_as_group = user.group if user.user and user.group is not None else 0
    values = {
        "container_name": RESTORE_CONTAINER,
        "image": image,
        "restore_name": restore.name,
        "workload_ref": workload_ref,
        "into_pods": into_pods,
        "target": target,
        "repository": executor_repository(backup),
        "target_volume": target_volume,
        "backup": backup,
        "run_as_user": run_as_user,
        "run_as_group": run_as_group,
        "repo_volume": REPO_VOLUME,
        "repo_mount": REPO_MOUNT,
        "cache_volume": CACHE_VOLUME,
        "cache_mount": CACHE_MOUNT,
        "token_volume": TOKEN_VOLUME,
        "token_mount": TOKEN_MOUNT,
        "password_key": SECRET_PASSWORD_KEY,
        "secret_env": SECRET_ENV,
    }
    container = _to_data(env.get_template("restore.yaml.j2").render(values))
    repo = _repo_volume(backup)
    if repo is not None:
        repo["name"] = REPO_VOLUME
    volumes = tuple(
        _to_data(env.get_template("volumes.yaml.j2").render({**values, "repo_volume_source": repo}))
    )
    return container, volumes


def executor_repository(backup: Backup) -> str:
    """The repository restic opens in the executor's pod (sidecar.restic.repository_of):
    the given one, or the destination volume's mount + path."""
    if backup.repository:
        return backup.repository
    return REPO_MOUNT + (backup.destination_path or "/").rstrip("/")


def executor_hash(container: Mapping, volumes: Iterable[Mapping]) -> str:
    blob = json.dumps(
        {"container": container, "volumes": list(volumes)}, sort_keys=True, separators=(",", ":")
    )
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


# --- the pod template ------------------------------------------------------------------------


def restore_mark(obj: Mapping) -> str | None:
    """The pod template's restore annotation ("<restore>/<hash>"), if restik set it."""
    try:
        value = (obj["spec"]["template"].get("metadata") or {}).get("annotations") or {}
    except (KeyError, TypeError, AttributeError):
        return None
    mark = value.get(RESTORE_ANNOTATION) if isinstance(value, Mapping) else None
    return mark if isinstance(mark, str) else None


def inject_restore(obj: Mapping, container: dict, volumes: Iterable[dict], mark: str) -> dict:
    """A copy of ``obj`` with the init container first (before the application's own init
    containers) and its volumes; a user's init container named restik-restore, or a volume
    of restik-restore-*'s names without restik's annotation, is a WorkloadError."""
    out = copy.deepcopy(obj)
    template = pod_template(out)
    pod_spec = template["spec"]
    ours = restore_mark(out) is not None
    inits = pod_spec.get("initContainers") or []
    if not isinstance(inits, list):
        raise WorkloadError("spec.template.spec.initContainers: must be a list")
    names = [v["name"] for v in volumes]
    for i, c in enumerate(inits):
        if isinstance(c, Mapping) and c.get("name") == RESTORE_CONTAINER and not ours:
            raise WorkloadError(
                f"spec.template.spec.initContainers[{i}].name: an init container named "
                f"{RESTORE_CONTAINER!r} that restik did not add; rename it"
            )
    for i, v in enumerate(pod_spec.get("volumes") or ()):
        if v.get("name") in names and not ours:
            raise WorkloadError(
                f"spec.template.spec.volumes[{i}].name: a volume named {v['name']!r} that "
                "restik did not add; rename it"
            )
    kept = [c for c in inits if not (ours and c.get("name") == RESTORE_CONTAINER)]
    pod_spec["initContainers"] = [copy.deepcopy(container), *kept]
    own = [v for v in pod_spec.get("volumes") or () if not (ours and _restore_volume(v))]
    pod_spec["volumes"] = [*own, *(copy.deepcopy(v) for v in volumes)]
    meta = template.setdefault("metadata", {}) if template.get("metadata") is not None else None
    if meta is None:
        meta = template["metadata"] = {}
    meta.setdefault("annotations", {})
    if meta["annotations"] is None:
        meta["annotations"] = {}
    meta["annotations"][RESTORE_ANNOTATION] = mark
    return out


def remove_restore(obj: Mapping) -> dict:
    """A copy of ``obj`` without what inject_restore added (only where restik's annotation
    says it is restik's); empty lists and maps restik made go again."""
    out = copy.deepcopy(obj)
    if restore_mark(out) is None:
        return out
    template = pod_template(out)
    pod_spec = template["spec"]
    inits = [c for c in pod_spec.get("initContainers") or () if c.get("name") != RESTORE_CONTAINER]
    if inits:
        pod_spec["initContainers"] = inits
    else:
        pod_spec.pop("initContainers", None)
    volumes = [v for v in pod_spec.get("volumes") or () if not _restore_volume(v)]
    if volumes:
        pod_spec["volumes"] = volumes
    else:
        pod_spec.pop("volumes", None)
    meta: MutableMapping = template["metadata"]
    meta["annotations"].pop(RESTORE_ANNOTATION, None)
    if not meta["annotations"]:
        del meta["annotations"]
    if not meta:
        del template["metadata"]
    return out


def _restore_volume(volume: Mapping) -> bool:
    name = volume.get("name")
    return isinstance(name, str) and name.startswith(RESTORE_VOLUME_PREFIX)


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


# --- the plan --------------------------------------------------------------------------------


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


def expected_hosts(workload: Mapping, pods: Iterable[Mapping]) -> set[str] | None:
    """The hosts of a StatefulSet (its ordinals) or DaemonSet (its pods' nodes) that must
    each be restored; None for the single-host kinds."""
    kind = workload.get("kind")
    name = (workload.get("metadata") or {}).get("name")
    if kind == "StatefulSet":
        replicas = (workload.get("spec") or {}).get("replicas")
        replicas = replicas if isinstance(replicas, int) else 1
        return {f"{name}-{i}" for i in range(replicas)}
    if kind == "DaemonSet":
        return {
            str((p.get("spec") or {}).get("nodeName"))
            for p in pods
            if (p.get("spec") or {}).get("nodeName")
        }
    return None


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
) -> RestoreActions:
    """What to do for one Restore this cycle."""
    status = dict(raw.get("status") or {})
    acts = RestoreActions(phase=status.get("phase") or "Pending")
    try:
        restore = parse_restore(raw)
    except InvalidRestore as exc:
        return _set(acts, status, {"phase": "Invalid", "message": clip(str(exc))})
    pods = list(pods)
    new: dict = {}
    if status.get("target") != restore.target:
        new["target"] = restore.target
    finished = status.get("phase") in FINISHED and status.get("runID") == restore.run_id
    if finished:
        if workload is not None and restore_mark(workload) is not None:
            _take_out(acts, workload, restore)  # one rollout in, one out
        return _set(acts, status, new)
    if backup is None or isinstance(backup, InvalidBackup):
        why = (
            f"Backup {restore.namespace}/{restore.backup} not found"
            if backup is None
            else f"Backup {restore.namespace}/{restore.backup} is invalid: {backup}"
        )
        return _pending(acts, status, new, why)
    if backup.source_command is not None or restore.command is not None:
        from reconciler.controller.reconcilers.restore_dump import plan_dump  # it imports us

        return plan_dump(acts, raw, restore, backup, status, new, workload, pods, job, image, now)
    if restore.is_pvc:
        return _plan_claim(acts, raw, restore, backup, status, new, claim, pods, job, image, now)
    if workload is None:
        return _pending(
            acts, status, new, f"{restore.target} not found in namespace {restore.namespace}"
        )
    return _plan_workload(acts, raw, restore, backup, status, new, workload, pods, image, now)


def _plan_claim(acts, raw, restore, backup, status, new, claim, pods, job, image, now):
    if claim is None:
        why = f"PersistentVolumeClaim {restore.namespace}/{restore.claim_name} not found"
        return _pending(acts, status, new, why)
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
            new["conditions"] = _blocked(status, "ClaimInUse", message, now)
            return _pending(acts, status, new, message)
        if any(c.get("type") == "Blocked" for c in status.get("conditions") or ()):
            new["conditions"] = _blocked(status, "", "", now)
        acts.job = restore_job(raw, restore, backup, image)
        acts.rolebinding = restore_rolebinding(raw, ["default"])
        if status.get("phase") in (None, "Pending", "Invalid"):
            new["message"] = f"Job {acts.job['metadata']['name']} restores into the claim"
            new["phase"] = "Pending"
        return _set(acts, status, new)
    fail_with_job(acts, status, new, restore, job, now)
    return _set(acts, status, new)


def fail_with_job(acts, status: Mapping, new: dict, restore: Restore, job: Mapping, now) -> None:
    """The Restore Failed (an Event, the condition) when its Job failed: it ended before
    (or without) its executor writing the end: an image that cannot be pulled, a pod killed
    or evicted, a deadline. Failed, never run again."""
    failure = job_failure(job)
    if failure is not None:
        reason, detail = failure
        name = (job.get("metadata") or {}).get("name")
        message = clip(f"Job {name} failed ({reason}): {detail}")
        acts.events.append(("RestoreFailed", message))
        new.update(
            {
                "phase": "Failed",
                "message": message,
                "completionTime": rfc3339(now),
                "runID": restore.run_id,
                "conditions": with_condition(status, "Failed", "True", reason, message, now),
            }
        )


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


def _plan_workload(acts, raw, restore, backup, status, new, workload, pods, image, now):
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
            new["conditions"] = _blocked(status, "WorkloadMisconfigured", message, now)
            return _pending(acts, status, new, message)
        acts.workload = (ref, workload, after)
        if status.get("phase") in (None, "Pending", "Invalid"):
            new["phase"] = "Pending"
            new["message"] = (
                f"init container {RESTORE_CONTAINER} added to {ref}: its pods restart and "
                "restore before the application starts"
            )
        return _set(acts, status, new)
    # multi-host: the Restore succeeds when every expected host's entry did
    hosts = expected_hosts(workload, pods)
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
    return _set(acts, status, new)


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


def _blocked(status: Mapping, reason: str, message: str, now: datetime) -> list[dict]:
    """status.conditions with Blocked set (True with ``reason``), or False when no reason."""
    value = "True" if reason else "False"
    return with_condition(status, "Blocked", value, reason or "Unblocked", message, now)


def _pending(acts, status, new, message: str) -> RestoreActions:
    if status.get("phase") not in ("Running",):
        new["phase"] = "Pending"
    new["message"] = clip(message)
    return _set(acts, status, new)


def _set(acts: RestoreActions, status: Mapping, new: Mapping) -> RestoreActions:
    changed = {k: v for k, v in new.items() if status.get(k) != v}
    acts.status = changed or None
    acts.phase = changed.get("phase", status.get("phase")) or "Pending"
    return acts
