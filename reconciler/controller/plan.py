"""The pure planner: Backups + workloads in, the changes to make out. No I/O, no clock."""

from __future__ import annotations

import difflib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from reconciler.api.backup import Backup, InvalidBackup
from reconciler.api.hooks import exec_containers, runs_commands, template_spec
from reconciler.controller.pod import UNKNOWN_USER, app_user, metrics_port_clash
from reconciler.controller.podtemplate import (
    WorkloadError,
    WorkloadRef,
    config_label,
    controller_owner,
    has_sidecar,
    in_sync_fast,
    inject,
    pod_template,
    remove,
    volume_names,
    workload_ref,
)
from reconciler.controller.reconcilers.rbac import service_account
from reconciler.controller.render import Renderer
from reconciler.controller.rollout import needs_manual_restart

INJECT = "inject"
UPDATE = "update"
REMOVE = "remove"
# The reason of the warning on a workload whose label names no Backup: no Backup can carry
# it, so the controller reports it as an Event on the workload itself.
BACKUP_NOT_FOUND = "BackupNotFound"


@dataclass(frozen=True)
class Change:
    """One workload to rewrite: ``after`` is the whole desired object."""

    ref: WorkloadRef
    action: str
    backup: str | None
    before: Mapping = field(repr=False)
    after: Mapping = field(repr=False)

    @property
    def restart(self) -> bool:
        """Kinds whose pods do not roll on a template change need the controller's help."""
        return needs_manual_restart(self.after)


@dataclass(frozen=True)
class Problem:
    """Something a user must fix, reported on the Backup (or the workload if no Backup)."""

    namespace: str
    backup: str | None
    ref: WorkloadRef | None
    message: str
    severity: str = "error"
    reason: str = ""  # the Event reason of a warning
    uid: str | None = None  # the workload's, for an Event on it (see BACKUP_NOT_FOUND)

    def __str__(self) -> str:
        where = f"{self.ref.kind}/{self.ref.namespace}/{self.ref.name}" if self.ref else ""
        what = f"Backup {self.namespace}/{self.backup}" if self.backup else ""
        return ": ".join(p for p in (what, where, self.message) if p)


@dataclass
class Plan:
    changes: list[Change] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)
    # (namespace, backup name) -> sorted "Kind/name" of the workloads labeled for it
    selected: dict[tuple[str, str], list[str]] = field(default_factory=dict)
    # workloads that carry something of restik's as observed (before any change)
    injected: set[WorkloadRef] = field(default_factory=set)
    # (namespace, backup name) -> service accounts of its workloads (for its RoleBinding)
    service_accounts: dict[tuple[str, str], set[str]] = field(default_factory=dict)

    @property
    def empty(self) -> bool:
        return not self.changes

    def finish(self) -> None:
        """Sort what batches appended, so a Backup's status lists its workloads in order."""
        for refs in self.selected.values():
            refs.sort()


@dataclass(frozen=True)
class BackupIndex:
    """The Backups of one cycle by (namespace, name): built once, used for every batch."""

    valid: dict[tuple[str, str], Backup]
    invalid: dict[tuple[str, str], InvalidBackup]

    @classmethod
    def of(cls, backups: Iterable[Backup | InvalidBackup]) -> BackupIndex:
        valid: dict[tuple[str, str], Backup] = {}
        invalid: dict[tuple[str, str], InvalidBackup] = {}
        for b in backups:
            if isinstance(b, InvalidBackup):
                invalid[(b.namespace, b.name)] = b
            else:
                valid[b.key] = b
        return cls(valid, invalid)

    def new_plan(self) -> Plan:
        """An empty Plan that lists every Backup (with no workloads yet)."""
        result = Plan()
        for key in (*self.valid, *self.invalid):
            result.selected[key] = []
        return result


def plan(
    backups: Iterable[Backup | InvalidBackup],
    workloads: Iterable[Mapping],
    renderer: Renderer,
    *,
    remove_when_missing: bool = True,
) -> Plan:
    """Decide, for every workload, whether to inject, update or remove the sidecar.

    ``remove_when_missing``: a workload labeled for a Backup that does not exist loses its
    sidecar (the live controller: the Backup was deleted). Offline, the Backup may just be in
    another file, so the workload is left alone and the gap reported.
    An invalid Backup never removes anything: a typo must not stop running backups.
    """
    index = BackupIndex.of(backups)
    result = index.new_plan()
    plan_batch(index, workloads, renderer, result, remove_when_missing=remove_when_missing)
    result.finish()
    return result


def plan_batch(
    index: BackupIndex,
    workloads: Iterable[Mapping],
    renderer: Renderer,
    result: Plan,
    *,
    remove_when_missing: bool = True,
) -> None:
    """Plan a batch of workloads (e.g. one LIST page) into ``result``; call
    ``result.finish()`` after the last batch."""
    valid, invalid = index.valid, index.invalid
    for obj in workloads:
        try:
            ref = workload_ref(obj)
        except WorkloadError as exc:
            result.problems.append(Problem("", config_label(obj), None, str(exc)))
            continue
        try:
            change = plan_workload(obj, ref, valid, invalid, renderer, result, remove_when_missing)
        except WorkloadError as exc:
            label = config_label(obj)
            result.problems.append(Problem(ref.namespace, label, ref, str(exc)))
            continue
        if change is not None:
            result.changes.append(change)


def plan_workload(
    obj: Mapping,
    ref: WorkloadRef,
    valid: Mapping[tuple[str, str], Backup],
    invalid: Mapping[tuple[str, str], InvalidBackup],
    renderer: Renderer,
    result: Plan,
    remove_when_missing: bool,
) -> Change | None:
    label = config_label(obj)
    owner = controller_owner(obj)
    if owner is not None:
        # Its controller (a Deployment, an Argo Rollout) owns the pod template and would undo
        # any change, making a new ReplicaSet each time: restik never touches it.
        if label is not None:
            kind, name = owner
            message = (
                f"owned by {kind}/{name}, left unchanged: label the {kind}, not its {ref.kind}"
            )
            result.problems.append(
                Problem(ref.namespace, label, ref, message, "warning", reason="OwnedWorkload")
            )
        return None
    if label is None:
        try:
            owned = has_sidecar(obj)
        except WorkloadError:
            return None  # not ours to judge: an unlabeled workload without a usable template
        if not owned:
            return None
        result.injected.add(ref)
        return _removal(obj, ref, None)
    key = (ref.namespace, label)
    result.selected.setdefault(key, []).append(str(ref))
    result.service_accounts.setdefault(key, set()).add(service_account(obj))
    backup = valid.get(key)
    if backup is not None and shares_process_namespace(obj):
        if has_sidecar(obj):
            result.injected.add(ref)
        result.problems.append(Problem(ref.namespace, label, ref, SHARED_PROCESSES))
        return None
    clash = None
    if backup is not None and backup.metrics_enabled:
        clash = metrics_port_clash(obj, backup.metrics_port)
    app = app_user(obj, backup.source_volume) if backup is not None else UNKNOWN_USER
    if backup is not None and runs_commands(backup):
        # Reported, not blocking: hooks and commands are read by the sidecar at run time
        # (not in the hash), and each of its runs fails with the same message meanwhile.
        for error in exec_containers(backup, template_spec(obj), str(ref))[1]:
            result.problems.append(Problem(ref.namespace, label, ref, str(error)))
    # The steady state first: one hash comparison and done, before any full check.
    if (
        backup is not None
        and clash is None
        and in_sync_fast(
            obj, renderer.config_hash(backup, ref.kind, ref.name, app), backup.source_volume
        )
    ):
        result.injected.add(ref)
        return None
    template = pod_template(obj)  # checked once; the helpers below reuse it
    owned = has_sidecar(obj, template)
    if owned:
        result.injected.add(ref)
    if key in invalid:
        return None
    if backup is None:
        if remove_when_missing and owned:
            return _removal(obj, ref, label)  # its Backup was deleted: the removal says it
        message = f"Backup {ref.namespace}/{label} not found" + _did_you_mean(
            label, [name for ns, name in (*valid, *invalid) if ns == ref.namespace]
        )
        uid = (obj.get("metadata") or {}).get("uid")
        result.problems.append(
            Problem(ref.namespace, label, ref, message, "warning", BACKUP_NOT_FOUND, uid)
        )
        return None
    volumes = volume_names(obj, template)
    if backup.source_volume is not None and backup.source_volume not in volumes:
        has = ", ".join(sorted(v for v in volumes if isinstance(v, str))) or "none"
        result.problems.append(
            Problem(
                ref.namespace,
                label,
                ref,
                f"spec.backupSource.volumeName: {ref} has no volume {backup.source_volume!r} "
                f"(its volumes: {has})",
            )
        )
        return None
    if clash is not None:
        message = (
            f"spec.metricsPort: port {clash.port} is already used by container "
            f"{clash.container!r} of {ref}; set spec.metricsPort to a free port"
        )
        result.problems.append(Problem(ref.namespace, label, ref, message))
        return None
    action = UPDATE if owned else INJECT
    rendered = renderer.render(backup, ref.kind, ref.name, app)
    return Change(ref, action, label, obj, inject(obj, rendered))


SHARED_PROCESSES = (
    "spec.template.spec.shareProcessNamespace is true: every container of the pod could read "
    "the sidecar's environment (the repository password) from /proc; restik does not inject "
    "into such pods (and leaves a sidecar it injected before as it is). Turn it off, or back "
    "up the volume from a workload that does not share its process namespace"
)


def shares_process_namespace(obj: Mapping) -> bool:
    try:
        return obj["spec"]["template"]["spec"].get("shareProcessNamespace") is True
    except (KeyError, TypeError, AttributeError):
        return False  # a broken template: the checks below report it


def _did_you_mean(name: str, names: list[str]) -> str:
    """' (did you mean 'www'?)' for the closest existing Backup name, if one is close."""
    close = difflib.get_close_matches(name, names, n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""


def _removal(obj: Mapping, ref: WorkloadRef, label: str | None) -> Change:
    return Change(ref, REMOVE, label, obj, remove(obj))
