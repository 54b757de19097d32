"""Observe: one cycle's LISTs (paged) turned into a Snapshot of what the reconcilers need,
and what the controller keeps of the objects it LISTs."""

from __future__ import annotations

import gc
import json
import logging
import sys
from collections.abc import Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from reconciler.api.backup import Backup, InvalidBackup, parse_backup
from reconciler.api.constants import API_VERSION, CONFIG_LABEL, HASH_ANNOTATION
from reconciler.controller.options import Settings
from reconciler.controller.plan import BackupIndex, Plan, plan_batch
from reconciler.controller.podtemplate import WorkloadRef, controller_owner
from reconciler.controller.reconcilers.rbac import MANAGED_BY, MANAGER
from reconciler.controller.render import Renderer
from reconciler.controller.rollout import (
    Rollout,
    needs_manual_restart,
    observe_rollout,
    owner_uids,
    restart_view,
    slim_pod,
)
from reconciler.kube.client import ApiError, JsonObjects, Kube, ListItems, continued
from reconciler.kube.resource import BACKUPS, PODS, ROLEBINDINGS, ROLES, WORKLOADS

log = logging.getLogger("restik.controller")


class BackupsNotServed(ApiError):
    """The Backups LIST answered 404: the CRD was deleted (the controller recreates it)."""


@dataclass
class Snapshot:
    """What one cycle observed, and the plan made from it (the planner runs page by page
    during the LISTs, so only one page of workloads is in memory at a time)."""

    raw_backups: dict[tuple[str, str], dict] = field(default_factory=dict)
    parsed: list[Backup | InvalidBackup] = field(default_factory=list)
    plan: Plan = field(default_factory=Plan)
    workloads: int = 0  # labeled workloads listed
    labeled: set[WorkloadRef] = field(default_factory=set)
    # WorkloadRef -> Rollout of each labeled workload (from its status, before slim)
    rollouts: dict[WorkloadRef, Rollout] = field(default_factory=dict)
    # (namespace, name) -> restik's RoleBindings (a JsonObjects after a LIST)
    rolebindings: Mapping[tuple[str, str], dict] = field(default_factory=dict)
    # (namespace, name) -> restik's Roles (one per Backup: reconcilers.rbac.desired_role)
    roles: Mapping[tuple[str, str], dict] = field(default_factory=dict)
    # workloads whose pods restik restarts: pending from earlier cycles, or (after a start)
    # every one that needs it; candidates: those and the ones planned to be patched now
    pending_restarts: set[WorkloadRef] = field(default_factory=set)
    restart_candidates: set[WorkloadRef] = field(default_factory=set)
    restart_owners: dict[WorkloadRef, dict] = field(default_factory=dict)  # rollout.restart_view
    pods: dict[str, list[dict]] = field(default_factory=dict)  # owner uid -> its pods (slim)
    pod_namespaces: set[str] = field(default_factory=set)  # namespaces whose pods were listed
    gone: set[WorkloadRef] = field(default_factory=set)  # GET answered 404: forget them
    errors: int = 0  # failed reads that did not stop the cycle (a pod LIST)
    resource_versions: dict[str, str] = field(default_factory=dict)  # path -> LIST's rv


def slim(obj: dict) -> dict:
    """Drop what the planner never reads and a patch never touches: at 10,000 workloads the
    status, managedFields and last-applied annotations are most of the memory."""
    obj.pop("status", None)
    meta = obj.get("metadata")
    if isinstance(meta, dict):
        meta.pop("managedFields", None)
        meta.pop("annotations", None)
    return obj


def is_labeled(obj: dict) -> bool:
    return CONFIG_LABEL in (obj["metadata"].get("labels") or {})


def labeled_or_injected(obj: dict) -> bool:
    """What the unselected first LIST keeps: labeled workloads and any that carry restik's
    hash annotation (a possible orphan); the rest is dropped at once."""
    if is_labeled(obj):
        return True
    try:
        annotations = obj["spec"]["template"]["metadata"]["annotations"]
    except (KeyError, TypeError):
        return False
    return isinstance(annotations, dict) and HASH_ANNOTATION in annotations


def ref_of(obj: dict):
    """A listed object's WorkloadRef (API objects are well-formed: no checks needed)."""
    meta = obj["metadata"]
    return WorkloadRef(obj["kind"], meta.get("namespace") or "default", meta.get("name"))


def with_kind(obj: dict, api_version: str, kind: str) -> dict:
    # LIST items carry no kind/apiVersion; the planner and the diffs need them.
    obj.setdefault("apiVersion", api_version)
    obj.setdefault("kind", kind)
    return obj


def established(crd: Mapping) -> bool:
    for cond in (crd.get("status") or {}).get("conditions") or []:
        if cond.get("type") == "Established" and cond.get("status") == "True":
            return True
    return False


class Observer:
    """The cycle's reads: LIST Backups (parsed once per resourceVersion), LIST every workload
    kind and plan page by page, LIST restik's RoleBindings, GET the few workloads that lost
    their label, and LIST the pods of each namespace where restik restarts pods (one paged
    LIST per namespace, matched to their owners by ownerReferences uid)."""

    def __init__(self, kube: Kube, settings: Settings, renderer: Renderer):
        self.kube = kube
        self.settings = settings
        self.renderer = renderer
        self._parsed: dict[tuple, tuple] = {}  # (namespace, name) -> (resourceVersion, parsed)

    def backups(self) -> list:
        """The Backups (parsed, or InvalidBackup) of the last observe."""
        return [item for _, item in self._parsed.values()]

    def workload_paths(self) -> list[tuple[str, str, str]]:
        return [
            (kind, res.api_version, res.path(self.settings.namespace))
            for kind, res in WORKLOADS.items()
        ]

    def observe(
        self,
        *,
        with_backups: bool,
        first_cycle: bool,
        known_injected: set[WorkloadRef],
        pending_restarts: set[WorkloadRef],
    ) -> Snapshot:
        snap = Snapshot()
        gc_was_enabled = gc.isenabled()
        gc.disable()  # a cycle makes no reference cycles: no need to walk the heap mid-cycle
        try:
            self._observe(snap, with_backups, first_cycle, known_injected, pending_restarts)
        finally:
            if gc_was_enabled:
                gc.enable()
        return snap

    def _observe(self, snap, with_backups, first_cycle, known_injected, pending) -> None:
        rvs = snap.resource_versions
        raw_backups = []
        if with_backups:
            try:
                raw_backups = self._list(BACKUPS.path(self.settings.namespace), None, rvs)
            except ApiError as exc:
                if exc.not_found:
                    raise BackupsNotServed(exc.status, exc.reason, exc.message) from exc
                raise
        previous, self._parsed = self._parsed, {}  # forget deleted Backups
        for raw in raw_backups:
            with_kind(raw, API_VERSION, "Backup")
            item = self._parse(raw, previous)
            snap.parsed.append(item)
            snap.raw_backups[(item.namespace, item.name)] = raw
        index = BackupIndex.of(snap.parsed)
        result = snap.plan = index.new_plan()
        snap.pending_restarts = set(pending)
        # The first cycle after a start lists every workload, unselected and paged, to find
        # sidecars orphaned while no controller ran (label and Backup both gone by then):
        # restik's hash annotation marks them. Later cycles list labeled ones only and
        # follow unlabeling through known_injected (restik's own record, never a status).
        selector = None if first_cycle else CONFIG_LABEL
        desired: dict = {}  # DaemonSet ref -> status.desiredNumberScheduled (dropped by slim)
        for kind, api_version, path in self.workload_paths():
            for page in self._pages(path, selector, rvs):
                planned = len(result.changes)
                items = self._workloads(
                    page, kind, api_version, selector, first_cycle, snap, desired
                )
                del page  # each item is decoded, planned and dropped before the next
                plan_batch(index, items, self.renderer, result)
                del items
                self._keep_restart_views(snap, result.changes[planned:], desired)
        rb_path = ROLEBINDINGS.path(self.settings.namespace)
        snap.rolebindings = self._kept(rb_path, f"{MANAGED_BY}={MANAGER}", rvs)
        roles_path = ROLES.path(self.settings.namespace)
        snap.roles = self._kept(roles_path, f"{MANAGED_BY}={MANAGER}", rvs)
        orphans = self._orphans(snap, known_injected | pending)
        planned = len(result.changes)
        plan_batch(index, orphans, self.renderer, result)
        self._keep_restart_views(snap, result.changes[planned:], desired)
        result.finish()
        planned = {c.ref for c in result.changes if c.restart}
        snap.restart_candidates = snap.pending_restarts | planned
        if not self.settings.dry_run:  # a dry run restarts nothing: no pods to look at
            self._list_pods(snap)

    @staticmethod
    def _workloads(page, kind, api_version, selector, first_cycle, snap, desired) -> Iterator:
        """A page's workloads for the planner, one at a time (a lazy page decodes each as it
        is read): what the snapshot keeps of each (its rollout, a restart view) is taken
        before slim drops the status."""
        for w in page:
            with_kind(w, api_version, kind)
            meta = w.get("metadata")
            if isinstance(meta, dict) and isinstance(meta.get("namespace"), str):
                # one string per namespace, not per workload, in the refs the cycle keeps
                meta["namespace"] = sys.intern(meta["namespace"])
            if selector is None and not labeled_or_injected(w):
                continue
            if is_labeled(w):
                snap.workloads += 1
                ref = ref_of(w)
                snap.labeled.add(ref)
                if controller_owner(w) is None:  # else never changed (plan reports it)
                    snap.rollouts[ref] = observe_rollout(w)  # from its status, before slim
                    if first_cycle and needs_manual_restart(w):
                        snap.pending_restarts.add(ref)  # after a start: look for stale pods
                    if ref in snap.pending_restarts:
                        snap.restart_owners[ref] = restart_view(w)
                    elif w["kind"] == "DaemonSet" and needs_manual_restart(w):
                        desired[ref] = (w.get("status") or {}).get("desiredNumberScheduled")
            yield slim(w)

    @staticmethod
    def _keep_restart_views(snap: Snapshot, changes: list, desired: dict) -> None:
        """What plan_restart needs of the workloads a change will make restik restart: their
        objects as listed (slim keeps what it reads but a DaemonSet's desired pod count)."""
        for change in changes:
            if change.restart and change.ref not in snap.restart_owners:
                view = restart_view(change.before)
                if desired.get(change.ref) is not None:
                    view["status"] = {"desiredNumberScheduled": desired[change.ref]}
                snap.restart_owners[change.ref] = view

    def _pages(self, path: str, selector: str | None, rvs: dict[str, str]) -> Iterator[list]:
        """The LIST of ``path`` page by page; the first page's resourceVersion (the list's
        snapshot) is where a watch of ``path`` resumes."""
        for rv, items in self.kube.list_pages(path, selector, self.settings.page_size):
            rvs.setdefault(path, rv)
            yield items

    def _list(self, path: str, selector: str | None, rvs: dict[str, str]) -> list[dict]:
        """A LIST whose items the snapshot keeps: each page decoded in one pass (its items
        then share their keys' strings, as with json.loads)."""
        items: list[dict] = []
        for page in self._pages(path, selector, rvs):
            items += page.decoded() if isinstance(page, ListItems) else page
        return items

    def _kept(self, path: str, selector: str | None, rvs: dict[str, str]) -> JsonObjects:
        """A LIST kept until the reconcilers read it, by (namespace, name), as JSON text."""
        kept = JsonObjects()
        for page in self._pages(path, selector, rvs):
            if isinstance(page, ListItems):
                pairs = page.with_texts()
            else:
                pairs = ((o, json.dumps(o, separators=(",", ":"))) for o in page)
            for obj, text in pairs:
                kept.keep((obj["metadata"].get("namespace"), obj["metadata"]["name"]), text)
        return kept

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

    def _orphans(self, snap: Snapshot, known: set) -> list[dict]:
        """Workloads that had a sidecar (or have pods to restart) but lost their label: one
        GET each, only on change. Only restik's own record says which: what it injected or
        saw injected (after a start or a new leadership, the unselected first LIST finds them
        by the hash annotation). Never a Backup's status.workloads: any pod bound to the
        sidecar role may write it."""
        found = []
        for ref in sorted(known - snap.labeled):
            if self.settings.namespace and ref.namespace != self.settings.namespace:
                continue
            res = WORKLOADS[ref.kind]
            obj = self.kube.get_or_none(res.path(ref.namespace, ref.name))
            if obj is None:
                snap.gone.add(ref)
                continue
            obj = with_kind(obj, res.api_version, ref.kind)
            snap.restart_owners[ref] = restart_view(obj)  # in case restik restarts its pods
            found.append(slim(obj))
        return found

    def _list_pods(self, snap: Snapshot) -> None:
        """One paged pod LIST per namespace with restart candidates, unselected (pods carry
        their workload's selector labels, not restik's): each pod kept, slim, under the uid of
        the candidate that owns it; every other pod dropped at once."""
        owners = {
            snap.restart_owners[ref]["metadata"]["uid"]
            for ref in snap.restart_candidates
            if ref in snap.restart_owners
        }
        namespaces = {
            ref.namespace for ref in snap.restart_candidates if ref in snap.restart_owners
        }
        paths = [(ns, PODS.path(ns)) for ns in sorted(namespaces)]
        limit = self.settings.page_size
        # Each namespace's first page is asked for while the one before is read (after a
        # start that is a LIST per namespace: their round trips would add up).
        with ThreadPoolExecutor(max_workers=1, thread_name_prefix="restik-pods") as ahead:
            pending = ahead.submit(self.kube.list, paths[0][1], None, limit) if paths else None
            for i, (ns, path) in enumerate(paths):
                current = pending
                if i + 1 < len(paths):
                    pending = ahead.submit(self.kube.list, paths[i + 1][1], None, limit)
                try:
                    for _, page in continued(self.kube, path, None, limit, current.result()):
                        for pod in page:
                            for uid in owner_uids(pod):
                                if uid in owners:
                                    snap.pods.setdefault(uid, []).append(slim_pod(pod))
                                    break
                except ApiError as exc:
                    snap.errors += 1
                    log.error("listing the pods of namespace %s failed: %s", ns, exc)
                    continue
                snap.pod_namespaces.add(ns)


def selector_string(obj: Mapping, kind: str) -> str | None:
    selector = (obj.get("spec") or {}).get("selector")
    if not isinstance(selector, Mapping):
        return None
    if kind == "ReplicationController":
        labels, expressions = selector, []
    else:
        labels = selector.get("matchLabels") or {}
        expressions = selector.get("matchExpressions") or []
    parts = [f"{k}={v}" for k, v in sorted(labels.items())]
    for expr in expressions:
        key, op, values = expr.get("key"), expr.get("operator"), expr.get("values") or []
        if op == "In":
            parts.append(f"{key} in ({','.join(values)})")
        elif op == "NotIn":
            parts.append(f"{key} notin ({','.join(values)})")
        elif op == "Exists":
            parts.append(key)
        elif op == "DoesNotExist":
            parts.append(f"!{key}")
    return ",".join(parts) or None
