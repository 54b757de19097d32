"""The Restores' part of a controller cycle: observe (one LIST of Restores, then each one's
Backup, target, pods and Job), plan (reconcilers/restores.py, pure), apply (one call each)."""

from __future__ import annotations

import logging
import secrets
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime

from reconciler.api.backup import InvalidBackup, parse_backup
from reconciler.api.constants import (
    API_VERSION,
    RESTORE_CONTAINER,
    RESTORE_KIND,
    WORKLOAD_KINDS,
)
from reconciler.api.restore import InvalidRestore, parse_restore
from reconciler.controller.observe import selector_string, with_kind
from reconciler.controller.patch import merge_patch
from reconciler.controller.reconcilers.restores import RestoreActions, job_name, plan_restore
from reconciler.kube.client import ApiError
from reconciler.kube.events import backup_event, rfc3339
from reconciler.kube.resource import EVENTS, JOBS, PODS, PVCS, RESTORES, ROLEBINDINGS, WORKLOADS

log = logging.getLogger("restik.controller")
COMPONENT = "restik-controller"


def sync_restores(controller, applier, raw_backups: Iterable[Mapping], stats) -> dict:
    """Plan and apply every Restore; (namespace, name) -> phase (for the metric)."""
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
    for raw in restores:
        with_kind(raw, API_VERSION, RESTORE_KIND)
        meta = raw["metadata"]
        key = (meta.get("namespace"), meta.get("name"))
        if not applier.may_write():
            break
        try:
            acts = _plan_one(controller, raw, backups)
            _apply(controller, applier, raw, acts, stats)
            phases[key] = acts.phase
        except ApiError as exc:
            if exc.conflict:
                stats.conflicts += 1
                continue
            stats.errors += 1
            log.error("Restore %s/%s: %s", key[0], key[1], exc)
    if controller.metrics is not None:
        controller.metrics.set_restore_phases(phases)
    return phases


def _plan_one(controller, raw: dict, backups: Mapping) -> RestoreActions:
    kube = controller.kube
    ns = raw["metadata"]["namespace"]
    backup = None
    workload = claim = job = None
    pods: list = []
    try:
        restore = parse_restore(raw)
    except InvalidRestore:
        restore = None
    if restore is not None:
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
        elif restore.workload_kind in WORKLOAD_KINDS:
            res = WORKLOADS[restore.workload_kind]
            workload = kube.get_or_none(res.path(ns, restore.workload_name))
            if workload is not None:
                with_kind(workload, res.api_version, restore.workload_kind)
                selector = selector_string(workload, restore.workload_kind)
                dump = restore.command is not None
                if selector and (restore.workload_kind == "DaemonSet" or dump):
                    pods = kube.list(PODS.path(ns), label_selector=selector).get("items") or []
                if dump:  # a dump Restore's Job execs into the pods (restore_dump.py)
                    job = kube.get_or_none(JOBS.path(ns, job_name(restore.name)))
    return plan_restore(
        raw,
        backup,
        workload=workload,
        claim=claim,
        pods=pods,
        job=job,
        image=controller.renderer.image,
        now=datetime.now(UTC),
    )


def _apply(controller, applier, raw: dict, acts: RestoreActions, stats) -> None:
    kube = controller.kube
    meta = raw["metadata"]
    ns, name = meta["namespace"], meta["name"]
    adds = acts.workload is not None and any(
        c.get("name") == RESTORE_CONTAINER
        for c in acts.workload[2]["spec"]["template"]["spec"].get("initContainers") or ()
    )
    for binding in (acts.rolebinding, acts.exec_rolebinding):
        if binding is None or not (adds or acts.job is not None):
            continue
        # before the pods that need it start; an existing one (an earlier cycle) is kept
        try:
            applier.note_write(kube.create(ROLEBINDINGS.path(ns), binding))
            stats.status_writes += 1
        except ApiError as exc:
            if not exc.conflict:
                raise
    if acts.workload is not None:
        ref, before, after = acts.workload
        patch = merge_patch(before, after)
        patch.setdefault("metadata", {})["resourceVersion"] = before["metadata"].get(
            "resourceVersion"
        )
        answer = kube.merge_patch(WORKLOADS[ref.kind].path(ref.namespace, ref.name), patch)
        applier.note_write(answer)
        stats.patched += 1
        log.info(
            "%s init container %s: %s %s/%s (Restore %s)",
            "added" if adds else "removed",
            RESTORE_CONTAINER,
            ref.kind,
            ref.namespace,
            ref.name,
            name,
        )
    if acts.job is not None:
        try:
            applier.note_write(kube.create(JOBS.path(ns), acts.job))
            log.info("created Job %s/%s for Restore %s", ns, acts.job["metadata"]["name"], name)
        except ApiError as exc:
            if not exc.conflict:
                raise
    now = rfc3339(datetime.now(UTC))
    for reason, message in acts.events:
        event = backup_event(
            raw,
            name=f"{name}.{secrets.token_hex(8)}",
            reason=reason,
            message=message,
            warning=True,
            now=now,
            component=COMPONENT,
            kind=RESTORE_KIND,
        )
        kube.create(EVENTS.path(ns), event)
    if acts.status:
        patch = {
            "metadata": {"resourceVersion": meta.get("resourceVersion")},
            "status": acts.status,
        }
        applier.note_write(kube.merge_patch(RESTORES.path(ns, name, "status"), patch))
        stats.status_writes += 1
