"""What the controller keeps of the objects it LISTs, and how it reads them."""

from __future__ import annotations

from collections.abc import Mapping

from reconciler.api.constants import CONFIG_LABEL, HASH_ANNOTATION
from reconciler.controller.podtemplate import WorkloadRef


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
