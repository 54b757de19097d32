"""Following the Backup through the API: retry pacing, error lines, the pod's workload."""

from __future__ import annotations

import logging
import random
import threading
from collections.abc import Callable

from reconciler.api.constants import PLURAL, TRIGGER_ANNOTATION
from reconciler.kube.resource import BACKUPS

log = logging.getLogger("restik.watch")

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


def follow_backup(
    kube: Callable,
    namespace: str,
    name: str,
    resync: float,
    deliver: Callable[[dict | None], None],
    stop: threading.Event,
    on_error: Callable[[Exception], None],
) -> None:
    """LIST then WATCH the Backup ``name`` until ``stop``, handing each version (None when
    it is gone) to ``deliver``; after an error, ``on_error`` and a backoff, then again.
    ``kube()`` gives the current client (it is replaced after a 401)."""
    path = BACKUPS.path(namespace)
    selector = {"fieldSelector": f"metadata.name={name}"}

    def ours(obj: dict) -> bool:
        return (obj.get("metadata") or {}).get("name") == name

    failures = 0
    while not stop.is_set():
        try:
            listed = kube().get(path, **selector)
            items = [i for i in listed.get("items") or [] if ours(i)]
            deliver(items[0] if items else None)
            rv = listed["metadata"]["resourceVersion"]
            for event in kube().watch(path, rv, None, int(resync), params=selector):
                failures = 0
                kind, obj = event.get("type"), event.get("object") or {}
                if kind == "ERROR":
                    log.debug("watch ended: %s", obj.get("message"))
                    break
                if kind == "BOOKMARK" or not ours(obj):
                    continue
                deliver(None if kind == "DELETED" else obj)
                if stop.is_set():
                    return
        except Exception as exc:
            failures += 1
            delay = backoff(failures)
            log.warning("following %s %s failed (%s); again in %.0fs",
                        PLURAL, name, one_line(exc), delay)  # fmt: skip
            on_error(exc)
            stop.wait(delay)


def pending_trigger(raw: dict | None, seen: str | None, host: str | None = None) -> str | None:
    """The backup-now annotation's value when it asks for a run that this sidecar has not
    taken up (``seen``) and its host has not served yet (status.triggers[host]: the other
    pods of a StatefulSet or DaemonSet serve it too); else None."""
    meta = (raw or {}).get("metadata") or {}
    value = (meta.get("annotations") or {}).get(TRIGGER_ANNOTATION)
    if not isinstance(value, str) or not value or value == seen:
        return None
    triggers = ((raw or {}).get("status") or {}).get("triggers")
    served = triggers.get(host) if isinstance(triggers, dict) and host is not None else None
    if isinstance(served, dict) and served.get("trigger") == value:
        return None
    return value
