"""What a cluster adds to an API server: the workload controllers, a scheduler and kubelets.

One background thread runs level-triggered passes over the store, as kube-controller-manager,
kube-scheduler and the kubelets would: Deployment -> ReplicaSets -> Pods, ReplicationController
-> Pods, StatefulSet -> ordinal Pods, DaemonSet -> a Pod per node; pods are bound to a node
and become Ready after a short delay unless their image is "broken" or a container references
a Secret/ConfigMap (or key) that does not exist. Writes go straight to the store: they are not
in the request log, like the real controllers' requests are not restik's.
"""

from __future__ import annotations

import copy
import json
import logging
import math
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from datetime import UTC, datetime
from typing import Any

from .admission import quota_status
from .disruption import budget_status
from .errors import ApiError
from .resources import ResourceType
from .rules import _selector_matches
from .store import MERGE_PATCH, Entry, Store, now

log = logging.getLogger("tests.emulator.cluster")

HASH_LABEL = "pod-template-hash"
REVISION_LABEL = "controller-revision-hash"
REVISION_ANNOTATION = "deployment.kubernetes.io/revision"
_SAFE = "bcdfghjklmnpqrstvwxz2456789"
RETRY_MIN, RETRY_MAX = 0.2, 5.0  # backoff of a workload whose pod creation was refused


# -- small helpers -----------------------------------------------------------------------------


def template_hash(template: dict[str, Any], collisions: int = 0) -> str:
    """FNV-1a 32 of the template, encoded like rand.SafeEncodeString (as the controllers do)."""
    data = json.dumps(template, sort_keys=True, separators=(",", ":")).encode()
    if collisions:
        data += str(collisions).encode()
    h = 0x811C9DC5
    for byte in data:
        h = ((h ^ byte) * 0x01000193) & 0xFFFFFFFF
    return "".join(_SAFE[ord(c) % len(_SAFE)] for c in str(h))


def scaled_value(value: Any, total: int, round_up: bool) -> int:
    """An IntOrString (3 or "25%") against a total, as intstr.GetScaledValueFromIntOrPercent."""
    if value is None:
        return 0
    if isinstance(value, int):
        return value
    text = str(value)
    if text.endswith("%"):
        pct = int(text[:-1]) * total / 100
        return math.ceil(pct) if round_up else math.floor(pct)
    return int(text)


def is_ready(pod: dict[str, Any]) -> bool:
    for cond in (pod.get("status") or {}).get("conditions") or []:
        if cond.get("type") == "Ready":
            return cond.get("status") == "True"
    return False


def _parse_time(value: str | None) -> float:
    if not value:
        return 0.0
    return datetime.strptime(value, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC).timestamp()


def is_available(pod: dict[str, Any], min_ready_seconds: int, wall: float) -> bool:
    if not is_ready(pod):
        return False
    if not min_ready_seconds:
        return True
    for cond in pod["status"]["conditions"]:
        if cond.get("type") == "Ready":
            return wall - _parse_time(cond.get("lastTransitionTime")) >= min_ready_seconds
    return False


def controller_ref(obj: dict[str, Any]) -> dict[str, Any] | None:
    for ref in obj["metadata"].get("ownerReferences") or []:
        if ref.get("controller"):
            return ref
    return None


def owner_ref(owner: dict[str, Any]) -> dict[str, Any]:
    meta = owner["metadata"]
    return {
        "apiVersion": owner["apiVersion"],
        "kind": owner["kind"],
        "name": meta["name"],
        "uid": meta["uid"],
        "controller": True,
        "blockOwnerDeletion": True,
    }


def _omit_zero(status: dict[str, Any], keep: Iterable[str] = ()) -> dict[str, Any]:
    """Go's omitempty on the integer fields of a workload status."""
    keep = set(keep)
    return {k: v for k, v in status.items() if k in keep or v not in (0, None, [], "")}


def _conditions(
    old: list[dict[str, Any]] | None, new: list[dict[str, Any]], stamp: str
) -> list[dict[str, Any]]:
    """Conditions keep their transition time while their status holds."""
    before = {c.get("type"): c for c in old or []}
    out = []
    for cond in new:
        prev = before.get(cond["type"])
        cond = dict(cond)
        same = prev is not None and prev.get("status") == cond["status"]
        cond["lastTransitionTime"] = prev["lastTransitionTime"] if same else stamp
        if "lastUpdateTime" in cond:
            unchanged = same and all(prev.get(k) == cond.get(k) for k in ("reason", "message"))
            cond["lastUpdateTime"] = prev.get("lastUpdateTime", stamp) if unchanged else stamp
        out.append(cond)
    return out


# -- the cluster -------------------------------------------------------------------------------


class Cluster:
    """The controllers and kubelets of an emulated cluster, on one background thread."""

    def __init__(
        self,
        store: Store,
        controllers: bool = True,
        kubelet: bool = True,
        nodes: Sequence[str] = ("node-1", "node-2"),
        ready_delay: float = 0.05,
        broken_images: Iterable[str] = (),
    ):
        self.store = store
        self.controllers = controllers
        self.kubelet = kubelet
        self.nodes = list(nodes)
        self._ready_delay = ready_delay
        self.broken_images = set(broken_images)
        self._stop = False
        self._thread: threading.Thread | None = None
        self._seen: dict[str, float] = {}  # pod uid -> monotonic time the kubelet started it
        self._retry: dict[str, tuple[float, float]] = {}  # owner uid -> (not before, delay)
        self._revisions: dict[tuple[str, str], dict[str, Any]] = {}  # (sts uid, rev) -> template
        self._due: float | None = None
        self.idle_rv = -1  # store.rv at the end of the last pass that changed nothing
        self.passes = 0
        self.error: BaseException | None = None

    @property
    def ready_delay(self) -> float:
        """Seconds from a pod's binding to its containers' start (changeable while running)."""
        return self._ready_delay

    @ready_delay.setter
    def ready_delay(self, seconds: float) -> None:
        with self.store.cond:
            self._ready_delay = seconds
            self._due = time.monotonic()  # re-plan the waiting pods now
            self.store.cond.notify_all()

    def _type(self, group: str, plural: str) -> ResourceType:
        version = "v1"
        return self.store.types[(group, version, plural)]

    # -- lifecycle -----------------------------------------------------------------------------

    def start(self) -> Cluster:
        if self.kubelet:
            for node in self.nodes:
                self._ensure_node(node)
        self._thread = threading.Thread(target=self._run, name="emulator-cluster", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        with self.store.cond:
            self._stop = True
            self.store.cond.notify_all()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    def _ensure_node(self, name: str) -> None:
        rt = self._type("", "nodes")
        if self.store.lookup(rt, "", name) is not None:
            return
        stamp = now()
        node = {
            "apiVersion": "v1",
            "kind": "Node",
            "metadata": {"name": name, "labels": {"kubernetes.io/hostname": name,
                                                  "kubernetes.io/os": "linux"}},
            "status": {
                "conditions": [{"type": "Ready", "status": "True", "reason": "KubeletReady",
                                "message": "kubelet is posting ready status",
                                "lastHeartbeatTime": stamp, "lastTransitionTime": stamp}],
                "nodeInfo": {"kubeletVersion": "v1.37.0", "operatingSystem": "linux",
                             "architecture": "amd64"},
            },
        }  # fmt: skip
        self.store.create(rt, "", node, keep_status=True)

    def _run(self) -> None:
        store = self.store
        with store.cond:
            while not self._stop:
                try:
                    for _ in range(50):  # until a fixed point (bounded: a pass may flap)
                        before = store.rv
                        self._due = None
                        self._pass()
                        self.passes += 1
                        if store.rv == before:
                            break
                except Exception as exc:  # a bug here must not wedge the emulator silently
                    log.exception("emulated cluster pass failed")
                    self.error = exc
                rv = store.rv
                if self._due is None or self._due > time.monotonic() + 0.001:
                    self.idle_rv = rv if not self._pending_kubelet() else -1
                    store.cond.notify_all()
                while not self._stop and store.rv == rv:
                    timeout = None if self._due is None else self._due - time.monotonic()
                    if timeout is not None and timeout <= 0:
                        break
                    store.cond.wait(timeout if timeout is None else min(timeout, 1.0))

    def _pending_kubelet(self) -> bool:
        """Pods still waiting out the ready delay (settle() waits for them too)."""
        deadline = time.monotonic()
        return any(t + self.ready_delay > deadline for t in self._seen.values())

    def _wake_at(self, when: float) -> None:
        if self._due is None or when < self._due:
            self._due = when

    def _pass(self) -> None:
        if self.controllers:
            for entry in self._entries("apps", "deployments"):
                self._sync_deployment(entry.obj)
            for entry in self._entries("apps", "replicasets"):
                self._sync_replicas(self._type("apps", "replicasets"), entry.obj)
            for entry in self._entries("", "replicationcontrollers"):
                self._sync_replicas(self._type("", "replicationcontrollers"), entry.obj)
            for entry in self._entries("apps", "statefulsets"):
                self._sync_statefulset(entry.obj)
            for entry in self._entries("apps", "daemonsets"):
                self._sync_daemonset(entry.obj)
        if self.kubelet:
            self._run_kubelets()
        if self.controllers:
            rt = self._type("policy", "poddisruptionbudgets")
            for entry in self._entries("policy", "poddisruptionbudgets"):
                status = budget_status(self.store, entry.obj)
                old = entry.obj.get("status") or {}
                status["conditions"] = _conditions(old.get("conditions"), status["conditions"],
                                                   now())  # fmt: skip
                self.store.write_status(rt, entry.namespace, entry.name, status)
            rt = self._type("", "resourcequotas")
            for entry in self._entries("", "resourcequotas"):
                status = quota_status(entry.obj, self._pods(entry.namespace))
                self.store.write_status(rt, entry.namespace, entry.name, status)

    def _entries(self, group: str, plural: str, ns: str | None = None) -> list[Entry]:
        return list(self.store._bucket((group, plural), ns))

    def _pods(self, ns: str) -> list[dict[str, Any]]:
        return [e.obj for e in self._entries("", "pods", ns)]

    def _owned(self, owner: dict[str, Any], objs: Iterable[dict[str, Any]]) -> list[dict]:
        uid = owner["metadata"]["uid"]
        return [o for o in objs if (controller_ref(o) or {}).get("uid") == uid]

    def _scale(self, rt: ResourceType, obj: dict[str, Any], replicas: int) -> None:
        meta = obj["metadata"]
        if obj["spec"].get("replicas") == replicas:
            return
        self.store.patch(rt, meta["namespace"], meta["name"], MERGE_PATCH,
                         {"spec": {"replicas": replicas}})  # fmt: skip

    # -- events --------------------------------------------------------------------------------

    def record_event(
        self, obj: dict[str, Any], kind: str, reason: str, message: str, component: str
    ) -> None:
        """A core/v1 Event about obj, aggregated like the EventRecorder does (count++)."""
        rt = self._type("", "events")
        meta = obj["metadata"]
        ns = meta.get("namespace") or "default"
        stamp = now()
        for entry in self._entries("", "events", ns):
            ev = entry.obj
            inv = ev.get("involvedObject") or {}
            if (inv.get("uid"), ev.get("reason"), ev.get("message")) == (
                meta["uid"], reason, message):  # fmt: skip

                def bump(o: dict[str, Any]) -> None:
                    o["count"] = o.get("count", 1) + 1
                    o["lastTimestamp"] = stamp

                self.store.mutate(rt, ns, entry.name, bump)
                return
        event = {
            "apiVersion": "v1",
            "kind": "Event",
            "metadata": {"name": f"{meta['name']}.{time.time_ns():x}", "namespace": ns},
            "involvedObject": {"apiVersion": obj["apiVersion"], "kind": obj["kind"],
                               "name": meta["name"], "namespace": ns, "uid": meta["uid"],
                               "resourceVersion": meta.get("resourceVersion", "")},
            "reason": reason,
            "message": message,
            "type": kind,
            "count": 1,
            "firstTimestamp": stamp,
            "lastTimestamp": stamp,
            "source": {"component": component},
            "reportingComponent": component,
            "reportingInstance": "",
        }  # fmt: skip
        self.store.create(rt, ns, event)

    # -- creating pods -------------------------------------------------------------------------

    def _may_create(self, owner: dict[str, Any]) -> bool:
        retry = self._retry.get(owner["metadata"]["uid"])
        if retry is None or retry[0] <= time.monotonic():
            return True
        self._wake_at(retry[0])
        return False

    def _create_pod(
        self,
        owner: dict[str, Any],
        template: dict[str, Any],
        component: str,
        name: str = "",
        labels: dict[str, str] | None = None,
        spec: dict[str, Any] | None = None,
        failure: Callable[[str], str] = lambda err: f"Error creating: {err}",
    ) -> ApiError | None:
        """Create a pod from a template as a controller does; a refusal is recorded as a
        Warning FailedCreate Event and retried later with backoff."""
        meta = owner["metadata"]
        tmeta = template.get("metadata") or {}
        pod_meta: dict[str, Any] = {
            "labels": {**(tmeta.get("labels") or {}), **(labels or {})},
            "ownerReferences": [owner_ref(owner)],
        }
        if tmeta.get("annotations"):
            pod_meta["annotations"] = dict(tmeta["annotations"])
        if name:
            pod_meta["name"] = name
        else:
            pod_meta["generateName"] = meta["name"] + "-"
        pod = {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": pod_meta,
            "spec": copy.deepcopy(spec if spec is not None else template.get("spec") or {}),
        }
        try:
            self.store.create(self._type("", "pods"), meta["namespace"], pod)
        except ApiError as exc:
            uid = meta["uid"]
            delay = min(RETRY_MAX, max(RETRY_MIN, self._retry.get(uid, (0, 0))[1] * 2))
            self._retry[uid] = (time.monotonic() + delay, delay)
            self._wake_at(time.monotonic() + delay)
            self.record_event(owner, "Warning", "FailedCreate", failure(exc.message), component)
            return exc
        self._retry.pop(meta["uid"], None)
        return None

    def _delete_pod(self, pod: dict[str, Any]) -> None:
        meta = pod["metadata"]
        try:
            self.store.delete(self._type("", "pods"), meta["namespace"], meta["name"])
        except ApiError as exc:
            if exc.code != 404:
                raise

    # -- ReplicaSet / ReplicationController ----------------------------------------------------

    def _sync_replicas(self, rt: ResourceType, rs: dict[str, Any]) -> None:
        meta, spec = rs["metadata"], rs["spec"]
        ns = meta["namespace"]
        selector = spec.get("selector") or {}
        if rt.kind == "ReplicationController":
            selector = {"matchLabels": selector}
        template = spec.get("template") or {}
        component = "replicaset-controller" if rt.kind == "ReplicaSet" else (
            "replication-controller")  # fmt: skip
        pods = []
        for pod in self._owned(rs, self._pods(ns)):
            if pod["metadata"].get("deletionTimestamp"):
                continue
            if not _selector_matches(selector, pod["metadata"].get("labels") or {}):
                self._release(pod, meta["uid"])  # no longer selected: orphaned, replaced
                continue
            pods.append(pod)
        want = spec.get("replicas", 1)
        failure = None
        if len(pods) < want and not meta.get("deletionTimestamp") and self._may_create(rs):
            for _ in range(want - len(pods)):
                failure = self._create_pod(rs, template, component)
                if failure is not None:
                    break
        elif len(pods) > want:
            for pod in sorted(pods, key=_deletion_rank)[: len(pods) - want]:
                self._delete_pod(pod)
        if len(pods) >= want:
            self._retry.pop(meta["uid"], None)  # nothing to create: no failure stands
        pods = [p for p in self._owned(rs, self._pods(ns)) if not p["metadata"].get(
            "deletionTimestamp")]  # fmt: skip
        wall = time.time()
        min_ready = spec.get("minReadySeconds", 0)
        tlabels = (template.get("metadata") or {}).get("labels") or {}
        old = rs.get("status") or {}
        status = _omit_zero(
            {
                "replicas": len(pods),
                "fullyLabeledReplicas": sum(
                    1 for p in pods
                    if all((p["metadata"].get("labels") or {}).get(k) == v
                           for k, v in tlabels.items())
                ),
                "readyReplicas": sum(1 for p in pods if is_ready(p)),
                "availableReplicas": sum(1 for p in pods if is_available(p, min_ready, wall)),
                "observedGeneration": meta.get("generation", 1),
            },
            keep=("replicas",),
        )  # fmt: skip
        if min_ready:
            self._wake_at(time.monotonic() + 1.0)
        conditions = [c for c in old.get("conditions") or [] if c["type"] != "ReplicaFailure"]
        if failure is not None:
            conditions.append({"type": "ReplicaFailure", "status": "True",
                               "reason": "FailedCreate", "message": failure.message})  # fmt: skip
        elif meta["uid"] in self._retry:  # still backing off: the last failure stands
            conditions = old.get("conditions") or []
        if conditions:
            status["conditions"] = _conditions(old.get("conditions"), conditions, now())
        self.store.write_status(rt, ns, meta["name"], status)

    def _release(self, pod: dict[str, Any], owner_uid: str) -> None:
        def drop(obj: dict[str, Any]) -> None:
            refs = [r for r in obj["metadata"].get("ownerReferences") or []
                    if r.get("uid") != owner_uid]  # fmt: skip
            if refs:
                obj["metadata"]["ownerReferences"] = refs
            else:
                obj["metadata"].pop("ownerReferences", None)

        meta = pod["metadata"]
        self.store.mutate(self._type("", "pods"), meta["namespace"], meta["name"], drop)

    # -- Deployment ----------------------------------------------------------------------------

    def _sync_deployment(self, dep: dict[str, Any]) -> None:
        rs_rt = self._type("apps", "replicasets")
        meta, spec = dep["metadata"], dep["spec"]
        ns, name = meta["namespace"], meta["name"]
        if meta.get("deletionTimestamp"):
            return
        rss = self._owned(dep, (e.obj for e in self._entries("apps", "replicasets", ns)))
        template = spec.get("template") or {}
        new = next((rs for rs in rss if _same_template(rs, template)), None)
        olds = [rs for rs in rss if rs is not new]
        replicas = spec.get("replicas", 1)
        strategy = spec.get("strategy") or {}
        paused = bool(spec.get("paused"))
        revision = max((_revision(rs) for rs in rss), default=0)
        if new is None and not paused:
            if strategy.get("type") == "Recreate":
                initial = 0 if any(_rs_active(rs) for rs in olds) else replicas
            else:
                surge, _ = _rolling_bounds(spec, replicas)
                total = sum(rs["spec"].get("replicas", 0) for rs in olds)
                initial = replicas if not total else max(0, min(replicas, replicas + surge - total))
            new = self._create_replicaset(dep, template, initial, revision + 1)
            if new is None:
                return
        elif new is not None and _revision(new) < revision and not paused:
            # a template that went back to an old ReplicaSet's: that one is the newest again
            self.store.mutate(rs_rt, ns, new["metadata"]["name"],
                              _annotate(REVISION_ANNOTATION, str(revision + 1)))  # fmt: skip
            new = self.store.lookup(rs_rt, ns, new["metadata"]["name"]).obj
        if paused:  # no rollout, but a scale change reaches the one active ReplicaSet
            active = [rs for rs in rss if rs["spec"].get("replicas")]
            if len(active) == 1:
                self._scale(rs_rt, active[0], replicas)
            elif not active and new is not None:
                self._scale(rs_rt, new, replicas)
        elif strategy.get("type") == "Recreate":
            if any(rs["spec"].get("replicas", 0) for rs in olds):
                for rs in olds:
                    self._scale(rs_rt, rs, 0)
            elif not any(_rs_active(rs) for rs in olds):
                self._scale(rs_rt, new, replicas)
        else:
            self._roll(dep, new, olds, replicas)
        if not paused:
            self._cleanup_history(dep, new)
        if new is not None:
            rev = new["metadata"].get("annotations", {}).get(REVISION_ANNOTATION)
            if rev and (meta.get("annotations") or {}).get(REVISION_ANNOTATION) != rev:
                self.store.mutate(self._type("apps", "deployments"), ns, name,
                                  _annotate(REVISION_ANNOTATION, rev))  # fmt: skip
        self._deployment_status(dep)

    def _create_replicaset(
        self, dep: dict[str, Any], template: dict[str, Any], replicas: int, revision: int
    ) -> dict[str, Any] | None:
        meta, spec = dep["metadata"], dep["spec"]
        rs_rt = self._type("apps", "replicasets")
        collisions = (dep.get("status") or {}).get("collisionCount", 0)
        pod_hash = template_hash(template, collisions)
        rs_template = copy.deepcopy(template)
        rs_template.setdefault("metadata", {})
        rs_template["metadata"]["labels"] = {**(rs_template["metadata"].get("labels") or {}),
                                             HASH_LABEL: pod_hash}  # fmt: skip
        selector = copy.deepcopy(spec.get("selector") or {})
        selector["matchLabels"] = {**(selector.get("matchLabels") or {}), HASH_LABEL: pod_hash}
        surge, _ = _rolling_bounds(spec, spec.get("replicas", 1))
        rs = {
            "apiVersion": "apps/v1",
            "kind": "ReplicaSet",
            "metadata": {
                "name": f"{meta['name']}-{pod_hash}",
                "labels": dict(rs_template["metadata"]["labels"]),
                "annotations": {
                    "deployment.kubernetes.io/desired-replicas": str(spec.get("replicas", 1)),
                    "deployment.kubernetes.io/max-replicas": str(spec.get("replicas", 1) + surge),
                    REVISION_ANNOTATION: str(revision),
                },
                "ownerReferences": [owner_ref(dep)],
            },
            "spec": {
                "replicas": replicas,
                "minReadySeconds": spec.get("minReadySeconds", 0),
                "selector": selector,
                "template": rs_template,
            },
        }
        if not rs["spec"]["minReadySeconds"]:
            del rs["spec"]["minReadySeconds"]
        try:
            return self.store.create(rs_rt, meta["namespace"], rs)
        except ApiError as exc:
            if exc.code == 409:  # a hash collision: count it, a new name next pass

                def bump(obj: dict[str, Any]) -> None:
                    status = obj.setdefault("status", {})
                    status["collisionCount"] = status.get("collisionCount", 0) + 1

                self.store.mutate(self._type("apps", "deployments"), meta["namespace"],
                                  meta["name"], bump)  # fmt: skip
                return None
            self.record_event(dep, "Warning", "FailedCreate", exc.message,
                              "deployment-controller")  # fmt: skip
            return None

    def _roll(
        self, dep: dict[str, Any], new: dict[str, Any], olds: list[dict[str, Any]], replicas: int
    ) -> None:
        """One step of a RollingUpdate: scale the new ReplicaSet up within maxSurge, the old
        ones down within maxUnavailable (rolling.go's reconcileNewReplicaSet/OldReplicaSets)."""
        rs_rt = self._type("apps", "replicasets")
        surge, unavailable = _rolling_bounds(dep["spec"], replicas)
        all_rs = [new, *olds]
        new_count = new["spec"].get("replicas", 0)
        if new_count > replicas:
            self._scale(rs_rt, new, replicas)
            return
        if new_count < replicas:
            total = sum(rs["spec"].get("replicas", 0) for rs in all_rs)
            up = min(replicas + surge - total, replicas - new_count)
            if up > 0:
                self._scale(rs_rt, new, new_count + up)
                return
        old_total = sum(rs["spec"].get("replicas", 0) for rs in olds)
        if not old_total:
            return
        all_pods = sum(rs["spec"].get("replicas", 0) for rs in all_rs)
        min_available = replicas - unavailable
        new_status = new.get("status") or {}
        new_unavailable = new["spec"].get("replicas", 0) - new_status.get("availableReplicas", 0)
        budget = all_pods - min_available - new_unavailable
        if budget <= 0:
            return
        counts = {rs["metadata"]["name"]: rs["spec"].get("replicas", 0) for rs in olds}
        for rs in sorted(olds, key=lambda r: r["metadata"]["creationTimestamp"]):
            unhealthy = counts[rs["metadata"]["name"]] - (rs.get("status") or {}).get(
                "availableReplicas", 0)  # fmt: skip
            cut = min(budget, max(0, unhealthy))
            counts[rs["metadata"]["name"]] -= cut
            budget -= cut
        available = sum((rs.get("status") or {}).get("availableReplicas", 0) for rs in all_rs)
        down = available - min_available
        for rs in sorted(olds, key=lambda r: r["metadata"]["creationTimestamp"]):
            if down <= 0:
                break
            cut = min(counts[rs["metadata"]["name"]], down)
            counts[rs["metadata"]["name"]] -= cut
            down -= cut
        for rs in olds:
            self._scale(rs_rt, rs, counts[rs["metadata"]["name"]])

    def _cleanup_history(self, dep: dict[str, Any], new: dict[str, Any] | None) -> None:
        limit = dep["spec"].get("revisionHistoryLimit", 10)
        ns = dep["metadata"]["namespace"]
        rss = self._owned(dep, (e.obj for e in self._entries("apps", "replicasets", ns)))
        idle = [
            rs for rs in rss
            if (new is None or rs["metadata"]["uid"] != new["metadata"]["uid"])
            and not rs["spec"].get("replicas") and not (rs.get("status") or {}).get("replicas")
        ]  # fmt: skip
        idle.sort(key=_revision)
        for rs in idle[: max(0, len(idle) - limit)]:
            self.store.delete(self._type("apps", "replicasets"), ns, rs["metadata"]["name"])

    def _deployment_status(self, dep: dict[str, Any]) -> None:
        rt = self._type("apps", "deployments")
        meta, spec = dep["metadata"], dep["spec"]
        ns = meta["namespace"]
        dep = self.store.lookup(rt, ns, meta["name"]).obj  # annotations/collisions just written
        rss = self._owned(dep, (e.obj for e in self._entries("apps", "replicasets", ns)))
        template = spec.get("template") or {}
        new = next((rs for rs in rss if _same_template(rs, template)), None)
        replicas = spec.get("replicas", 1)
        _, unavailable = _rolling_bounds(spec, replicas)

        def total(field: str, sets: Iterable[dict[str, Any]] = rss) -> int:
            return sum((rs.get("status") or {}).get(field, 0) for rs in sets)

        available = total("availableReplicas")
        updated = total("replicas", [new] if new else [])
        old = dep.get("status") or {}
        conditions = []
        minimum = replicas - (0 if (spec.get("strategy") or {}).get("type") == "Recreate"
                              else unavailable)  # fmt: skip
        if available >= minimum:
            conditions.append({"type": "Available", "status": "True",
                               "reason": "MinimumReplicasAvailable",
                               "message": "Deployment has minimum availability."})  # fmt: skip
        else:
            conditions.append(
                {
                    "type": "Available",
                    "status": "False",
                    "reason": "MinimumReplicasUnavailable",
                    "message": "Deployment does not have minimum availability.",
                }
            )
        if spec.get("paused"):
            conditions.append({"type": "Progressing", "status": "Unknown",
                               "reason": "DeploymentPaused",
                               "message": "Deployment is paused"})  # fmt: skip
        elif new is not None and updated == replicas and available >= replicas and total(
                "replicas") == replicas:  # fmt: skip
            conditions.append({"type": "Progressing", "status": "True",
                               "reason": "NewReplicaSetAvailable",
                               "message": f'ReplicaSet "{new["metadata"]["name"]}" has '
                                          "successfully progressed."})  # fmt: skip
        elif new is not None:
            conditions.append({"type": "Progressing", "status": "True",
                               "reason": "ReplicaSetUpdated",
                               "message": f'ReplicaSet "{new["metadata"]["name"]}" is '
                                          "progressing."})  # fmt: skip
        failures = [c for rs in rss for c in (rs.get("status") or {}).get("conditions") or []
                    if c["type"] == "ReplicaFailure" and c["status"] == "True"]  # fmt: skip
        if failures:
            conditions.append({"type": "ReplicaFailure", "status": "True",
                               "reason": failures[0]["reason"],
                               "message": failures[0]["message"]})  # fmt: skip
        for cond in conditions:
            cond["lastUpdateTime"] = ""
        status = _omit_zero(
            {
                "observedGeneration": meta.get("generation", 1),
                "replicas": total("replicas"),
                "updatedReplicas": updated,
                "readyReplicas": total("readyReplicas"),
                "availableReplicas": available,
                "unavailableReplicas": max(
                    0, sum(rs["spec"].get("replicas", 0) for rs in rss) - available
                ),
            }
        )
        status["conditions"] = _conditions(old.get("conditions"), conditions, now())
        if old.get("collisionCount"):
            status["collisionCount"] = old["collisionCount"]
        self.store.write_status(rt, ns, meta["name"], status)

    # -- StatefulSet ---------------------------------------------------------------------------

    def _sync_statefulset(self, sts: dict[str, Any]) -> None:
        rt = self._type("apps", "statefulsets")
        meta, spec = sts["metadata"], sts["spec"]
        ns, name = meta["namespace"], meta["name"]
        if meta.get("deletionTimestamp"):
            return
        template = spec.get("template") or {}
        update_rev = f"{name}-{template_hash(template)}"
        self._revisions[(meta["uid"], update_rev)] = template
        old = sts.get("status") or {}
        current_rev = old.get("currentRevision") or update_rev
        replicas = spec.get("replicas", 1)
        strategy = spec.get("updateStrategy") or {}
        on_delete = strategy.get("type") == "OnDelete"
        partition = (strategy.get("rollingUpdate") or {}).get("partition", 0) or 0
        ordered = spec.get("podManagementPolicy", "OrderedReady") == "OrderedReady"
        pods: dict[int, dict[str, Any]] = {}
        for pod in self._owned(sts, self._pods(ns)):
            ordinal = _ordinal(pod, name)
            if ordinal is not None and not pod["metadata"].get("deletionTimestamp"):
                pods[ordinal] = pod
        failure = self._statefulset_pods(sts, pods, replicas, ordered, on_delete, partition,
                                         current_rev, update_rev)  # fmt: skip
        if failure is None and not on_delete:
            self._statefulset_roll(sts, pods, replicas, partition, update_rev)
        pods = {
            o: p for p in self._owned(sts, self._pods(ns))
            if (o := _ordinal(p, name)) is not None and not p["metadata"].get("deletionTimestamp")
        }  # fmt: skip
        revs = [(p["metadata"].get("labels") or {}).get(REVISION_LABEL) for p in pods.values()]
        updated = revs.count(update_rev)
        if updated == replicas and len(pods) == replicas:
            current_rev = update_rev
        wall = time.time()
        status = _omit_zero(
            {
                "observedGeneration": meta.get("generation", 1),
                "replicas": len(pods),
                "readyReplicas": sum(1 for p in pods.values() if is_ready(p)),
                "currentReplicas": revs.count(current_rev),
                "updatedReplicas": updated,
                "currentRevision": current_rev,
                "updateRevision": update_rev,
                "availableReplicas": sum(1 for p in pods.values() if is_available(
                    p, spec.get("minReadySeconds", 0), wall)),
            },
            keep=("replicas",),
        )  # fmt: skip
        status["collisionCount"] = 0
        self.store.write_status(rt, ns, name, status)

    def _statefulset_pods(
        self,
        sts: dict[str, Any],
        pods: dict[int, dict[str, Any]],
        replicas: int,
        ordered: bool,
        on_delete: bool,
        partition: int,
        current_rev: str,
        update_rev: str,
    ) -> ApiError | None:
        meta, spec = sts["metadata"], sts["spec"]
        name = meta["name"]
        for ordinal in range(replicas):
            if ordinal in pods:
                continue
            if ordered and not all(is_ready(pods[o]) for o in range(ordinal) if o in pods):
                return None
            if not self._may_create(sts):
                return None
            rev = update_rev if on_delete or ordinal >= partition else current_rev
            template = self._revisions.get((meta["uid"], rev), spec.get("template") or {})
            pod_name = f"{name}-{ordinal}"
            pod_spec = copy.deepcopy(template.get("spec") or {})
            pod_spec.setdefault("hostname", pod_name)
            if spec.get("serviceName"):
                pod_spec.setdefault("subdomain", spec["serviceName"])
            volumes = [v for v in pod_spec.get("volumes") or []]
            for claim in spec.get("volumeClaimTemplates") or []:
                cname = (claim.get("metadata") or {}).get("name", "")
                claim_name = f"{cname}-{pod_name}"
                self._ensure_claim(sts, claim, claim_name)
                volumes = [v for v in volumes if v.get("name") != cname]
                volumes.append({"name": cname, "persistentVolumeClaim": {"claimName": claim_name}})
            if volumes:
                pod_spec["volumes"] = volumes
            labels = {REVISION_LABEL: rev, "statefulset.kubernetes.io/pod-name": pod_name,
                      "apps.kubernetes.io/pod-index": str(ordinal)}  # fmt: skip
            failure = self._create_pod(
                sts, template, "statefulset-controller", name=pod_name, labels=labels,
                spec=pod_spec,
                failure=lambda err, p=pod_name: f"create Pod {p} in StatefulSet {name} failed "
                                                f"error: {err}",
            )  # fmt: skip
            if failure is not None:
                return failure
            if ordered:
                return None  # the next ordinal waits for this one to be Ready
        excess = sorted((o for o in pods if o >= replicas), reverse=True)
        if ordered:  # the highest first, one at a time, while all are Ready
            excess = excess[:1] if all(is_ready(p) for p in pods.values()) else []
        for ordinal in excess:
            self._delete_pod(pods.pop(ordinal))
        return None

    def _ensure_claim(self, sts: dict[str, Any], claim: dict[str, Any], claim_name: str) -> None:
        rt = self._type("", "persistentvolumeclaims")
        ns = sts["metadata"]["namespace"]
        if self.store.lookup(rt, ns, claim_name) is not None:
            return
        labels = dict((sts["spec"].get("selector") or {}).get("matchLabels") or {})
        pvc = {"apiVersion": "v1", "kind": "PersistentVolumeClaim",
               "metadata": {"name": claim_name, "labels": labels},
               "spec": copy.deepcopy(claim.get("spec") or {}),
               "status": {"phase": "Bound"}}  # fmt: skip
        self.store.create(rt, ns, pvc, keep_status=True)

    def _statefulset_roll(
        self,
        sts: dict[str, Any],
        pods: dict[int, dict[str, Any]],
        replicas: int,
        partition: int,
        update_rev: str,
    ) -> None:
        """RollingUpdate: from the highest ordinal down to the partition, one pod at a time,
        each only once every pod is Running and Ready."""
        if len(pods) < replicas or not all(is_ready(p) for p in pods.values()):
            return
        for ordinal in sorted(pods, reverse=True):
            if ordinal < partition:
                return
            if (pods[ordinal]["metadata"].get("labels") or {}).get(REVISION_LABEL) != update_rev:
                self._delete_pod(pods[ordinal])
                return

    # -- DaemonSet -----------------------------------------------------------------------------

    def _sync_daemonset(self, ds: dict[str, Any]) -> None:
        rt = self._type("apps", "daemonsets")
        meta, spec = ds["metadata"], ds["spec"]
        ns, name = meta["namespace"], meta["name"]
        if meta.get("deletionTimestamp"):
            return
        template = spec.get("template") or {}
        rev = template_hash(template)
        strategy = spec.get("updateStrategy") or {}
        wall = time.time()
        min_ready = spec.get("minReadySeconds", 0)
        by_node: dict[str, list[dict[str, Any]]] = {}
        for pod in self._owned(ds, self._pods(ns)):
            if not pod["metadata"].get("deletionTimestamp"):
                by_node.setdefault(pod["spec"].get("nodeName", ""), []).append(pod)
        nodes: dict[str, tuple[dict[str, Any] | None, dict[str, Any] | None]] = {}
        for node, pods in by_node.items():
            if node not in self.nodes:
                for pod in pods:
                    self._delete_pod(pod)
                continue
            pods.sort(key=lambda p: (p["metadata"]["creationTimestamp"], p["metadata"]["name"]))
            new = [p for p in pods if _label(p, REVISION_LABEL) == rev]
            old = [p for p in pods if _label(p, REVISION_LABEL) != rev]
            for extra in new[1:] + old[1:]:  # one pod per node (and revision, while surging)
                self._delete_pod(extra)
            nodes[node] = (new[0] if new else None, old[0] if old else None)
        labels = {REVISION_LABEL: rev, "pod-template-generation": str(meta.get("generation", 1))}

        def create(node: str) -> bool:
            if not self._may_create(ds):
                return False
            pod_spec = copy.deepcopy(template.get("spec") or {})
            pod_spec["nodeName"] = node
            return self._create_pod(ds, template, "daemonset-controller", labels=labels,
                                    spec=pod_spec) is None  # fmt: skip

        for node in self.nodes:
            if node not in nodes and not create(node):
                break
        if strategy.get("type", "RollingUpdate") == "RollingUpdate":
            self._roll_daemonset(strategy, nodes, min_ready, wall, create)
        on_node: dict[str, list[dict[str, Any]]] = {}
        for pod in self._owned(ds, self._pods(ns)):
            if not pod["metadata"].get("deletionTimestamp"):
                on_node.setdefault(pod["spec"].get("nodeName", ""), []).append(pod)

        def nodes_with(test: Callable[[dict[str, Any]], bool]) -> int:
            return sum(1 for n in self.nodes if any(test(p) for p in on_node.get(n, [])))

        available = nodes_with(lambda p: is_available(p, min_ready, wall))
        status = _omit_zero(
            {
                "currentNumberScheduled": nodes_with(lambda p: True),
                "numberMisscheduled": 0,
                "desiredNumberScheduled": len(self.nodes),
                "numberReady": nodes_with(is_ready),
                "observedGeneration": meta.get("generation", 1),
                "updatedNumberScheduled": nodes_with(lambda p: _label(p, REVISION_LABEL) == rev),
                "numberAvailable": available,
                "numberUnavailable": len(self.nodes) - available,
            },
            keep=("currentNumberScheduled", "numberMisscheduled", "desiredNumberScheduled",
                  "numberReady"),
        )  # fmt: skip
        self.store.write_status(rt, ns, name, status)

    def _roll_daemonset(
        self,
        strategy: dict[str, Any],
        nodes: dict[str, tuple[dict[str, Any] | None, dict[str, Any] | None]],
        min_ready: int,
        wall: float,
        create: Callable[[str], bool],
    ) -> None:
        """RollingUpdate: with maxSurge, start the new pod next to the old one and remove the
        old one once the new is available; else replace within maxUnavailable nodes."""
        rolling = strategy.get("rollingUpdate") or {}
        count = len(self.nodes)
        surge = scaled_value(rolling.get("maxSurge", 0), count, round_up=True)
        max_unavailable = scaled_value(rolling.get("maxUnavailable", 1), count, round_up=True)
        if not surge and not max_unavailable:
            max_unavailable = 1

        def up(pod: dict[str, Any] | None) -> bool:
            return pod is not None and is_available(pod, min_ready, wall)

        if surge:
            surging = sum(1 for new, old in nodes.values() if new and old)
            for node, (new, old) in nodes.items():
                if old is None:
                    continue
                if new is not None:
                    if up(new):
                        self._delete_pod(old)
                elif not up(old):
                    self._delete_pod(old)  # an unavailable old pod costs nothing to replace
                elif surging < surge and create(node):
                    surging += 1
            return
        unavailable = sum(
            1 for n in self.nodes if not (up(nodes.get(n, (None, None))[0])
                                         or up(nodes.get(n, (None, None))[1]))
        )  # fmt: skip
        budget = max_unavailable - unavailable
        for new, old in nodes.values():
            if old is None:
                continue
            if new is not None:  # left over from a surge
                if up(new):
                    self._delete_pod(old)
            elif not up(old):
                self._delete_pod(old)
            elif budget > 0:
                self._delete_pod(old)
                budget -= 1

    # -- scheduler and kubelets ----------------------------------------------------------------

    def _run_kubelets(self) -> None:
        rt = self._type("", "pods")
        live = set()
        per_node = {n: 0 for n in self.nodes}
        entries = self._entries("", "pods")
        for entry in entries:
            node = entry.obj["spec"].get("nodeName")
            if node in per_node:
                per_node[node] += 1
        for entry in entries:
            pod = entry.obj
            meta = pod["metadata"]
            uid = meta["uid"]
            live.add(uid)
            if meta.get("deletionTimestamp") or not self.nodes:
                continue
            if not pod["spec"].get("nodeName"):
                node = min(self.nodes, key=lambda n: (per_node[n], n))
                per_node[node] += 1
                self._bind(rt, pod, node)
                pod = self.store.lookup(rt, entry.namespace, entry.name).obj
            started = self._seen.setdefault(uid, time.monotonic())
            due = started + self.ready_delay
            if time.monotonic() < due:
                self._wake_at(due)
                continue
            status = self._pod_status(pod)
            self.store.write_status(rt, entry.namespace, entry.name, status)
        for uid in set(self._seen) - live:
            del self._seen[uid]

    def _bind(self, rt: ResourceType, pod: dict[str, Any], node: str) -> None:
        stamp = now()

        def bind(obj: dict[str, Any]) -> None:
            obj["spec"]["nodeName"] = node
            status = obj.setdefault("status", {})
            status["phase"] = "Pending"
            status["conditions"] = [
                {
                    "type": "PodScheduled",
                    "status": "True",
                    "lastProbeTime": None,
                    "lastTransitionTime": stamp,
                }
            ]
            status["hostIP"] = _node_ip(self.nodes, node)
            status["startTime"] = stamp
            status["containerStatuses"] = [
                {"name": c["name"], "image": c.get("image", ""), "imageID": "",
                 "ready": False, "restartCount": 0, "started": False,
                 "state": {"waiting": {"reason": "ContainerCreating"}}}
                for c in obj["spec"].get("containers") or []
            ]  # fmt: skip

        meta = pod["metadata"]
        self.store.mutate(rt, meta["namespace"], meta["name"], bind)

    def _pod_status(self, pod: dict[str, Any]) -> dict[str, Any]:
        """What the kubelet reports once it tried to start the pod's containers."""
        meta, spec = pod["metadata"], pod["spec"]
        old = pod.get("status") or {}
        stamp = now()
        ns = meta["namespace"]
        mount_error = self._volume_error(ns, spec)
        previous = {c["name"]: c for c in old.get("containerStatuses") or []}
        statuses, unready, config_error = [], [], False
        for c in spec.get("containers") or []:
            prev = previous.get(c["name"]) or {}
            entry: dict[str, Any] = {
                "name": c["name"],
                "image": c.get("image", ""),
                "imageID": "",
                "restartCount": prev.get("restartCount", 0),
            }
            problem = self._config_error(ns, c)
            if mount_error:
                entry["state"] = {"waiting": {"reason": "ContainerCreating"}}
            elif problem:
                config_error = True
                entry["state"] = {
                    "waiting": {"reason": "CreateContainerConfigError", "message": problem}
                }
            elif c.get("image") in self.broken_images:
                entry["restartCount"] = max(1, entry["restartCount"])
                entry["state"] = {
                    "waiting": {
                        "reason": "CrashLoopBackOff",
                        "message": f"back-off 10s restarting failed container={c['name']} "
                        f"pod={meta['name']}_{ns}({meta['uid']})",
                    }
                }
                entry["lastState"] = {"terminated": {"exitCode": 1, "reason": "Error"}}
            else:
                running = (prev.get("state") or {}).get("running")
                entry["state"] = {"running": {"startedAt": (running or {}).get("startedAt", stamp)}}
            ready = "running" in entry["state"]
            entry["ready"] = ready
            entry["started"] = ready
            entry["containerID"] = f"containerd://{meta['uid']}-{c['name']}" if ready else ""
            if not entry["containerID"]:
                del entry["containerID"]
            if not ready:
                unready.append(c["name"])
            statuses.append(entry)
        started = not mount_error
        phase = "Running" if started and any("running" in s["state"] or "lastState" in s
                                             for s in statuses) else "Pending"  # fmt: skip
        if config_error and not any("running" in s["state"] for s in statuses):
            phase = "Pending"
        ready = "True" if not unready else "False"
        why = {} if not unready else {
            "reason": "ContainersNotReady",
            "message": f"containers with unready status: [{' '.join(unready)}]"}  # fmt: skip
        conditions = [
            {"type": "PodReadyToStartContainers", "status": "True" if started else "False"},
            {"type": "Initialized", "status": "True"},
            {"type": "Ready", "status": ready, **why},
            {"type": "ContainersReady", "status": ready, **why},
            {"type": "PodScheduled", "status": "True"},
        ]
        for cond in conditions:
            cond["lastProbeTime"] = None
        status = {
            "phase": phase,
            "conditions": _conditions(old.get("conditions"), conditions, stamp),
            "hostIP": _node_ip(self.nodes, spec.get("nodeName", "")),
            "podIP": _pod_ip(meta["uid"]),
            "startTime": old.get("startTime", stamp),
            "containerStatuses": statuses,
            "qosClass": _qos_class(spec),
        }
        status["podIPs"] = [{"ip": status["podIP"]}]
        status["hostIPs"] = [{"ip": status["hostIP"]}]
        if spec.get("initContainers"):
            status["initContainerStatuses"] = [
                {"name": c["name"], "image": c.get("image", ""), "imageID": "", "ready": True,
                 "restartCount": 0, "started": False,
                 "state": {"terminated": {"exitCode": 0, "reason": "Completed"}}}
                for c in spec["initContainers"]
            ]  # fmt: skip
        return status

    def _lookup_data(self, plural: str, ns: str, name: str) -> dict[str, Any] | None:
        entry = self.store.lookup(self._type("", plural), ns, name)
        if entry is None:
            return None
        obj = entry.obj
        return {**(obj.get("data") or {}), **(obj.get("binaryData") or {})}

    def _config_error(self, ns: str, container: dict[str, Any]) -> str | None:
        """The kubelet's CreateContainerConfigError for a missing Secret/ConfigMap or key."""
        kinds = {"secretKeyRef": ("secrets", "secret", "Secret"),
                 "configMapKeyRef": ("configmaps", "configmap", "ConfigMap")}  # fmt: skip
        for env in container.get("envFrom") or []:
            for key, (plural, lower, _) in (
                ("secretRef", kinds["secretKeyRef"]),
                ("configMapRef", kinds["configMapKeyRef"]),
            ):
                ref = env.get(key)
                if ref and not ref.get("optional") and self._lookup_data(
                        plural, ns, ref.get("name", "")) is None:  # fmt: skip
                    return f'{lower} "{ref.get("name", "")}" not found'
        for env in container.get("env") or []:
            source = env.get("valueFrom") or {}
            for key, (plural, lower, kind) in kinds.items():
                ref = source.get(key)
                if not ref or ref.get("optional"):
                    continue
                data = self._lookup_data(plural, ns, ref.get("name", ""))
                if data is None:
                    return f'{lower} "{ref.get("name", "")}" not found'
                if ref.get("key") not in data:
                    return f"couldn't find key {ref.get('key')} in {kind} {ns}/{ref.get('name')}"
        return None

    def _volume_error(self, ns: str, spec: dict[str, Any]) -> str | None:
        """A Secret/ConfigMap volume whose object is missing: the pod stays ContainerCreating."""
        for vol in spec.get("volumes") or []:
            for key, plural, name_key in (
                ("secret", "secrets", "secretName"),
                ("configMap", "configmaps", "name"),
            ):
                src = vol.get(key)
                if src and not src.get("optional") and self._lookup_data(
                        plural, ns, src.get(name_key, "")) is None:  # fmt: skip
                    return f"{key} {src.get(name_key)} not found"
        return None

    # -- waiting -------------------------------------------------------------------------------

    def settle(self, timeout: float) -> None:
        """Wait until a pass over the current state changes nothing and no pod is still
        starting; raises TimeoutError otherwise."""
        deadline = time.monotonic() + timeout
        with self.store.cond:
            while self.idle_rv != self.store.rv:
                if self.error is not None:
                    raise RuntimeError("emulated cluster failed") from self.error
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError(f"the emulated cluster did not settle in {timeout}s")
                self.store.cond.wait(min(left, 0.05))


# -- pure helpers ------------------------------------------------------------------------------


def _label(obj: dict[str, Any], key: str) -> str | None:
    return (obj["metadata"].get("labels") or {}).get(key)


def _strip_hash(template: dict[str, Any]) -> dict[str, Any]:
    template = copy.deepcopy(template)
    labels = (template.get("metadata") or {}).get("labels")
    if labels:
        labels.pop(HASH_LABEL, None)
    return template


def _same_template(rs: dict[str, Any], template: dict[str, Any]) -> bool:
    return _strip_hash(rs["spec"].get("template") or {}) == _strip_hash(template)


def _revision(rs: dict[str, Any]) -> int:
    try:
        return int((rs["metadata"].get("annotations") or {}).get(REVISION_ANNOTATION, 0))
    except ValueError:
        return 0


def _rs_active(rs: dict[str, Any]) -> bool:
    return bool(rs["spec"].get("replicas") or (rs.get("status") or {}).get("replicas"))


def _rolling_bounds(spec: dict[str, Any], replicas: int) -> tuple[int, int]:
    """(maxSurge, maxUnavailable) resolved as the Deployment controller does."""
    rolling = (spec.get("strategy") or {}).get("rollingUpdate") or {}
    surge = scaled_value(rolling.get("maxSurge", "25%"), replicas, round_up=True)
    unavailable = scaled_value(rolling.get("maxUnavailable", "25%"), replicas, round_up=False)
    if surge == 0 and unavailable == 0:
        unavailable = 1
    return surge, min(unavailable, replicas)


def _annotate(key: str, value: str) -> Callable[[dict[str, Any]], None]:
    def change(obj: dict[str, Any]) -> None:
        obj["metadata"].setdefault("annotations", {})[key] = value

    return change


def _deletion_rank(pod: dict[str, Any]) -> tuple:
    """Which pods a ReplicaSet removes first: unscheduled, pending, not ready, then newest."""
    status = pod.get("status") or {}
    return (
        bool(pod["spec"].get("nodeName")),
        status.get("phase") == "Running",
        is_ready(pod),
        -_parse_time(pod["metadata"].get("creationTimestamp")),
        pod["metadata"]["name"],
    )


def _ordinal(pod: dict[str, Any], sts_name: str) -> int | None:
    name = pod["metadata"]["name"]
    prefix, _, number = name.rpartition("-")
    if prefix != sts_name or not number.isdigit():
        return None
    return int(number)


def _node_ip(nodes: list[str], node: str) -> str:
    return f"10.0.0.{(nodes.index(node) + 10) if node in nodes else 250}"


def _pod_ip(uid: str) -> str:
    value = int(uid.replace("-", "")[:6], 16)
    return f"10.244.{(value >> 8) & 0xFF}.{value & 0xFF or 1}"


def _qos_class(spec: dict[str, Any]) -> str:
    resources = [c.get("resources") or {} for c in spec.get("containers") or []]
    if not any(r.get("limits") or r.get("requests") for r in resources):
        return "BestEffort"
    for r in resources:
        limits, requests = r.get("limits") or {}, r.get("requests") or {}
        for key in ("cpu", "memory"):
            if not limits.get(key) or requests.get(key, limits[key]) != limits[key]:
                return "Burstable"
    return "Guaranteed"


__all__ = ["Cluster", "is_ready", "template_hash"]
