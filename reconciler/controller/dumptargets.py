"""The pods a dump Restore (``spec.command``) pipes `restic dump` into, each with the restic
host whose snapshot it gets: pure, shared by the planner (it waits until they are Ready)
and the executor (it execs into them)."""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from reconciler.controller.rollout import is_ready


@dataclass(frozen=True)
class DumpTarget:
    pod: str
    host: str  # the restic host the pod's data belongs to (as the sidecar names it)
    ready: bool
    spec: Mapping  # the pod's spec (its containers: where the command runs)


def dump_targets(kind: str, name: str, pods: Iterable[Mapping]) -> list[DumpTarget]:
    """Every pod of a StatefulSet (host: the pod, by ordinal) or a DaemonSet (host: its
    node), sorted by host; for the kinds whose replicas share their data (Deployment,
    ReplicaSet, ReplicationController; host: the workload) the first Ready pod by name, the
    database the replicas share receiving the dump once. Pods that ended or are being
    deleted are no target."""
    live = [
        p
        for p in pods
        if isinstance(p, Mapping)
        and (p.get("status") or {}).get("phase") not in ("Succeeded", "Failed")
        and not (p.get("metadata") or {}).get("deletionTimestamp")
    ]
    out = []
    if kind == "StatefulSet":
        ordinal = re.compile(re.escape(name) + r"-\d+$")
        for pod in live:
            pod_name = str((pod.get("metadata") or {}).get("name"))
            if ordinal.match(pod_name):
                out.append(DumpTarget(pod_name, pod_name, is_ready(pod), pod.get("spec") or {}))
    elif kind == "DaemonSet":
        for pod in live:
            node = (pod.get("spec") or {}).get("nodeName")
            if node:
                pod_name = str((pod.get("metadata") or {}).get("name"))
                out.append(DumpTarget(pod_name, str(node), is_ready(pod), pod.get("spec") or {}))
    else:
        ready = sorted(
            (p for p in live if is_ready(p)), key=lambda p: str(p["metadata"].get("name"))
        )
        if ready:
            pod = ready[0]
            out.append(DumpTarget(str(pod["metadata"]["name"]), name, True, pod.get("spec") or {}))
    return sorted(out, key=lambda t: t.host)
