"""The restic hosts a workload's pods back up under, as the sidecar names them
(sidecar.restic.host_for): a StatefulSet's pods by ordinal, a DaemonSet's by node; the
replicas of the other kinds share one host, the workload's name. Pure, stdlib only."""

from __future__ import annotations

from collections.abc import Iterable, Mapping


def replicas(obj: Mapping) -> int:
    """spec.replicas (default 1, as the API server defaults it)."""
    value = (obj.get("spec") or {}).get("replicas", 1)
    return value if isinstance(value, int) and not isinstance(value, bool) else 1


def per_pod_hosts(obj: Mapping, pods: Iterable[Mapping]) -> set[str] | None:
    """The hosts of a StatefulSet (``<name>-<ordinal>`` from spec.ordinals.start, one per
    replica) or of a DaemonSet (the nodes of ``pods``, its pods); None for the kinds whose
    replicas share one host."""
    kind = obj.get("kind")
    if kind == "StatefulSet":
        name = (obj.get("metadata") or {}).get("name")
        start = ((obj.get("spec") or {}).get("ordinals") or {}).get("start", 0)
        start = start if isinstance(start, int) and not isinstance(start, bool) else 0
        return {f"{name}-{i}" for i in range(start, start + replicas(obj))}
    if kind == "DaemonSet":
        nodes = ((p.get("spec") or {}).get("nodeName") for p in pods)
        return {str(node) for node in nodes if node}
    return None
