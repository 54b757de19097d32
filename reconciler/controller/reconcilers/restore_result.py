"""What a Restore's plan produces (pure): RestoreActions, the status fields it sets, and
the parts both the file/volume planner (restores.py) and the dump planner (restore_dump.py)
use: a failed or stuck Job."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from reconciler.api.restore import Restore
from reconciler.controller.podtemplate import WorkloadRef
from reconciler.controller.reconcilers.restore_job import job_failure
from reconciler.controller.reconcilers.restore_pods import stuck_job
from reconciler.kube.events import clip, rfc3339, with_condition


@dataclass
class RestoreActions:
    status: dict | None = None  # fields to merge into status (None: nothing to write)
    workload: tuple[WorkloadRef, Mapping, Mapping] | None = None  # (ref, before, after)
    job: dict | None = None  # to create
    rolebinding: dict | None = None  # to create when absent
    exec_rolebinding: dict | None = None  # the same, for a dump Restore's pods/exec
    events: list[tuple[str, str]] = field(default_factory=list)  # Warning (reason, message)
    phase: str | None = None  # the phase after this plan (for the metric)
    evict: tuple[WorkloadRef, str] | None = None  # a pod to restart for the init container
    delete_job: bool = False  # the Job is stuck for good: deleted with its pod
    restarting: bool = False  # pods of the workload still to be restarted by restik
    # Finished, its init container out of the template and no pod left to restart: while
    # the Restore stays as it is, nothing it reads can change the plan again (the controller
    # stops reading its target: reconciler/controller/restores.py).
    settled: bool = False


def fail_with_job(acts, status: Mapping, new: dict, restore: Restore, job: Mapping, pods, now):
    """The Restore Failed (an Event, the condition) when its Job failed: it ended before
    (or without) its executor writing the end: an image that cannot be pulled, a pod killed
    or evicted, a deadline. Failed, never run again. Else a Job pod (``pods``) that cannot
    start is reported, and after a while the Job is deleted (acts.delete_job)."""
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
        return
    acts.delete_job = stuck_job(acts.events, new, restore, status, job, pods, now)


def pending(acts, status, new, message: str) -> RestoreActions:
    if status.get("phase") not in ("Running",):
        new["phase"] = "Pending"
    new["message"] = clip(message)
    return set_status(acts, status, new)


def set_status(acts: RestoreActions, status: Mapping, new: Mapping) -> RestoreActions:
    changed = {k: v for k, v in new.items() if status.get(k) != v}
    acts.status = changed or None
    acts.phase = changed.get("phase", status.get("phase")) or "Pending"
    return acts
