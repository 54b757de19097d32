"""`restik run`: the level-triggered loop. Observe (LIST), plan (pure), apply (one call each)."""

from __future__ import annotations

import argparse
import gc
import logging
import os
import signal
import sys
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime

from reconciler.constants import (
    API_VERSION,
    CONFIG_LABEL,
    CRD_NAME,
    HASH_ANNOTATION,
    MANUAL_RESTART_KINDS,
    PLURAL,
    WORKLOAD_KINDS,
)
from reconciler.logs import env_default

log = logging.getLogger("restik.controller")
EXIT_OK, EXIT_CHANGES, EXIT_ERROR = 0, 1, 2
COMPONENT = "restik-controller"


def _seconds(text: str) -> float:
    from reconciler.schedule import ScheduleError, parse_duration

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
    conflicts: int = 0
    errors: int = 0
    status_writes: int = 0
    planned: int = 0
    ready: int = 0
    not_ready: int = 0
    seconds: float = 0.0
    # (namespace, name) -> the Ready condition's status ("True"/"False") after this cycle
    readiness: dict = field(default_factory=dict)

    def summary(self) -> str:
        return (
            f"backups={self.backups} workloads={self.workloads} patched={self.patched} "
            f"restarted={self.restarted} conflicts={self.conflicts} errors={self.errors} "
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
        self.first_cycle = True
        self.crd_ready = False
        self.own_writes: set[str] = set()
        self.last_resource_versions: dict[str, str] = {}
        self._parsed: dict[tuple, tuple] = {}  # (namespace, name) -> (resourceVersion, parsed)

    # ---------------------------------------------------------------- paths
    def _list_path(self, api_version: str, plural: str) -> str:
        from reconciler.kube import api_path

        return api_path(api_version, plural, self.settings.namespace)

    @property
    def backups_path(self) -> str:
        return self._list_path(API_VERSION, PLURAL)

    def workload_paths(self) -> list[tuple[str, str, str]]:
        return [
            (kind, api_version, self._list_path(api_version, plural))
            for kind, (api_version, plural) in WORKLOAD_KINDS.items()
        ]

    # ---------------------------------------------------------------- CRD
    def ensure_crd(self) -> bool:
        """Create the Backup CRD when absent and wait until it is Established."""
        from reconciler.kube import ApiError, api_path
        from reconciler.resources import crd_manifest

        path = api_path("apiextensions.k8s.io/v1", "customresourcedefinitions", name=CRD_NAME)
        crd = self.kube.get_or_none(path)
        if crd is None:
            if self.settings.dry_run:
                log.info("dry run: would create CustomResourceDefinition %s", CRD_NAME)
                return False
            log.info("creating CustomResourceDefinition %s", CRD_NAME)
            try:
                crd = self.kube.create(
                    api_path("apiextensions.k8s.io/v1", "customresourcedefinitions"), crd_manifest()
                )
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
        from reconciler.kube import api_path
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
            api_version, plural = WORKLOAD_KINDS[ref.kind]
            obj = self.kube.get_or_none(api_path(api_version, plural, ref.namespace, ref.name))
            if obj is None:
                self.known_injected.discard(ref)
                continue
            found.append(_with_kind(_slim(obj), api_version, ref.kind))
        return found

    # ---------------------------------------------------------------- cycle
    def cycle(self) -> CycleStats:
        """One pass: LIST Backups, then per workload kind LIST and plan page by page (so only
        one page of objects is in memory at a time), LIST RoleBindings, then apply."""
        from reconciler.backup import InvalidBackup, parse_backup
        from reconciler.kube import ApiError
        from reconciler.plan import BackupIndex, plan_batch
        from reconciler.rbac import MANAGED_BY, MANAGER

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
            for kind, api_version, path in self.workload_paths():
                for page in self._pages(path, CONFIG_LABEL, rvs):
                    items = [_with_kind(_slim(w), api_version, kind) for w in page]
                    del page
                    stats.workloads += len(items)
                    refs = {_ref(w) for w in items}
                    labeled |= refs
                    if self.first_cycle and kind in MANUAL_RESTART_KINDS:
                        self.pending_restarts |= refs  # after a restart: look for stale pods
                    plan_batch(index, items, self.renderer, result)
                    del items
            rb_path = self._list_path("rbac.authorization.k8s.io/v1", "rolebindings")
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
            self._restart_stale(stats)
            self._sync_rolebindings(result, rolebindings, raw_by_key, parsed, stats)
            self._sync_status(result, raw_by_key, parsed, stats)
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
        from reconciler.kube import ApiError, api_path
        from reconciler.patch import merge_patch

        for change in result.changes:
            ref = change.ref
            api_version, plural = WORKLOAD_KINDS[ref.kind]
            patch = merge_patch(change.before, change.after)
            patch.setdefault("metadata", {})["resourceVersion"] = change.before["metadata"].get(
                "resourceVersion"
            )
            path = api_path(api_version, plural, ref.namespace, ref.name)
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

    def _restart_stale(self, stats: CycleStats) -> None:
        """Delete pods of ReplicaSets/ReplicationControllers whose template hash is stale."""
        from reconciler.kube import ApiError, api_path

        budget = self.settings.max_restarts
        for ref in sorted(self.pending_restarts):
            if budget <= 0:
                break
            api_version, plural = WORKLOAD_KINDS[ref.kind]
            try:
                owner = self.kube.get_or_none(
                    api_path(api_version, plural, ref.namespace, ref.name)
                )
                if owner is None:
                    self.pending_restarts.discard(ref)
                    continue
                selector = _selector_string(owner, ref.kind)
                if selector is None:
                    self.pending_restarts.discard(ref)
                    continue
                pods = self.kube.list(
                    api_path("v1", "pods", ref.namespace), label_selector=selector
                )
                uid = owner["metadata"].get("uid")
                want = (
                    (owner["spec"]["template"].get("metadata") or {}).get("annotations") or {}
                ).get(HASH_ANNOTATION)
                stale = [
                    p
                    for p in pods.get("items") or []
                    if _owned_by(p, uid)
                    and not p["metadata"].get("deletionTimestamp")
                    and ((p["metadata"].get("annotations") or {}).get(HASH_ANNOTATION)) != want
                ]
                if not stale:
                    self.pending_restarts.discard(ref)
                    continue
                pod = sorted(stale, key=lambda p: p["metadata"]["name"])[0]
                self.kube.delete(api_path("v1", "pods", ref.namespace, pod["metadata"]["name"]))
                budget -= 1
                stats.restarted += 1
                if self.metrics:
                    self.metrics.restarts.inc()
                log.info("restarted pod %s/%s of %s", ref.namespace, pod["metadata"]["name"], ref)
                if len(stale) == 1:
                    self.pending_restarts.discard(ref)
            except ApiError as exc:
                if not exc.not_found:
                    stats.errors += 1
                    log.error("restarting pods of %s/%s failed: %s", ref.namespace, ref, exc)

    def _sync_rolebindings(self, result, rolebindings: dict, raw_by_key, parsed, stats) -> None:
        from reconciler.backup import InvalidBackup
        from reconciler.kube import ApiError, api_path
        from reconciler.rbac import desired_rolebinding, rolebinding_in_sync, rolebinding_name

        for item in parsed:
            key = (item.namespace, item.name)
            raw = raw_by_key[key]
            live = rolebindings.get((item.namespace, rolebinding_name(item.name)))
            sas = result.service_accounts.get(key)
            path_ns = api_path("rbac.authorization.k8s.io/v1", "rolebindings", item.namespace)
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

    def _sync_status(self, result, raw_by_key, parsed, stats) -> None:
        from reconciler.kube import ApiError, api_path
        from reconciler.status import is_new_problem, status_patch, warning_event

        now = now_rfc3339()
        for item in parsed:
            raw = raw_by_key[(item.namespace, item.name)]
            patch = status_patch(raw, item, result, now)
            stats.readiness[(item.namespace, item.name)] = _ready_status(patch or raw)
            if patch is None:
                continue
            path = api_path(API_VERSION, PLURAL, item.namespace, item.name, "status")
            try:
                self._note_write(self.kube.merge_patch(path, patch))
                stats.status_writes += 1
                if is_new_problem(raw, patch):
                    ready = next(c for c in patch["status"]["conditions"] if c["type"] == "Ready")
                    event = warning_event(raw, ready["reason"], ready["message"], now, COMPONENT)
                    self.kube.create(api_path("v1", "events", item.namespace), event)
            except ApiError as exc:
                if exc.not_found:
                    continue
                stats.errors += 1
                log.error("status of Backup %s/%s: %s", item.namespace, item.name, exc)

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
        from reconciler.offline import OfflineResult, render_diff

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
        self.last_cycle_end = time.monotonic()
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
            from reconciler.lease import LeaderElector

            self.elector = LeaderElector(
                self.controller.kube,
                self.settings.lease_namespace,
                "restik-controller",
                self.settings.identity,
                on_change=self._leadership,
            )
            self._start(self.elector.run, self.stop)
        watches_started = False
        while not self.stop.is_set():
            if self.leader:
                self._one_cycle()
                if not watches_started and self.controller.last_resource_versions:
                    self._start_watches()
                    watches_started = True
            woke = self.wake.wait(self.settings.interval)
            if woke and not self.stop.is_set():
                time.sleep(0.1)  # let a burst of events settle into one cycle
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
        from reconciler.kube import ApiError

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
        """Wake the loop on any change not made by this controller; resume after errors."""
        from reconciler.kube import ApiError

        kube = self.controller.kube
        rv = self.controller.last_resource_versions.get(path, "")
        while not self.stop.is_set():
            try:
                for event in kube.watch(path, rv, selector, timeout_s=300):
                    if self.stop.is_set():
                        return
                    obj = event.get("object") or {}
                    new_rv = (obj.get("metadata") or {}).get("resourceVersion")
                    if event.get("type") == "ERROR":
                        rv = self.controller.last_resource_versions.get(path, "")
                        break
                    if new_rv:
                        rv = new_rv
                    if event.get("type") == "BOOKMARK" or new_rv in self.controller.own_writes:
                        continue
                    self.wake.set()
            except ApiError as exc:
                log.debug("watch %s: %s", path, exc)
                rv = self.controller.last_resource_versions.get(path, "")
                self.stop.wait(1.0)


def main(args: argparse.Namespace) -> int:
    """Entry point of `restik run`."""
    from reconciler.kube import ApiError, Kube
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
