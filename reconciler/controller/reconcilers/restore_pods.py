"""What the pods of a Restore's target tell the planner (pure): a Job's pod stuck before
its executor starts (an image that cannot be pulled, a pod no node takes), a host whose
restoring pod died after it wrote Running, and which pod of a workload that does not roll
by itself to restart next so that the init container runs."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta

from reconciler.api.constants import RESTORE_CONTAINER
from reconciler.controller.reconcilers.restore_executor import RESTORE_ANNOTATION, restore_mark
from reconciler.controller.rollout import Restart, is_ready, needs_manual_restart, plan_restart
from reconciler.kube.events import clip, rfc3339, with_condition

# A Job's pod stuck this long (image pull, scheduling) fails the Restore: the kubelet
# retries a pull with a back-off of at most 5 minutes and a cluster autoscaler adds a node
# within minutes, so 10 minutes is two full pull retries and a scale-up.
STUCK_AFTER = timedelta(minutes=10)
IMAGE_REASONS = ("ErrImagePull", "ImagePullBackOff", "InvalidImageName", "ErrImageNeverPull")
IMAGE_PULL = "ImagePullFailed"  # the condition's reason for all of IMAGE_REASONS
UNSCHEDULABLE = "Unschedulable"
STUCK_REASONS = (IMAGE_PULL, UNSCHEDULABLE)


@dataclass(frozen=True)
class Stuck:
    reason: str  # IMAGE_PULL or UNSCHEDULABLE
    message: str  # the pod, the kubelet's or scheduler's reason and message


def stuck_pod(pods: Iterable[Mapping]) -> Stuck | None:
    """The first (by name) Pending pod whose container cannot start for want of its image,
    or that the scheduler reports unschedulable (PodScheduled False); None otherwise."""
    for pod in sorted(pods, key=_name):
        status = pod.get("status") or {}
        if status.get("phase") not in (None, "Pending") or _meta(pod).get("deletionTimestamp"):
            continue
        for c in [
            *(status.get("initContainerStatuses") or ()),
            *(status.get("containerStatuses") or ()),
        ]:
            waiting = ((c or {}).get("state") or {}).get("waiting") or {}
            if waiting.get("reason") in IMAGE_REASONS:
                detail = waiting.get("message") or f"image {c.get('image')!r}"
                message = f"pod {_name(pod)}: {waiting['reason']}: {detail}"
                return Stuck(IMAGE_PULL, message)
        for cond in status.get("conditions") or ():
            if cond.get("type") == "PodScheduled" and cond.get("status") == "False":
                why = cond.get("reason") or UNSCHEDULABLE
                detail = cond.get("message") or "no node fits the pod"
                return Stuck(UNSCHEDULABLE, f"pod {_name(pod)}: {why}: {detail}")
    return None


@dataclass(frozen=True)
class DeadHost:
    host: str
    pod: str
    reason: str
    message: str


def dead_hosts(status: Mapping, run_id: str | None, pods: Iterable[Mapping]) -> list[DeadHost]:
    """The hosts of this run whose entry says Running while the pod that wrote it is gone,
    ended (Failed, Unknown: its node lost) or has its restik-restore container terminated
    with an error and not running again. A pod that still runs the container is never
    judged: its executor writes the end itself."""
    by_name = {_name(p): p for p in pods}
    out = []
    for entry in status.get("hosts") or ():
        if not isinstance(entry, Mapping) or entry.get("runID") != run_id:
            continue
        name = entry.get("pod")
        if entry.get("phase") != "Running" or not isinstance(name, str):
            continue
        host = str(entry.get("host"))
        pod = by_name.get(name)
        if pod is None:
            out.append(DeadHost(host, name, "PodGone", f"pod {name} is gone (deleted)"))
            continue
        died = _died(pod)
        if died is not None:
            out.append(DeadHost(host, name, died[0], f"pod {name}: {died[1]}"))
    return out


def _died(pod: Mapping) -> tuple[str, str] | None:
    status = pod.get("status") or {}
    for c in status.get("initContainerStatuses") or ():
        if (c or {}).get("name") != RESTORE_CONTAINER:
            continue
        state = c.get("state") or {}
        if "running" in state:
            return None
        ended = state.get("terminated")
        if ended is None and "waiting" in state:
            ended = (c.get("lastState") or {}).get("terminated")
        if ended and ended.get("exitCode") not in (0, None):
            reason = ended.get("reason") or "Error"
            detail = f"{RESTORE_CONTAINER} terminated ({reason}, exit code {ended['exitCode']})"
            if ended.get("message"):
                detail += f": {ended['message']}"
            return ("OOMKilled" if reason == "OOMKilled" else "ExecutorFailed"), detail
    phase = status.get("phase")
    if phase in ("Failed", "Unknown"):
        reason = status.get("reason") or ("NodeLost" if phase == "Unknown" else "PodFailed")
        return reason, status.get("message") or f"phase {phase}"
    return None


def stuck_job(events: list, new: dict, restore, status: Mapping, job: Mapping, pods, now) -> bool:
    """A Job's pod that cannot start (its image, no node): Blocked with the kubelet's or
    scheduler's reason and one Warning Event (into ``events``, the status fields into
    ``new``); Failed after STUCK_AFTER, and then True: the Job is to be deleted."""
    stuck = stuck_pod(pods)
    blocked = _condition(status, "Blocked")
    is_stuck = blocked.get("status") == "True" and blocked.get("reason") in STUCK_REASONS
    if stuck is None:
        if is_stuck:  # it started after all
            new["conditions"] = blocked_conditions(status, "", "", now)
        return False
    name = (job.get("metadata") or {}).get("name")
    message = clip(f"Job {name} cannot start its {stuck.message}")
    since = _parse_time(blocked.get("lastTransitionTime")) if is_stuck else None
    if since is not None and now - since >= STUCK_AFTER:
        minutes = int(STUCK_AFTER.total_seconds() // 60)
        message = clip(
            f"Job {name} could not start its pod for {minutes} minutes ({stuck.message}); "
            "it is deleted: fix the cause and create a new Restore (or change spec.runID)"
        )
        events.append(("RestoreFailed", message))
        new.update(
            {
                "phase": "Failed",
                "message": message,
                "completionTime": rfc3339(now),
                "runID": restore.run_id,
                "conditions": with_condition(
                    {**status, "conditions": blocked_conditions(status, "", "", now)},
                    "Failed",
                    "True",
                    stuck.reason,
                    message,
                    now,
                ),
            }
        )
        return True
    if not (is_stuck and blocked.get("reason") == stuck.reason):
        events.append((stuck.reason, message))
    new["conditions"] = blocked_conditions(status, stuck.reason, message, now)
    new["message"] = message
    return False


def _condition(status: Mapping, ctype: str) -> dict:
    for cond in status.get("conditions") or ():
        if isinstance(cond, Mapping) and cond.get("type") == ctype:
            return dict(cond)
    return {}


def _parse_time(value: object) -> datetime | None:
    if not isinstance(value, str):
        return None
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None


def fail_hosts(events: list, new: dict, restore, status: Mapping, dead: list[DeadHost], now):
    """Hosts whose pod died after it wrote Running: Failed with why, and so the Restore
    (its Warning Event into ``events``, the status fields into ``new``)."""
    why = {d.host: d for d in dead}
    stamp = rfc3339(now)
    hosts = []
    for entry in status.get("hosts") or ():
        d = why.get(entry.get("host")) if isinstance(entry, Mapping) else None
        if d is not None and entry.get("runID") == restore.run_id:
            entry = {**entry, "phase": "Failed", "completionTime": stamp, "error": d.message}
        hosts.append(entry)
    first = dead[0]
    message = clip(
        "; ".join(f"host {d.host}: {d.message} while it restored" for d in dead)
        + ": the volume may hold part of the snapshot; create a new Restore (or change "
        "spec.runID) to restore again"
    )
    events.append(("RestoreFailed", message))
    new.update(
        {
            "phase": "Failed",
            "hosts": hosts,
            "message": message,
            "completionTime": stamp,
            "runID": restore.run_id,
            "conditions": with_condition(status, "Failed", "True", first.reason, message, now),
        }
    )


def blocked_conditions(status: Mapping, reason: str, message: str, now: datetime) -> list[dict]:
    """status.conditions with Blocked set (True with ``reason``), or False when no reason."""
    value = "True" if reason else "False"
    return with_condition(status, "Blocked", value, reason or "Unblocked", message, now)


def restore_restart(
    workload: Mapping, pods: Iterable[Mapping], restore: str, finished: bool
) -> Restart | None:
    """For a workload whose pods do not roll by themselves (ReplicaSet,
    ReplicationController, OnDelete StatefulSet/DaemonSet): which pod to restart now, with
    the rules of the sidecar's restarts (rollout.plan_restart: one pod at a time, only
    while the others are Ready). While the Restore runs, every pod without the template's
    restore annotation goes once, so that each one runs the init container; once it ended
    and the init container is out again, only a pod stuck in this Restore's init container
    (not Ready) goes. None for the other kinds."""
    if not needs_manual_restart(workload):
        return None
    pods = list(pods)
    mark = restore_mark(workload)
    if not finished:
        if mark is None or mark.split("/", 1)[0] != restore:
            return None

        def stale(pod: Mapping) -> bool:
            return _pod_mark(pod) != mark

    else:
        if mark is not None:
            return None

        def stale(pod: Mapping) -> bool:
            own = (_pod_mark(pod) or "").split("/", 1)[0] == restore
            return own and not is_ready(pod)

    return plan_restart(workload, pods, needs=stale)


def _pod_mark(pod: Mapping) -> str | None:
    return (_meta(pod).get("annotations") or {}).get(RESTORE_ANNOTATION)


def _meta(pod: Mapping) -> Mapping:
    return pod.get("metadata") or {}


def _name(pod: Mapping) -> str:
    return str(_meta(pod).get("name"))
