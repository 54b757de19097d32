"""`restik run`: the level-triggered loop. Observe (LIST), plan (pure), apply (one call each)."""

from __future__ import annotations

import gc
import logging
import sys
import time
from collections.abc import Mapping

from reconciler.api.backup import InvalidBackup, parse_backup
from reconciler.api.constants import (
    API_VERSION,
    CONFIG_LABEL,
    CRD_NAME,
    WORKLOAD_KINDS,
)
from reconciler.controller.observe import (
    established,
    is_labeled,
    labeled_or_injected,
    ref_of,
    selector_string,
    slim,
    with_kind,
)
from reconciler.controller.options import Settings
from reconciler.controller.patch import merge_patch
from reconciler.controller.plan import BackupIndex, plan_batch
from reconciler.controller.podtemplate import WorkloadRef, controller_owner
from reconciler.controller.reconcilers.rbac import (
    MANAGED_BY,
    MANAGER,
    desired_rolebinding,
    rolebinding_in_sync,
    rolebinding_name,
)
from reconciler.controller.reconcilers.status import (
    is_new_problem,
    new_warnings,
    status_patch,
    warning_event,
)
from reconciler.controller.render import DEFAULT_IMAGE, Renderer
from reconciler.controller.rollout import (
    needs_manual_restart,
    observe_rollout,
    plan_restart,
    rollouts_now,
)
from reconciler.controller.stats import CycleStats, ready_status
from reconciler.kube.client import ApiError
from reconciler.kube.events import now_rfc3339
from reconciler.kube.resource import BACKUPS, CRDS, EVENTS, PODS, ROLEBINDINGS, WORKLOADS
from reconciler.offline.diff import OfflineResult, render_diff
from reconciler.resources import crd_manifest

log = logging.getLogger("restik.controller")
COMPONENT = "restik-controller"


class Controller:
    """One instance per process; ``cycle()`` is one observe → plan → apply pass."""

    def __init__(self, kube, settings: Settings, out=None, metrics=None):
        self.kube = kube
        self.settings = settings
        self.out = out or sys.stdout
        self.metrics = metrics
        self.renderer = Renderer(image=settings.sidecar_image or DEFAULT_IMAGE)
        self.known_injected: set = set()
        self.pending_restarts: set = set()
        self.deferred: set = set()  # workloads whose update waits for --max-rollouts
        self.patched_now: set = set()  # workloads patched in this cycle
        self.first_cycle = True
        self.crd_ready = False
        self.own_writes: set[str] = set()
        self.last_resource_versions: dict[str, str] = {}
        # Asked before every write: with leader election, whether the Lease is still ours
        # (renewed within its deadline). A long cycle stops writing as soon as it is not.
        self.leading = lambda: True
        self._parsed: dict[tuple, tuple] = {}  # (namespace, name) -> (resourceVersion, parsed)

    # ---------------------------------------------------------------- paths
    @property
    def backups_path(self) -> str:
        return BACKUPS.path(self.settings.namespace)

    def workload_paths(self) -> list[tuple[str, str, str]]:
        return [
            (kind, res.api_version, res.path(self.settings.namespace))
            for kind, res in WORKLOADS.items()
        ]

    # ---------------------------------------------------------------- CRD
    def ensure_crd(self) -> bool:
        """Create the Backup CRD when absent and wait until it is Established."""

        path = CRDS.path(name=CRD_NAME)
        crd = self.kube.get_or_none(path)
        if crd is None:
            if self.settings.dry_run:
                log.info("dry run: would create CustomResourceDefinition %s", CRD_NAME)
                return False
            log.info("creating CustomResourceDefinition %s", CRD_NAME)
            try:
                crd = self.kube.create(CRDS.path(), crd_manifest())
            except ApiError as exc:
                if not exc.conflict:  # another replica created it first
                    raise
                crd = self.kube.get(path)
        deadline = time.monotonic() + 60
        while not established(crd):
            if time.monotonic() > deadline:
                raise TimeoutError(f"CustomResourceDefinition {CRD_NAME} is not Established")
            time.sleep(0.5)
            crd = self.kube.get(path)
        self.crd_ready = True
        return True

    # ---------------------------------------------------------------- observe
    def _pages(self, path: str, selector: str | None, rvs: dict[str, str]):
        """The LIST of ``path`` page by page; the first page's resourceVersion (the list's
        snapshot) is where a watch of ``path`` resumes."""
        for rv, items in self.kube.list_pages(path, selector, self.settings.page_size):
            rvs.setdefault(path, rv)
            yield items

    def _list(self, path: str, selector: str | None, rvs: dict[str, str]) -> list[dict]:
        return [item for page in self._pages(path, selector, rvs) for item in page]

    def _orphans(self, labeled: set, backups: list[dict]) -> list[dict]:
        """Workloads that had a sidecar but lost their label: one GET each, only on change."""
        candidates = set(self.known_injected)
        for b in backups:
            ns = b["metadata"].get("namespace")
            for entry in (b.get("status") or {}).get("workloads") or []:
                kind, _, name = str(entry).partition("/")
                if kind in WORKLOAD_KINDS and name:
                    candidates.add(WorkloadRef(kind, ns, name))
        found = []
        for ref in sorted(candidates - labeled):
            if self.settings.namespace and ref.namespace != self.settings.namespace:
                continue
            res = WORKLOADS[ref.kind]
            obj = self.kube.get_or_none(res.path(ref.namespace, ref.name))
            if obj is None:
                self.known_injected.discard(ref)
                continue
            found.append(with_kind(slim(obj), res.api_version, ref.kind))
        return found

    # ---------------------------------------------------------------- cycle
    def cycle(self) -> CycleStats:
        """One pass: LIST Backups, then per workload kind LIST and plan page by page (so only
        one page of objects is in memory at a time), LIST RoleBindings, then apply."""

        started = time.monotonic()
        stats = CycleStats()
        if not self.crd_ready:
            self.ensure_crd()
        rvs: dict[str, str] = {}
        gc_was_enabled = gc.isenabled()
        gc.disable()  # a cycle makes no reference cycles: no need to walk the heap mid-cycle
        try:
            raw_backups = []
            if self.crd_ready:
                try:
                    raw_backups = self._list(self.backups_path, None, rvs)
                except ApiError as exc:
                    if exc.not_found:
                        self.crd_ready = False  # the CRD was deleted: recreate next cycle
                    raise
            parsed = []
            raw_by_key = {}
            previous, self._parsed = self._parsed, {}  # forget deleted Backups
            for raw in raw_backups:
                with_kind(raw, API_VERSION, "Backup")
                item = self._parse(raw, previous)
                parsed.append(item)
                raw_by_key[(item.namespace, item.name)] = raw
            index = BackupIndex.of(parsed)
            result = index.new_plan()
            labeled: set = set()
            rollouts: dict = {}  # WorkloadRef -> Rollout of the labeled workloads
            # The first cycle after a start lists every workload, unselected and paged, to find
            # sidecars orphaned while no controller ran (label and Backup both gone by then):
            # restik's hash annotation marks them. Later cycles list labeled ones only and
            # follow unlabeling through known_injected and the Backups' status.workloads.
            selector = None if self.first_cycle else CONFIG_LABEL
            for kind, api_version, path in self.workload_paths():
                for page in self._pages(path, selector, rvs):
                    items = [with_kind(w, api_version, kind) for w in page]
                    del page
                    if selector is None:
                        items = [w for w in items if labeled_or_injected(w)]
                    for w in items:
                        if not is_labeled(w):
                            continue
                        ref = ref_of(w)
                        labeled.add(ref)
                        if controller_owner(w) is not None:
                            continue  # never changed, never restarted (plan reports it)
                        rollouts[ref] = observe_rollout(w)  # from its status, before _slim
                        if self.first_cycle and needs_manual_restart(w):
                            self.pending_restarts.add(ref)  # after a start: look for stale pods
                    stats.workloads += sum(1 for w in items if is_labeled(w))
                    items = [slim(w) for w in items]
                    plan_batch(index, items, self.renderer, result)
                    del items
            rb_path = ROLEBINDINGS.path(self.settings.namespace)
            rolebindings = {
                (rb["metadata"]["namespace"], rb["metadata"]["name"]): rb
                for rb in self._list(rb_path, f"{MANAGED_BY}={MANAGER}", rvs)
            }
            orphans = self._orphans(labeled, raw_backups)
            plan_batch(index, orphans, self.renderer, result)
            result.finish()
        finally:
            if gc_was_enabled:
                gc.enable()
        self.last_resource_versions = rvs
        self.first_cycle = False
        stats.backups = len(raw_backups)
        stats.planned = len(result.changes)
        self.known_injected |= result.injected

        if self.settings.dry_run:
            self._print_plan(result)
        else:
            self._apply_changes(result, stats)
            restarts = self._restart_stale(stats)
            self._sync_rolebindings(result, rolebindings, raw_by_key, parsed, stats)
            current = rollouts_now(
                result, rollouts, restarts, self.deferred, self.pending_restarts, self.patched_now
            )
            self._sync_status(result, raw_by_key, parsed, stats, current)
        if stats.lost_leadership:
            log.warning("leadership lost during the cycle: stopped writing")
        for p in result.problems:
            log.warning("%s", p)
        stats.ready = sum(1 for p in parsed if not isinstance(p, InvalidBackup))
        stats.not_ready = len(parsed) - stats.ready
        stats.seconds = time.monotonic() - started
        return stats

    def backup_index(self) -> BackupIndex:
        """The Backups as the last cycle parsed them: what a watch event's one workload is
        planned against between full cycles (reconciler.controller.single)."""
        return BackupIndex.of(item for _, item in self._parsed.values())

    def _parse(self, raw: dict, previous: dict):
        """parse_backup, once per resourceVersion of each Backup."""
        meta = raw.get("metadata") or {}
        key = (meta.get("namespace"), meta.get("name"))
        rv = meta.get("resourceVersion")
        hit = previous.get(key)
        if hit is not None and rv is not None and hit[0] == rv:
            item = hit[1]
        else:
            try:
                item = parse_backup(raw)
            except InvalidBackup as exc:
                item = exc
        self._parsed[key] = (rv, item)
        return item

    # ---------------------------------------------------------------- apply
    def _apply_changes(self, result, stats: CycleStats) -> None:

        updates = 0
        self.deferred = set()
        self.patched_now = set()
        for change in result.changes:
            if not self._may_write(stats):
                return
            ref = change.ref
            if change.action == "update":
                # An image upgrade changes every sidecar at once: roll at most max_rollouts
                # workloads per cycle, the rest in later cycles (they stay planned).
                limit = self.settings.max_rollouts
                if limit and updates >= limit:
                    stats.deferred += 1
                    self.deferred.add(ref)
                    continue
                updates += 1
            patch = merge_patch(change.before, change.after)
            patch.setdefault("metadata", {})["resourceVersion"] = change.before["metadata"].get(
                "resourceVersion"
            )
            path = WORKLOADS[ref.kind].path(ref.namespace, ref.name)
            try:
                answer = self.kube.merge_patch(path, patch)
            except ApiError as exc:
                if exc.conflict:
                    stats.conflicts += 1
                    log.info(
                        "%s %s/%s changed meanwhile; replanning next cycle",
                        ref.kind,
                        ref.namespace,
                        ref.name,
                    )
                elif exc.not_found:
                    log.info("%s %s/%s is gone", ref.kind, ref.namespace, ref.name)
                else:
                    stats.errors += 1
                    log.error(
                        "patching %s %s/%s failed: %s", ref.kind, ref.namespace, ref.name, exc
                    )
                continue
            self._note_write(answer)
            self.patched_now.add(ref)
            stats.patched += 1
            if self.metrics:
                self.metrics.patches.labels(change.action).inc()
            log.info(
                "%s restik sidecar: %s %s/%s", change.action, ref.kind, ref.namespace, ref.name
            )
            if change.action == "remove":
                self.known_injected.discard(ref)
            else:
                self.known_injected.add(ref)
            if change.restart:
                self.pending_restarts.add(ref)

    def _restart_stale(self, stats: CycleStats) -> dict:
        """Restart, through the Eviction API, stale pods of the workloads that do not roll
        by themselves (ReplicaSets, ReplicationControllers, OnDelete StatefulSets and
        DaemonSets): at most one pod per workload and cycle, only while every other pod is
        Ready (rollout.plan_restart decides). Returns WorkloadRef -> Rollout of each one looked
        at. A 429 (a PodDisruptionBudget says wait) is not an error: next cycle."""

        views: dict = {}
        budget = self.settings.max_restarts
        for ref in sorted(self.pending_restarts):
            if budget <= 0 or not self._may_write(stats):
                break
            try:
                owner = self.kube.get_or_none(WORKLOADS[ref.kind].path(ref.namespace, ref.name))
                selector = selector_string(owner, ref.kind) if owner is not None else None
                if selector is None:
                    self.pending_restarts.discard(ref)
                    continue
                owner.setdefault("kind", ref.kind)
                pods = self.kube.list(PODS.path(ref.namespace), label_selector=selector)
                decision = plan_restart(owner, pods.get("items") or [])
                views[ref] = decision.rollout()
                if decision.done:
                    self.pending_restarts.discard(ref)
                    continue
                if decision.evict is None:
                    log.info("restart of %s/%s waits: %s", ref.namespace, ref, decision.reason)
                    continue
                if not self.kube.evict(ref.namespace, decision.evict):
                    log.info(
                        "restart of %s/%s waits: a PodDisruptionBudget does not allow evicting "
                        "pod %s now",
                        ref.namespace,
                        ref,
                        decision.evict,
                    )
                    continue
                budget -= 1
                stats.restarted += 1
                if self.metrics:
                    self.metrics.restarts.inc()
                log.info("restarted (evicted) pod %s/%s of %s", ref.namespace, decision.evict, ref)
            except ApiError as exc:
                if not exc.not_found:
                    stats.errors += 1
                    log.error("restarting pods of %s/%s failed: %s", ref.namespace, ref, exc)
        return views

    def _sync_rolebindings(self, result, rolebindings: dict, raw_by_key, parsed, stats) -> None:
        for item in parsed:
            if not self._may_write(stats):
                return
            key = (item.namespace, item.name)
            raw = raw_by_key[key]
            live = rolebindings.get((item.namespace, rolebinding_name(item.name)))
            sas = result.service_accounts.get(key)
            path_ns = ROLEBINDINGS.path(item.namespace)
            try:
                if isinstance(item, InvalidBackup):
                    continue  # running sidecars keep their rights while the Backup is fixed
                if not sas:
                    if live is not None:
                        self.kube.delete(f"{path_ns}/{live['metadata']['name']}")
                        stats.status_writes += 1
                    continue
                desired = desired_rolebinding(raw, sas)
                if live is None:
                    self._note_write(self.kube.create(path_ns, desired))
                elif not rolebinding_in_sync(live, desired):
                    name = live["metadata"]["name"]
                    if live.get("roleRef") != desired["roleRef"]:
                        self.kube.delete(f"{path_ns}/{name}")  # roleRef is immutable
                        self._note_write(self.kube.create(path_ns, desired))
                    else:
                        desired["metadata"]["resourceVersion"] = live["metadata"]["resourceVersion"]
                        self._note_write(self.kube.replace(f"{path_ns}/{name}", desired))
                else:
                    continue
                stats.status_writes += 1
            except ApiError as exc:
                if exc.conflict:
                    stats.conflicts += 1
                else:
                    stats.errors += 1
                    log.error("RoleBinding for Backup %s/%s: %s", item.namespace, item.name, exc)

    def _sync_status(self, result, raw_by_key, parsed, stats, rollouts=None) -> None:
        now = now_rfc3339()
        for item in parsed:
            if not self._may_write(stats):
                return
            raw = raw_by_key[(item.namespace, item.name)]
            patch = status_patch(raw, item, result, now, rollouts)
            stats.readiness[(item.namespace, item.name)] = ready_status(patch or raw)
            if patch is None:
                continue
            noted = new_warnings(raw, result, (item.namespace, item.name))
            path = BACKUPS.path(item.namespace, item.name, "status")
            try:
                self._note_write(self.kube.merge_patch(path, patch))
                stats.status_writes += 1
                if is_new_problem(raw, patch):
                    ready = next(c for c in patch["status"]["conditions"] if c["type"] == "Ready")
                    event = warning_event(raw, ready["reason"], ready["message"], now, COMPONENT)
                    self.kube.create(EVENTS.path(item.namespace), event)
                for reason, message in noted:
                    event = warning_event(raw, reason, message, now, COMPONENT)
                    self.kube.create(EVENTS.path(item.namespace), event)
            except ApiError as exc:
                if exc.not_found:
                    continue
                stats.errors += 1
                log.error("status of Backup %s/%s: %s", item.namespace, item.name, exc)

    def _may_write(self, stats: CycleStats) -> bool:
        """False once leadership is lost: the rest of the cycle writes nothing."""
        if not stats.lost_leadership and not self.leading():
            stats.lost_leadership = True
        return not stats.lost_leadership

    def _note_write(self, answer: Mapping) -> None:
        rv = (
            (answer.get("metadata") or {}).get("resourceVersion")
            if isinstance(answer, Mapping)
            else None
        )
        if rv:
            self.own_writes.add(rv)
            if len(self.own_writes) > 10_000:
                self.own_writes.clear()

    # ---------------------------------------------------------------- dry run
    def _print_plan(self, result) -> None:
        text = render_diff(OfflineResult(result))
        self.out.write(text)
        self.out.flush()
