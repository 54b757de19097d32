"""The Eviction API (pods/eviction) and PodDisruptionBudgets, as the API server and the
disruption controller count them: healthy = Ready pods, expected = the owning controllers'
replicas for percentages and maxUnavailable, the number of pods for an integer minAvailable.
"""

from __future__ import annotations

import math
from typing import Any

from . import errors
from .errors import ApiError
from .rules import _selector_matches
from .store import Store, _dumps

TOO_MANY = "Cannot evict pod as it would violate the pod's disruption budget."


def _is_ready(pod: dict[str, Any]) -> bool:
    return any(
        c.get("type") == "Ready" and c.get("status") == "True"
        for c in (pod.get("status") or {}).get("conditions") or []
    )


def _expected_from_controllers(store: Store, ns: str, pods: list[dict[str, Any]]) -> int:
    """The sum of the scale of the pods' controllers (a Deployment for its ReplicaSets)."""
    seen: dict[str, int] = {}
    for pod in pods:
        ref = next((r for r in pod["metadata"].get("ownerReferences") or []
                    if r.get("controller")), None)  # fmt: skip
        if ref is None:
            seen[pod["metadata"]["uid"]] = 1
            continue
        owner = _lookup_owner(store, ns, ref)
        if owner is None:
            seen[ref.get("uid", "")] = 1
            continue
        if owner["kind"] == "ReplicaSet":
            dep_ref = next(
                (
                    r
                    for r in owner["metadata"].get("ownerReferences") or []
                    if r.get("controller") and r.get("kind") == "Deployment"
                ),
                None,
            )
            dep = _lookup_owner(store, ns, dep_ref) if dep_ref else None
            if dep is not None:
                owner = dep
        if owner["kind"] == "DaemonSet":
            scale = (owner.get("status") or {}).get("desiredNumberScheduled", 0)
        else:
            scale = (owner.get("spec") or {}).get("replicas", 1)
        seen[owner["metadata"]["uid"]] = scale
    return sum(seen.values())


def _lookup_owner(store: Store, ns: str, ref: dict[str, Any]) -> dict[str, Any] | None:
    group = ref.get("apiVersion", "").rpartition("/")[0]
    for rt in store.types.values():
        if rt.group == group and rt.kind == ref.get("kind"):
            entry = store.lookup(rt, ns, ref.get("name", ""))
            if entry is not None and entry.obj["metadata"]["uid"] == ref.get("uid"):
                return entry.obj
            return None
    return None


def budget(store: Store, pdb: dict[str, Any]) -> dict[str, int]:
    """currentHealthy, desiredHealthy, expectedPods, disruptionsAllowed of a budget."""
    ns = pdb["metadata"]["namespace"]
    spec = pdb.get("spec") or {}
    selector = spec.get("selector")
    pods = [
        e.obj
        for e in store._bucket(("", "pods"), ns)
        if selector is not None
        and _selector_matches(selector, e.obj["metadata"].get("labels") or {})
        and not e.obj["metadata"].get("deletionTimestamp")
    ]
    healthy = sum(1 for p in pods if _is_ready(p))
    min_available = spec.get("minAvailable")
    max_unavailable = spec.get("maxUnavailable")
    if min_available is not None and isinstance(min_available, int):
        expected, desired = len(pods), min_available
    elif min_available is not None:
        expected = _expected_from_controllers(store, ns, pods)
        desired = math.ceil(int(str(min_available).rstrip("%")) * expected / 100)
    elif max_unavailable is not None:
        expected = _expected_from_controllers(store, ns, pods)
        if isinstance(max_unavailable, int):
            allowed = max_unavailable
        else:
            allowed = math.ceil(int(str(max_unavailable).rstrip("%")) * expected / 100)
        desired = max(0, expected - allowed)
    else:
        expected, desired = len(pods), len(pods)  # neither given: no voluntary disruption
    return {
        "currentHealthy": healthy,
        "desiredHealthy": desired,
        "expectedPods": expected,
        "disruptionsAllowed": max(0, healthy - desired),
    }


def evict(store: Store, ns: str, name: str, body: Any, dry_run: bool) -> tuple[int, str]:
    """POST pods/NAME/eviction: 201 and the pod deleted, 429 while a budget forbids it."""
    if not isinstance(body, dict) or body.get("kind") not in (None, "Eviction"):
        raise errors.bad_request("the body of the request must be an Eviction")
    group = (body.get("apiVersion") or "policy/v1").rpartition("/")[0]
    if group != "policy":
        raise errors.bad_request(f"unsupported Eviction apiVersion {body.get('apiVersion')!r}")
    body_name = (body.get("metadata") or {}).get("name")
    if body_name and body_name != name:
        raise errors.bad_request("name in URL does not match name in Eviction object")
    pods_rt = store.types[("", "v1", "pods")]
    options = body.get("deleteOptions") or {}
    with store.lock:
        entry = store.lookup(pods_rt, ns, name)
        if entry is None:
            raise errors.not_found("", "pods", name)
        pod = entry.obj
        phase = (pod.get("status") or {}).get("phase")
        if phase not in ("Succeeded", "Failed", "Pending") and not pod["metadata"].get(
            "deletionTimestamp"
        ):
            labels = pod["metadata"].get("labels") or {}
            pdbs = [
                e.obj
                for e in store._bucket(("policy", "poddisruptionbudgets"), ns)
                if (e.obj.get("spec") or {}).get("selector") is not None
                and _selector_matches(e.obj["spec"]["selector"], labels)
            ]
            if len(pdbs) > 1:
                raise ApiError(500, "InternalError", "This pod has more than one "
                               "PodDisruptionBudget, which the eviction subresource does not "
                               "support.", {})  # fmt: skip
            if pdbs:
                _check_budget(store, pdbs[0], pod)
        store.delete(pods_rt, ns, name, dry_run, options.get("propagationPolicy"),
                     options.get("preconditions"), admit=False)  # fmt: skip
    status = {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success",
              "code": 201}  # fmt: skip
    return 201, _dumps(status)


def _check_budget(store: Store, pdb: dict[str, Any], pod: dict[str, Any]) -> None:
    counts = budget(store, pdb)
    ready = _is_ready(pod)
    if not ready:
        policy = (pdb.get("spec") or {}).get("unhealthyPodEvictionPolicy", "IfHealthyBudget")
        if policy == "AlwaysAllow" or counts["currentHealthy"] >= counts["desiredHealthy"]:
            return
    elif counts["disruptionsAllowed"] > 0:
        return
    name = pdb["metadata"]["name"]
    message = (f"The disruption budget {name} needs {counts['desiredHealthy']} healthy pods and "
               f"has {counts['currentHealthy']} currently")  # fmt: skip
    if not ready:
        message = f"The disruption budget {name} does not allow evicting pods currently"
    raise ApiError(429, "TooManyRequests", TOO_MANY,
                   {"causes": [{"reason": "DisruptionBudget", "message": message}]})  # fmt: skip


def budget_status(store: Store, pdb: dict[str, Any]) -> dict[str, Any]:
    """The status the disruption controller keeps on a PodDisruptionBudget."""
    counts = budget(store, pdb)
    allowed = counts["disruptionsAllowed"] > 0
    return {
        "observedGeneration": pdb["metadata"].get("generation", 1),
        **counts,
        "conditions": [
            {
                "type": "DisruptionAllowed",
                "status": "True" if allowed else "False",
                "reason": "SufficientPods" if allowed else "InsufficientPods",
                "message": "",
                "observedGeneration": pdb["metadata"].get("generation", 1),
            }
        ],
    }
