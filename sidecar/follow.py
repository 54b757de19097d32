"""Following the Backup through the API: retry pacing, error lines, the pod's workload."""

from __future__ import annotations

import random

MAX_BACKOFF = 30.0


def backoff(failures: int) -> float:
    """Seconds before attempt ``failures + 1``: exponential, capped, with jitter (so that
    the sidecars of many pods do not retry in step)."""
    base = min(MAX_BACKOFF, 0.5 * 2 ** min(failures, 10))
    return base * (0.5 + random.random() / 2)  # noqa: S311 - jitter, not crypto


def one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return (text[0] if text else type(exc).__name__)[:300]


def workload_from_pod(pod: dict) -> tuple[str, str] | None:
    """The workload owning a pod, from its controller ownerReference."""
    for ref in (pod.get("metadata") or {}).get("ownerReferences") or []:
        if not ref.get("controller"):
            continue
        kind, name = ref.get("kind"), ref.get("name")
        template_hash = ((pod.get("metadata") or {}).get("labels") or {}).get("pod-template-hash")
        if kind == "ReplicaSet" and template_hash and name.endswith("-" + template_hash):
            return ("Deployment", name[: -len(template_hash) - 1])
        return (kind, name)
    return None
