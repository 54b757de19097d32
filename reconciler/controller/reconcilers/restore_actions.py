"""A Restore's plan (reconcilers/restores.py) as the writes `apply` carries out (pure): the
executor's RoleBinding when absent, the init container's patch of the workload, the
eviction of a pod that does not restart by itself, the Job, the status patch, then the
Warning Events, which need the status patch (its message says they were sent)."""

from __future__ import annotations

from collections.abc import Mapping

from reconciler.api.constants import RESTORE_CONTAINER, RESTORE_KIND
from reconciler.controller.actions import (
    JOB,
    ROLEBINDING,
    Action,
    CreateEvent,
    CreateObject,
    DeleteObject,
    Evict,
    PatchRestoreInit,
    PatchRestoreStatus,
)
from reconciler.controller.patch import merge_patch
from reconciler.controller.reconcilers.restores import RestoreActions, job_name
from reconciler.controller.rollout import needs_manual_restart
from reconciler.kube.events import warning_event
from reconciler.kube.resource import JOBS, ROLEBINDINGS

RESTORE_IN = "restore-in"
RESTORE_OUT = "restore-out"


def adds_init_container(acts: RestoreActions) -> bool:
    """Whether the plan's workload patch puts restik-restore in (else it takes it out)."""
    if acts.workload is None:
        return False
    spec = acts.workload[2]["spec"]["template"]["spec"]
    return any(c.get("name") == RESTORE_CONTAINER for c in spec.get("initContainers") or ())


def restore_actions(
    raw: Mapping,
    acts: RestoreActions,
    rolebindings: Mapping[tuple[str, str], Mapping],
    now: str,
    component: str,
) -> list[Action]:
    """The writes of one Restore's plan, in order. The RoleBinding goes first (the pods
    that run the executor need it) and only when it is not there yet; the Job and an
    eviction need the writes they depend on to land."""
    meta = raw["metadata"]
    ns, name = meta["namespace"], meta["name"]
    out: list[Action] = []
    binding = None
    adds = adds_init_container(acts)
    for wanted in (acts.rolebinding, acts.exec_rolebinding):  # exec: a dump Restore's
        if wanted is None or not (adds or acts.job is not None or acts.evict):
            continue
        rb = wanted["metadata"]["name"]
        if (ns, rb) not in rolebindings:
            needs = binding.key if binding is not None else None  # the Job needs both
            binding = CreateObject(
                ROLEBINDINGS.path(ns), wanted, f"RoleBinding {ns}/{rb}", ROLEBINDING, needs
            )
            out.append(binding)
    patch_key = None
    if acts.workload is not None:
        ref, before, after = acts.workload
        patch = merge_patch(before, after)
        patch.setdefault("metadata", {})["resourceVersion"] = before["metadata"].get(
            "resourceVersion"
        )
        write = PatchRestoreInit(
            ref,
            RESTORE_IN if adds else RESTORE_OUT,
            patch,
            restart=needs_manual_restart(before),
            needs=binding.key if binding is not None else None,
        )
        patch_key = write.key
        out.append(write)
    if acts.evict is not None:
        # its replacement runs the executor: the RoleBinding first when it was missing
        needs = patch_key or (binding.key if binding is not None else None)
        out.append(Evict(acts.evict[0], acts.evict[1], needs=needs))
    if acts.job is not None:
        job = acts.job["metadata"]["name"]
        needs = binding.key if binding is not None else None
        out.append(CreateObject(JOBS.path(ns), acts.job, f"Job {ns}/{job}", JOB, needs))
    status_key = None
    if acts.status:
        body = {"metadata": {"resourceVersion": meta.get("resourceVersion")}, "status": acts.status}
        status = PatchRestoreStatus(ns, name, body)
        status_key = status.key
        out.append(status)
    if acts.delete_job:
        job = job_name(name)
        out.append(
            DeleteObject(
                JOBS.path(ns, job), {"propagationPolicy": "Background"}, f"Job {ns}/{job}", JOB
            )
        )
    for reason, message in acts.events:
        event = warning_event(raw, reason, message, now, component, RESTORE_KIND)
        out.append(CreateEvent(event, f"Restore {ns}/{name}", reason, status_key))
    return out
