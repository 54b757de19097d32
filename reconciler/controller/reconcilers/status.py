"""What the controller writes on a Backup: its status and, on a new problem, a Warning Event."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

from reconciler.api.backup import Backup, InvalidBackup
from reconciler.api.constants import CONFIG_LABEL
from reconciler.controller.actions import CreateEvent, PatchStatus
from reconciler.controller.podtemplate import WorkloadRef
from reconciler.controller.rollout import PENDING
from reconciler.kube.events import clip, warning_event

if TYPE_CHECKING:  # plan imports reconcilers.rbac, which makes its Events here
    from reconciler.controller.plan import Plan

READY = "Ready"


def ready_condition(
    parsed: Backup | InvalidBackup,
    plan: Plan,
    key: tuple[str, str],
    rollout: list[dict] | None = None,
) -> tuple[str, str, str]:
    """(status, reason, message) of the Ready condition. ``rollout``: the Backup's
    status.rollout entries; Ready is True only when every workload runs the current sidecar."""
    if isinstance(parsed, InvalidBackup):
        return ("False", "InvalidSpec", clip("; ".join(map(str, parsed.errors))))
    problems = [
        p for p in plan.problems if (p.namespace, p.backup) == key and p.severity == "error"
    ]
    if problems:
        text = "; ".join(f"{p.ref}: {p.message}" if p.ref else p.message for p in problems)
        return ("False", "WorkloadMisconfigured", clip(text))
    selected = plan.selected.get(key, [])
    notes = "".join(f"; {text}" for _, text in warnings(plan, key))
    behind = [e for e in rollout or () if not e["current"]]
    if behind:
        reason = "Pending" if any(e["state"] == PENDING for e in behind) else "RollingOut"
        done = len(rollout) - len(behind)
        text = "; ".join(f"{e['workload']}: {e.get('message') or e['state']}" for e in behind)
        message = f"{done}/{len(rollout)} workload(s) run the current sidecar; {text}{notes}"
        return ("False", reason, clip(message))
    if not selected:
        return (
            "True",
            "NoWorkloads",
            clip(f"no workload is labeled {CONFIG_LABEL}={key[1]}{notes}"),
        )
    return ("True", "Ready", clip(f"{len(selected)} workload(s) backed up{notes}"))


def warnings(plan: Plan, key: tuple[str, str]) -> list[tuple[str, str]]:
    """The Backup's warnings as (reason, text), one per distinct message with the workloads
    it concerns: every old ReplicaSet of a Deployment that carries the label makes one
    "ReplicaSet/a, ReplicaSet/b: owned by Deployment/www, ..." rather than one each."""
    groups: dict[tuple[str, str], list[str]] = {}
    for p in plan.problems:
        if (p.namespace, p.backup) == key and p.severity == "warning":
            groups.setdefault((p.reason or "Warning", p.message), []).append(str(p.ref))
    return [
        (reason, f"{', '.join(sorted(refs))}: {message}")
        for (reason, message), refs in sorted(groups.items(), key=lambda g: g[0][1])
    ]


def new_warnings(raw: Mapping, plan: Plan, key: tuple[str, str]) -> list[tuple[str, str]]:
    """Warnings not yet in the Backup's Ready message: each gets one Warning Event."""
    old = (_condition(raw.get("status") or {}, READY) or {}).get("message") or ""
    return [(reason, text) for reason, text in warnings(plan, key) if text not in old]


def rollout_entries(plan: Plan, key: tuple[str, str], rollouts: Mapping) -> list[dict]:
    """status.rollout: one entry per workload of the Backup that has restik's sidecar."""
    out = []
    for name in plan.selected.get(key, []):
        kind, _, workload = name.partition("/")
        rollout = rollouts.get(WorkloadRef(kind, key[0], workload))
        if rollout is not None:
            out.append(rollout.entry(name))
    return out


def status_patch(
    raw: Mapping,
    parsed: Backup | InvalidBackup,
    plan: Plan,
    now: str,
    rollouts: Mapping | None = None,
) -> dict | None:
    """The merge patch for the fields the controller owns, or None when they are current.
    ``rollouts``: WorkloadRef -> rollout.Rollout; None leaves status.rollout out."""
    meta = raw.get("metadata") or {}
    key = (meta.get("namespace") or "default", meta.get("name"))
    status = raw.get("status") if isinstance(raw.get("status"), Mapping) else {}
    rollout = None if rollouts is None else rollout_entries(plan, key, rollouts)
    cond_status, reason, message = ready_condition(parsed, plan, key, rollout)
    old = _condition(status, READY) or {}
    unchanged = (old.get("status"), old.get("reason"), old.get("message")) == (
        cond_status,
        reason,
        message,
    )
    generation = meta.get("generation")
    condition = {
        "type": READY,
        "status": cond_status,
        "reason": reason,
        "message": message,
        "lastTransitionTime": old.get("lastTransitionTime")
        if unchanged and old.get("status") == cond_status
        else now,
    }
    if generation is not None:
        condition["observedGeneration"] = generation
    workloads = list(plan.selected.get(key, []))
    desired = {"conditions": [condition], "workloads": workloads}
    if rollout is not None:
        desired["rollout"] = rollout
    if generation is not None:
        desired["observedGeneration"] = generation
    current = {k: status.get(k) for k in desired}
    others = [c for c in status.get("conditions") or [] if c.get("type") != READY]
    desired["conditions"] = others + desired["conditions"]
    if current == desired:
        return None
    return {"status": desired}


def is_new_problem(raw: Mapping, patch: Mapping | None) -> bool:
    """A Warning Event goes out once per change of a failing Ready condition, not per cycle."""
    if not patch:
        return False
    new = _condition(patch["status"], READY)
    if new is None or new["status"] != "False" or new["reason"] == "RollingOut":
        return False  # a rollout in progress is normal, not a problem to announce
    old = _condition(raw.get("status") or {}, READY) or {}
    return (old.get("status"), old.get("reason"), old.get("message")) != (
        new["status"],
        new["reason"],
        new["message"],
    )


def _condition(status: Mapping, kind: str) -> dict | None:
    for cond in status.get("conditions") or []:
        if isinstance(cond, Mapping) and cond.get("type") == kind:
            return dict(cond)
    return None


def reconcile_status(
    raw_backups: Mapping[tuple[str, str], Mapping],
    parsed: Sequence[Backup | InvalidBackup],
    plan: Plan,
    now: str,
    component: str,
    rollouts: Mapping | None = None,
) -> list[PatchStatus | CreateEvent]:
    """Per Backup whose controller-owned status fields are not current: a status patch
    (conditional on the Backup's resourceVersion as listed), then
    its Warning Events (a new failing Ready condition, each new warning), which go out only
    once the patch lands: the patched message is what says they were sent."""
    actions: list = []
    for item in parsed:
        raw = raw_backups[(item.namespace, item.name)]
        patch = status_patch(raw, item, plan, now, rollouts)
        if patch is None:
            continue
        # status.conditions is shared with the sidecars (LastRunSucceeded) and a merge patch
        # replaces it whole: written only over the status it was computed from, or a 409.
        rv = (raw.get("metadata") or {}).get("resourceVersion")
        if rv:
            patch = {"metadata": {"resourceVersion": rv}, **patch}
        write = PatchStatus(item.namespace, item.name, patch)
        actions.append(write)
        about = f"Backup {item.namespace}/{item.name}"
        if is_new_problem(raw, patch):
            ready = next(c for c in patch["status"]["conditions"] if c["type"] == READY)
            event = warning_event(raw, ready["reason"], ready["message"], now, component)
            actions.append(CreateEvent(event, about, ready["reason"], write.key))
        for reason, message in new_warnings(raw, plan, (item.namespace, item.name)):
            event = warning_event(raw, reason, message, now, component)
            actions.append(CreateEvent(event, about, reason, write.key))
    return actions
