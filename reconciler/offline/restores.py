"""Restores in `restik diff` / `restik inject`: a Restore among the manifests renders its init
container into its target workload, as the controller would, so a build-time GitOps setup
can restore too (commit the Restore, render, apply; remove it once it Succeeded)."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime

from reconciler.api.backup import Backup
from reconciler.api.constants import API_VERSION, RESTORE_KIND
from reconciler.api.restore import InvalidRestore, parse_restore
from reconciler.controller.plan import Change, Plan
from reconciler.controller.podtemplate import WorkloadError, WorkloadRef, workload_ref
from reconciler.controller.reconcilers.restores import plan_restore

RESTORE = "restore"


def is_restore(obj: Mapping) -> bool:
    return obj.get("kind") == RESTORE_KIND and obj.get("apiVersion") == API_VERSION


def plan_offline_restores(
    restores: list[tuple[str, Mapping]],
    backups: list,
    workloads: list[Mapping],
    result: Plan,
    image: str,
    errors: list[str],
    warnings: list[str],
) -> None:
    """Add (or extend) the workload Changes of ``result`` with each Restore's init container.
    A Restore of a PVC target needs a cluster (a Job): reported as a warning, not rendered."""
    valid = {(b.namespace, b.name): b for b in backups if isinstance(b, Backup)}
    changes = {c.ref: i for i, c in enumerate(result.changes)}
    by_ref: dict[WorkloadRef, Mapping] = {}
    for obj in workloads:
        try:
            by_ref[workload_ref(obj)] = obj
        except WorkloadError:
            continue
    for where, raw in restores:
        try:
            restore = parse_restore(raw)
        except InvalidRestore as exc:
            errors.append(f"{where}: {exc}")
            continue
        if restore.is_pvc:
            warnings.append(
                f"{where}: Restore {restore.namespace}/{restore.name}: a PVC target is restored "
                "by a Job the controller creates; nothing to render"
            )
            continue
        ref = WorkloadRef(restore.workload_kind, restore.namespace, restore.workload_name)
        backup = valid.get((restore.namespace, restore.backup))
        original = by_ref.get(ref)
        if backup is None or original is None:
            missing = f"Backup {restore.backup}" if backup is None else str(ref)
            warnings.append(
                f"{where}: Restore {restore.namespace}/{restore.name}: {missing} is not among "
                "the inputs; left alone"
            )
            continue
        index = changes.get(ref)
        current = result.changes[index].after if index is not None else original
        acts = plan_restore(
            {**raw, "status": {}}, backup, workload=current, image=image, now=datetime.now(UTC)
        )
        if (acts.status or {}).get("phase") == "Invalid":  # e.g. spec.command vs the Backup
            errors.append(f"{where}: {acts.status['message']}")
            continue
        if restore.command is not None:
            warnings.append(
                f"{where}: Restore {restore.namespace}/{restore.name}: a dump (spec.command) is "
                "piped into the running pods by a Job the controller creates; nothing to render"
            )
            continue
        for _reason, message in acts.events:
            errors.append(f"{where}: Restore {restore.namespace}/{restore.name}: {message}")
        if acts.workload is None:
            continue
        after = acts.workload[2]
        if index is None:
            change = Change(ref, RESTORE, None, original, after)
            changes[ref] = len(result.changes)
            result.changes.append(change)
        else:
            old = result.changes[index]
            result.changes[index] = Change(ref, old.action, old.backup, old.before, after)
