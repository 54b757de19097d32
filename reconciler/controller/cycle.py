"""`restik run`'s cycle: observe (paged LISTs → a Snapshot) → reconcilers (pure: snapshot →
actions) → apply (the only writer). The Controller keeps what outlives one cycle."""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass

from reconciler.api.backup import InvalidBackup
from reconciler.controller.actions import Action, CreateEvent, Evict, PatchStatus, PatchWorkload
from reconciler.controller.apply import Applier
from reconciler.controller.observe import BackupsNotServed, Observer, Snapshot, established
from reconciler.controller.options import Settings
from reconciler.controller.plan import REMOVE, BackupIndex
from reconciler.controller.reconcilers.rbac import reconcile_rbac
from reconciler.controller.reconcilers.restarts import Restarts, reconcile_restarts
from reconciler.controller.reconcilers.status import reconcile_status
from reconciler.controller.reconcilers.workload_warnings import (
    reconcile_workload_warnings,
    warning_keys,
)
from reconciler.controller.reconcilers.workloads import deferred, reconcile_workloads
from reconciler.controller.render import DEFAULT_IMAGE, Renderer
from reconciler.controller.restores import sync_restores
from reconciler.controller.rollout import rollouts_now
from reconciler.controller.stats import CycleStats, ready_status
from reconciler.kube.client import ApiError
from reconciler.kube.events import now_rfc3339
from reconciler.kube.resource import BACKUPS, CRDS
from reconciler.offline.diff import OfflineResult, render_diff
from reconciler.resources import crd_manifests

log = logging.getLogger("restik.controller")
COMPONENT = "restik-controller"


@dataclass
class Decisions:
    """One cycle's actions, in the order they are applied, and what the status was told."""

    patches: list[PatchWorkload]
    deferred: set  # WorkloadRefs whose planned update waits for --max-rollouts
    restarts: Restarts
    actions: list[Action]
    readiness: dict  # (namespace, name) -> the Ready condition's status after the cycle


def decide(
    snapshot: Snapshot,
    settings: Settings,
    now: str,
    reported: frozenset | set = frozenset(),
    nonce: str = "",
) -> Decisions:
    """Every reconciler over one snapshot (pure): workload patches, evictions, RoleBindings,
    each Backup's status with its Warning Events, then Warning Events on workloads whose
    label names no Backup (``reported``: those this process has sent already)."""
    plan = snapshot.plan
    patches = reconcile_workloads(plan, settings.max_rollouts)
    restarts = reconcile_restarts(snapshot, patches)
    rbac = reconcile_rbac(
        snapshot.raw_backups,
        snapshot.parsed,
        plan,
        snapshot.rolebindings,
        snapshot.roles,
        now,
        COMPONENT,
    )
    waiting = deferred(plan, patches)
    pending = snapshot.restart_candidates - restarts.done
    current = rollouts_now(
        plan, snapshot.rollouts, restarts.rollouts, waiting, pending, {a.ref for a in patches}
    )
    status = reconcile_status(snapshot.raw_backups, snapshot.parsed, plan, now, COMPONENT, current)
    patched_status = {(a.namespace, a.name): a.patch for a in status if isinstance(a, PatchStatus)}
    readiness = {
        key: ready_status(patched_status.get(key) or raw)
        for key, raw in snapshot.raw_backups.items()
    }
    warnings = reconcile_workload_warnings(plan, reported, now, COMPONENT, nonce)
    actions = [*patches, *restarts.actions, *rbac, *status, *warnings]
    return Decisions(patches, waiting, restarts, actions, readiness)


class Controller:
    """One instance per process; ``cycle()`` is one observe → reconcile → apply pass."""

    def __init__(self, kube, settings: Settings, out=None, metrics=None):
        self.kube = kube
        self.settings = settings
        self.out = out or sys.stdout
        self.metrics = metrics
        self.renderer = Renderer(image=settings.sidecar_image or DEFAULT_IMAGE)
        self.observer = Observer(kube, settings, self.renderer)
        self.known_injected: set = set()
        self.pending_restarts: set = set()
        self.restore_restarts = False  # a Restore waits for restik to restart pods
        # (namespace, name) -> (uid, resourceVersion) of the Restores done with (restores.py)
        self.settled_restores: dict[tuple, tuple] = {}
        self.reported_warnings: set = set()  # keys of the workload warnings sent (in memory)
        self.first_cycle = True
        self.crd_ready = False
        self.own_writes: set[str] = set()
        self.last_resource_versions: dict[str, str] = {}
        # Asked before every write: with leader election, whether the Lease is still ours
        # (renewed within its deadline). A long cycle stops writing as soon as it is not.
        self.leading = lambda: True

    @property
    def backups_path(self) -> str:
        return BACKUPS.path(self.settings.namespace)

    def workload_paths(self) -> list[tuple[str, str, str]]:
        return self.observer.workload_paths()

    def ensure_crd(self) -> bool:
        """Create restik's CRDs (Backup, Restore) when absent and wait until they are
        Established. (The one write outside `apply`: it happens before any cycle, and a
        failure stops the cycle.)"""
        backups_crd, *others = crd_manifests()
        if not self._ensure_one_crd(backups_crd):
            return False
        for manifest in others:
            self._ensure_one_crd(manifest)  # a dry run only reports an absent one
        self.crd_ready = True
        return True

    def _ensure_one_crd(self, manifest: Mapping) -> bool:
        name = manifest["metadata"]["name"]
        path = CRDS.path(name=name)
        crd = self.kube.get_or_none(path)
        if crd is None:
            if self.settings.dry_run:
                log.info("dry run: would create CustomResourceDefinition %s", name)
                return False
            log.info("creating CustomResourceDefinition %s", name)
            try:
                crd = self.kube.create(CRDS.path(), manifest)
            except ApiError as exc:
                if not exc.conflict:  # another replica created it first
                    raise
                crd = self.kube.get(path)
        deadline = time.monotonic() + 60
        while not established(crd):
            if time.monotonic() > deadline:
                raise TimeoutError(f"CustomResourceDefinition {name} is not Established")
            time.sleep(0.5)
            crd = self.kube.get(path)
        return True

    def cycle(self) -> CycleStats:
        """One pass: observe, decide (pure), apply; or print the plan with --dry-run."""
        started = time.monotonic()
        stats = CycleStats()
        if not self.crd_ready:
            self.ensure_crd()
        self.observer.kube = self.kube  # a caller may point the controller elsewhere
        try:
            snapshot = self.observer.observe(
                with_backups=self.crd_ready,
                first_cycle=self.first_cycle,
                known_injected=self.known_injected,
                pending_restarts=self.pending_restarts,
            )
        except BackupsNotServed:
            self.crd_ready = False  # the CRD was deleted: recreate next cycle
            raise
        self.last_resource_versions = snapshot.resource_versions
        self.first_cycle = False
        plan = snapshot.plan
        stats.backups = len(snapshot.raw_backups)
        stats.workloads = snapshot.workloads
        stats.planned = len(plan.changes)
        stats.errors += snapshot.errors
        self.known_injected |= plan.injected
        self.known_injected -= snapshot.gone

        if self.settings.dry_run:
            self._print_plan(plan)
        else:
            now = now_rfc3339()
            nonce = f"{time.time_ns():x}"  # unique Event names within one second
            decisions = decide(snapshot, self.settings, now, self.reported_warnings, nonce)
            stats.deferred = len(decisions.deferred)
            stats.readiness = decisions.readiness
            for ref, reason in decisions.restarts.waiting.items():
                log.info("restart of %s/%s waits: %s", ref.namespace, ref, reason)
            applier = Applier(
                self.kube,
                stats,
                leading=self.leading,
                own_writes=self.own_writes,
                metrics=self.metrics,
                max_evictions=self.settings.max_restarts,
            )
            applied = applier.apply(decisions.actions)
            self._remember(snapshot, decisions, applied)
            evicted = {a.owner for a in applied if isinstance(a, Evict)}
            backups = snapshot.raw_backups.values()
            sync_restores(self, applier, backups, stats, snapshot.rolebindings, evicted)
        if stats.lost_leadership:
            log.warning("leadership lost during the cycle: stopped writing")
        for p in plan.problems:
            log.warning("%s", p)
        stats.ready = sum(1 for p in snapshot.parsed if not isinstance(p, InvalidBackup))
        stats.not_ready = len(snapshot.parsed) - stats.ready
        stats.seconds = time.monotonic() - started
        return stats

    def backup_index(self) -> BackupIndex:
        """The Backups as the last cycle parsed them: what a watch event's one workload is
        planned against between full cycles (reconciler.controller.single)."""
        return BackupIndex.of(self.observer.backups())

    def _remember(self, snapshot: Snapshot, decisions: Decisions, applied: list) -> None:
        """What the next cycles need of this one: which workloads carry a sidecar, whose
        pods restik still has to restart (a planned patch that did not land is replanned,
        not pending), and which workload warnings were sent."""
        pending = set(snapshot.pending_restarts)
        for action in applied:
            if isinstance(action, PatchWorkload):
                if action.action == REMOVE:
                    self.known_injected.discard(action.ref)
                else:
                    self.known_injected.add(action.ref)
                if action.restart:
                    pending.add(action.ref)
        self.pending_restarts = pending - decisions.restarts.done - snapshot.gone
        sent = {a.remember for a in applied if isinstance(a, CreateEvent) and a.remember}
        # forget what is fixed: the same mistake made again later is reported again
        self.reported_warnings = (self.reported_warnings | sent) & set(warning_keys(snapshot.plan))

    def _print_plan(self, plan) -> None:
        text = render_diff(OfflineResult(plan))
        self.out.write(text)
        self.out.flush()
