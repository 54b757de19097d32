"""`restik run`: the level-triggered loop. Observe (LIST), plan (pure), apply (one call each)."""

from __future__ import annotations

import argparse
import gc
import logging
import os
import random
import signal
import sys
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime

from reconciler.api.constants import (
    API_VERSION,
    CONFIG_LABEL,
    CRD_NAME,
    HASH_ANNOTATION,
    WORKLOAD_KINDS,
)
from reconciler.kube.resource import BACKUPS, CRDS, EVENTS, PODS, ROLEBINDINGS, WORKLOADS
from reconciler.logs import env_default

log = logging.getLogger("restik.controller")
EXIT_OK, EXIT_CHANGES, EXIT_ERROR = 0, 1, 2
COMPONENT = "restik-controller"


def _seconds(text: str) -> float:
    from reconciler.api.schedule import ScheduleError, parse_duration

    try:
        value = parse_duration(text).total_seconds()
    except ScheduleError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    if value <= 0:
        raise argparse.ArgumentTypeError("must be positive")
    return value


def _bool_env(name: str, default: bool) -> bool:
    value = env_default(name)
    if value is None:
        return default
    return value.strip().lower() in ("1", "true", "yes", "on")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of `restik run`; each also reads a RESTIK_* environment variable."""
    from reconciler.logs import add_logging_arguments

    add_logging_arguments(parser)
    parser.add_argument("--once", action="store_true", help="run one cycle and exit")
    parser.add_argument(
        "--interval",
        type=_seconds,
        default=_seconds(env_default("INTERVAL", "30s")),
        help="time between cycles, e.g. 30s, 2m (RESTIK_INTERVAL, default 30s)",
    )
    parser.add_argument(
        "--dry-run",
        action="store_true",
        default=_bool_env("DRY_RUN", False),
        help="print the planned patches as a diff and write nothing "
        "(exit 0 none, 1 planned, 2 error)",
    )
    parser.add_argument(
        "--namespace",
        default=env_default("NAMESPACE") or None,
        help="only this namespace (RESTIK_NAMESPACE, default all namespaces)",
    )
    parser.add_argument("--kubeconfig", default=None, help="kubeconfig file (default $KUBECONFIG)")
    parser.add_argument(
        "--sidecar-image",
        default=env_default("SIDECAR_IMAGE"),
        help="image of the injected sidecar (RESTIK_SIDECAR_IMAGE)",
    )
    parser.add_argument(
        "--metrics-port",
        type=int,
        default=int(env_default("METRICS_PORT", "0")),
        help="serve /metrics and /healthz on this port, 0 = off (RESTIK_METRICS_PORT)",
    )
    parser.add_argument(
        "--metrics-address",
        default=env_default("METRICS_ADDRESS", "0.0.0.0"),  # noqa: S104 - probes reach the pod IP
        help="address for /metrics and /healthz (RESTIK_METRICS_ADDRESS, default 0.0.0.0)",
    )
    parser.add_argument(
        "--max-restarts",
        type=int,
        default=int(env_default("MAX_RESTARTS", "5")),
        help="stale ReplicaSet/ReplicationController pods deleted per cycle (RESTIK_MAX_RESTARTS)",
    )
    parser.add_argument(
        "--max-rollouts",
        type=int,
        default=int(env_default("MAX_ROLLOUTS", "10")),
        help="workloads whose sidecar is updated per cycle (an image upgrade rolls them in "
        "batches; new injections and removals are not limited; 0 = no limit) "
        "(RESTIK_MAX_ROLLOUTS, default 10)",
    )
    parser.add_argument(
        "--page-size",
        type=int,
        default=int(env_default("PAGE_SIZE", "500")),
        help="objects per LIST page, as client-go's pager (RESTIK_PAGE_SIZE, default 500)",
    )
    parser.add_argument(
        "--leader-elect",
        action=argparse.BooleanOptionalAction,
        default=_bool_env("LEADER_ELECT", bool(os.environ.get("POD_NAMESPACE"))),
        help="hold a Lease so that only one replica acts (default on inside a cluster)",
    )
    parser.add_argument(
        "--lease-namespace",
        default=env_default("LEASE_NAMESPACE")
        or os.environ.get("POD_NAMESPACE")
        or "restik-system",
        help="namespace of the leader-election Lease (default $POD_NAMESPACE)",
    )


@dataclass(frozen=True)
class Settings:
    once: bool = False
    interval: float = 30.0
    dry_run: bool = False
    namespace: str | None = None
    kubeconfig: str | None = None
    sidecar_image: str | None = None
    metrics_port: int = 0
    metrics_address: str = "0.0.0.0"  # noqa: S104
    max_restarts: int = 5
    max_rollouts: int = 10
    page_size: int = 500
    leader_elect: bool = False
    lease_namespace: str = "restik-system"
    identity: str = ""

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> Settings:
        import socket

        return cls(
            once=args.once,
            interval=args.interval,
            dry_run=args.dry_run,
            namespace=args.namespace,
            kubeconfig=args.kubeconfig,
            sidecar_image=args.sidecar_image,
            metrics_port=args.metrics_port,
            metrics_address=args.metrics_address,
            max_restarts=args.max_restarts,
            max_rollouts=args.max_rollouts,
            page_size=args.page_size,
            leader_elect=args.leader_elect and not args.once and not args.dry_run,
            lease_namespace=args.lease_namespace,
            identity=os.environ.get("POD_NAME") or socket.gethostname(),
        )


def now_rfc3339() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass
class CycleStats:
    backups: int = 0
    workloads: int = 0
    patched: int = 0
    restarted: int = 0
    deferred: int = 0
    conflicts: int = 0
    errors: int = 0
    status_writes: int = 0
    planned: int = 0
    ready: int = 0
    not_ready: int = 0
    lost_leadership: bool = False
    seconds: float = 0.0
    # (namespace, name) -> the Ready condition's status ("True"/"False") after this cycle
    readiness: dict = field(default_factory=dict)

    def summary(self) -> str:
        return (
            f"backups={self.backups} workloads={self.workloads} patched={self.patched} "
            f"restarted={self.restarted} deferred={self.deferred} conflicts={self.conflicts} "
            f"errors={self.errors} "
            f"in {self.seconds:.2f}s"
        )


class Controller:
    """One instance per process; ``cycle()`` is one observe → plan → apply pass."""

    def __init__(self, kube, settings: Settings, out=None, metrics=None):
        from reconciler.render import DEFAULT_IMAGE, Renderer

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
        from reconciler.kube.client import ApiError
        from reconciler.resources import crd_manifest

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
        while not _established(crd):
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
        from reconciler.workload import WorkloadRef

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
            found.append(_with_kind(_slim(obj), res.api_version, ref.kind))
        return found

    # ---------------------------------------------------------------- cycle
    def cycle(self) -> CycleStats:
        """One pass: LIST Backups, then per workload kind LIST and plan page by page (so only
        one page of objects is in memory at a time), LIST RoleBindings, then apply."""
        from reconciler.api.backup import InvalidBackup, parse_backup
        from reconciler.kube.client import ApiError
        from reconciler.plan import BackupIndex, plan_batch
        from reconciler.rbac import MANAGED_BY, MANAGER
        from reconciler.rollout import needs_manual_restart, observe_rollout
        from reconciler.workload import controller_owner

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
                _with_kind(raw, API_VERSION, "Backup")
                item = self._parse(raw, previous, parse_backup, InvalidBackup)
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
                    items = [_with_kind(w, api_version, kind) for w in page]
                    del page
                    if selector is None:
                        items = [w for w in items if _labeled_or_injected(w)]
                    for w in items:
                        if not _labeled(w):
                            continue
                        ref = _ref(w)
                        labeled.add(ref)
                        if controller_owner(w) is not None:
                            continue  # never changed, never restarted (plan reports it)
                        rollouts[ref] = observe_rollout(w)  # from its status, before _slim
                        if self.first_cycle and needs_manual_restart(w):
                            self.pending_restarts.add(ref)  # after a start: look for stale pods
                    stats.workloads += sum(1 for w in items if _labeled(w))
                    items = [_slim(w) for w in items]
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
            current = self._rollouts(result, rollouts, restarts)
            self._sync_status(result, raw_by_key, parsed, stats, current)
        if stats.lost_leadership:
            log.warning("leadership lost during the cycle: stopped writing")
        for p in result.problems:
            log.warning("%s", p)
        stats.ready = sum(1 for p in parsed if not isinstance(p, InvalidBackup))
        stats.not_ready = len(parsed) - stats.ready
        stats.seconds = time.monotonic() - started
        return stats

    def _parse(self, raw: dict, previous: dict, parse_backup, invalid_type):
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
            except invalid_type as exc:
                item = exc
        self._parsed[key] = (rv, item)
        return item

    # ---------------------------------------------------------------- apply
    def _apply_changes(self, result, stats: CycleStats) -> None:
        from reconciler.kube.client import ApiError
        from reconciler.patch import merge_patch

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
        from reconciler.kube.client import ApiError
        from reconciler.rollout import plan_restart

        views: dict = {}
        budget = self.settings.max_restarts
        for ref in sorted(self.pending_restarts):
            if budget <= 0 or not self._may_write(stats):
                break
            try:
                owner = self.kube.get_or_none(WORKLOADS[ref.kind].path(ref.namespace, ref.name))
                selector = _selector_string(owner, ref.kind) if owner is not None else None
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

    def _rollouts(self, result, observed: dict, restarts: dict) -> dict:
        """WorkloadRef -> Rollout for every labeled workload with restik's sidecar: what its
        status said at LIST time, unless this cycle knows better (patched now, deferred by
        --max-rollouts, or restarted by restik)."""
        from reconciler.rollout import ROLLING_OUT, Rollout

        patched = {c.ref for c in result.changes if c.action != "remove"}
        out = {}
        for ref, rollout in observed.items():
            if ref not in result.injected and ref not in patched:
                continue  # no sidecar (yet): a problem on the Backup says why
            if ref in self.deferred:
                rollout = Rollout(ROLLING_OUT, None, None, None, "queued by --max-rollouts")
            elif ref in restarts:
                if not restarts[ref].current:  # else: the same counts as the status has
                    rollout = restarts[ref]
            elif ref in self.pending_restarts:
                rollout = Rollout(ROLLING_OUT, rollout.pods, None, rollout.ready, "restart pending")
            elif ref in self.patched_now:
                # what the next LIST will say until the workload's controller catches up
                message = f"waiting for the {ref.kind} controller to observe it"
                rollout = Rollout(ROLLING_OUT, rollout.pods, None, rollout.ready, message)
            out[ref] = rollout
        return out

    def _sync_rolebindings(self, result, rolebindings: dict, raw_by_key, parsed, stats) -> None:
        from reconciler.api.backup import InvalidBackup
        from reconciler.kube.client import ApiError
        from reconciler.rbac import desired_rolebinding, rolebinding_in_sync, rolebinding_name

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
        from reconciler.kube.client import ApiError
        from reconciler.status import is_new_problem, new_warnings, status_patch, warning_event

        now = now_rfc3339()
        for item in parsed:
            if not self._may_write(stats):
                return
            raw = raw_by_key[(item.namespace, item.name)]
            patch = status_patch(raw, item, result, now, rollouts)
            stats.readiness[(item.namespace, item.name)] = _ready_status(patch or raw)
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
        from reconciler.offline.diff import OfflineResult, render_diff

        text = render_diff(OfflineResult(result))
        self.out.write(text)
        self.out.flush()


def _ready_status(obj: Mapping) -> str | None:
    """The Ready condition's status in a Backup or a status patch."""
    for cond in (obj.get("status") or {}).get("conditions") or []:
        if isinstance(cond, Mapping) and cond.get("type") == "Ready":
            return cond.get("status")
    return None


def _slim(obj: dict) -> dict:
    """Drop what the planner never reads and a patch never touches: at 10,000 workloads the
    status, managedFields and last-applied annotations are most of the memory."""
    obj.pop("status", None)
    meta = obj.get("metadata")
    if isinstance(meta, dict):
        meta.pop("managedFields", None)
        meta.pop("annotations", None)
    return obj


def _labeled(obj: dict) -> bool:
    return CONFIG_LABEL in (obj["metadata"].get("labels") or {})


def _labeled_or_injected(obj: dict) -> bool:
    """What the unselected first LIST keeps: labeled workloads and any that carry restik's
    hash annotation (a possible orphan); the rest is dropped at once."""
    if _labeled(obj):
        return True
    try:
        annotations = obj["spec"]["template"]["metadata"]["annotations"]
    except (KeyError, TypeError):
        return False
    return isinstance(annotations, dict) and HASH_ANNOTATION in annotations


def _ref(obj: dict):
    """A listed object's WorkloadRef (API objects are well-formed: no checks needed)."""
    from reconciler.workload import WorkloadRef

    meta = obj["metadata"]
    return WorkloadRef(obj["kind"], meta.get("namespace") or "default", meta.get("name"))


def _with_kind(obj: dict, api_version: str, kind: str) -> dict:
    # LIST items carry no kind/apiVersion; the planner and the diffs need them.
    obj.setdefault("apiVersion", api_version)
    obj.setdefault("kind", kind)
    return obj


def _established(crd: Mapping) -> bool:
    for cond in (crd.get("status") or {}).get("conditions") or []:
        if cond.get("type") == "Established" and cond.get("status") == "True":
            return True
    return False


def _owned_by(pod: Mapping, uid: str | None) -> bool:
    return any(o.get("uid") == uid for o in pod["metadata"].get("ownerReferences") or [])


def _selector_string(obj: Mapping, kind: str) -> str | None:
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


# -------------------------------------------------------------------- the loop
class Runner:
    """The long-running process: leader election, watches that wake the loop, signals."""

    def __init__(self, controller: Controller, settings: Settings):
        self.controller = controller
        self.settings = settings
        self.stop = threading.Event()
        self.wake = threading.Event()
        self.last_cycle_end = time.monotonic()  # of the last successful cycle (health)
        self.last_attempt_end = 0.0  # of the last cycle, failed or not (rate limit)
        self.leader = not settings.leader_elect
        self.threads: list[threading.Thread] = []

    def healthy(self) -> bool:
        limit = max(3 * self.settings.interval, 60.0)
        return not self.leader or time.monotonic() - self.last_cycle_end < limit

    def request_stop(self, *_args) -> None:
        log.info("stopping after the current cycle")
        self.stop.set()
        self.wake.set()

    def run(self) -> int:
        if self.settings.leader_elect:
            from reconciler.kube.lease import LeaderElector

            self.elector = LeaderElector(
                self.controller.kube,
                self.settings.lease_namespace,
                "restik-controller",
                self.settings.identity,
                on_change=self._leadership,
            )
            self.controller.leading = self.elector.is_leader
            self._start(self.elector.run, self.stop)
        watches_started = False
        while not self.stop.is_set():
            if self.leader and self.controller.leading():
                self._one_cycle()
                self.last_attempt_end = time.monotonic()
                if not watches_started and self.controller.last_resource_versions:
                    self._start_watches()
                    watches_started = True
            # While restik restarts pods itself, look again soon: each step waits for the
            # previous pod's replacement to become Ready.
            wait = self.settings.interval
            if self.controller.pending_restarts:
                wait = min(wait, RESTART_POLL)
            woke = self.wake.wait(wait)
            if woke and not self.stop.is_set():
                # Let a burst of events settle into one cycle, and never run cycles closer
                # than MIN_CYCLE_GAP: a storm of events (or of 410s asking for a relist)
                # costs at most one cycle of LISTs per gap.
                gap = MIN_CYCLE_GAP - (time.monotonic() - self.last_attempt_end)
                self.stop.wait(max(0.1, gap))
            self.wake.clear()
        if self.settings.leader_elect:
            self.elector.release()
        return EXIT_OK

    def _leadership(self, leader: bool) -> None:
        log.info("leadership %s", "acquired" if leader else "lost")
        self.leader = leader
        if self.controller.metrics:
            self.controller.metrics.set_leader(leader)
        self.wake.set()

    def _one_cycle(self) -> CycleStats | None:
        from reconciler.kube.client import ApiError

        metrics = self.controller.metrics
        try:
            stats = self.controller.cycle()
        except (ApiError, TimeoutError) as exc:
            log.error("cycle failed: %s", exc)
            if metrics:
                metrics.errors.inc()
            return None
        self.last_cycle_end = time.monotonic()
        log.info("%s", stats.summary(), extra={"fields": stats.__dict__})
        if metrics:
            metrics.observe(stats)
        return stats

    def _start(self, target, *args) -> None:
        t = threading.Thread(target=target, args=args, daemon=True)
        t.start()
        self.threads.append(t)

    def _start_watches(self) -> None:
        c = self.controller
        paths = [(c.backups_path, None)] if c.crd_ready else []
        paths += [(path, CONFIG_LABEL) for _, _, path in c.workload_paths()]
        for path, selector in paths:
            self._start(self._watch, path, selector)

    def _watch(self, path: str, selector: str | None) -> None:
        """Wake the loop on any change not made by this controller; resume after errors.

        A failed watch (an ERROR event, an error answer, a dropped connection) is retried
        after an exponential, capped, jittered backoff, never at once. A 410 Gone means the
        resourceVersion left the server's watch cache: the loop is woken to relist, and the
        watch resumes from that LIST's resourceVersion (or from "" if none is newer). While
        this replica is not the leader it does not watch at all.
        """
        from reconciler.kube.client import ApiError

        kube = self.controller.kube
        rv = self.controller.last_resource_versions.get(path, "")
        failures = 0
        timeout = WATCH_TIMEOUT_LEADER_ELECT if self.settings.leader_elect else WATCH_TIMEOUT
        while not self.stop.is_set():
            if not self._leading():
                self.stop.wait(1.0)
                rv = None  # resume from the next cycle's LIST once leader again
                continue
            if rv is None:
                rv = self.controller.last_resource_versions.get(path, "")
            gone = failed = False
            started = time.monotonic()
            events = 0
            try:
                for event in kube.watch(path, rv, selector, timeout_s=timeout):
                    if self.stop.is_set() or not self._leading():
                        break
                    obj = event.get("object") or {}
                    if event.get("type") == "ERROR":
                        failed = True
                        gone = obj.get("code") == 410
                        log.info("watch %s: %s", path, obj.get("message") or obj.get("reason"))
                        break
                    events += 1
                    failures = 0
                    new_rv = (obj.get("metadata") or {}).get("resourceVersion")
                    if new_rv:
                        rv = new_rv
                    if event.get("type") == "BOOKMARK" or new_rv in self.controller.own_writes:
                        continue
                    self.wake.set()
                else:
                    # the server ended the watch: normal at its timeout, a fault when at once
                    failed = events == 0 and time.monotonic() - started < 1.0
            except ApiError as exc:
                log.debug("watch %s: %s", path, exc)
                failed = True
                gone = exc.status == 410
            if not failed:
                continue
            failures += 1
            stale = rv
            if gone:
                self.wake.set()  # relist: events may have been missed
            self.stop.wait(watch_backoff(failures))
            if gone:
                listed = self.controller.last_resource_versions.get(path, "")
                rv = listed if listed != stale else ""

    def _leading(self) -> bool:
        return self.leader and self.controller.leading()


MIN_CYCLE_GAP = 1.0
RESTART_POLL = 5.0
WATCH_TIMEOUT = 300
# With leader election a watch is at most this long, so a replica that lost the Lease stops
# watching within it (a blocked read cannot be interrupted from another thread).
WATCH_TIMEOUT_LEADER_ELECT = 60
WATCH_BACKOFF_BASE = 0.5
WATCH_BACKOFF_CAP = 30.0


def watch_backoff(failures: int, rand=random.random) -> float:
    """Seconds before watching again after ``failures`` failures in a row: exponential from
    WATCH_BACKOFF_BASE, capped at WATCH_BACKOFF_CAP, with jitter (50-100 %) so that the
    watches of many replicas and kinds do not come back in step."""
    ceiling = min(WATCH_BACKOFF_CAP, WATCH_BACKOFF_BASE * 2 ** max(0, failures - 1))
    return ceiling * (0.5 + rand() / 2)


def main(args: argparse.Namespace) -> int:
    """Entry point of `restik run`."""
    from reconciler.kube.client import ApiError, Kube
    from reconciler.logs import setup_logging

    setup_logging(args.log_level, args.log_format)
    settings = Settings.from_args(args)
    try:
        kube = Kube.connect(settings.kubeconfig)
    except Exception as exc:  # pykube raises several types for a bad kubeconfig
        log.error("cannot load the Kubernetes configuration: %s", exc)
        return EXIT_ERROR
    metrics = None
    if settings.metrics_port and not settings.once:
        from reconciler.metrics import ControllerMetrics

        metrics = ControllerMetrics(interval=settings.interval)
    controller = Controller(kube, settings, metrics=metrics)
    if settings.once:
        try:
            stats = controller.cycle()
        except (ApiError, TimeoutError) as exc:
            log.error("cycle failed: %s", exc)
            return EXIT_ERROR
        log.info("%s", stats.summary())
        if stats.errors:
            return EXIT_ERROR
        if settings.dry_run:
            return EXIT_CHANGES if stats.planned else EXIT_OK
        return EXIT_OK
    runner = Runner(controller, settings)
    signal.signal(signal.SIGTERM, runner.request_stop)
    signal.signal(signal.SIGINT, runner.request_stop)
    server = None
    if metrics is not None:
        server = metrics.serve(settings.metrics_address, settings.metrics_port, runner.healthy)
    try:
        return runner.run()
    finally:
        if server is not None:
            server.shutdown()
            server.server_close()
