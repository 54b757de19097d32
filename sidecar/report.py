"""Report a run: claim the next number in status.backupCount, then create Event <backup>-<n>."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from datetime import datetime

from reconciler.constants import API_VERSION, KIND, PLURAL
from reconciler.kube import ApiError, Kube, api_path
from sidecar.job import Outcome

log = logging.getLogger(__name__)

COMPONENT = "restik"
MAX_MESSAGE = 1024
MAX_CLAIMS = 200  # Events of a deleted-and-recreated Backup may still hold low numbers


class BackupGone(Exception):
    """The Backup was deleted before its run could be reported."""


def rfc3339(t: datetime) -> str:
    return t.strftime("%Y-%m-%dT%H:%M:%SZ")


def format_duration(seconds: float) -> str:
    return f"{seconds:.1f}s"


def status_patch(
    status: Mapping, outcome: Outcome, n: int, started: datetime, resource_version: str
) -> dict:
    """The merge patch claiming number ``n``; resourceVersion makes it conditional."""
    new = {
        "backupCount": n,
        "lastBackupTime": rfc3339(started),
        "lastBackupDuration": format_duration(outcome.duration),
    }
    if not status.get("firstBackupTime"):
        new["firstBackupTime"] = rfc3339(started)
    if outcome.success:
        new["lastSuccessfulBackupTime"] = rfc3339(started)
    return {"metadata": {"resourceVersion": resource_version}, "status": new}


def event_body(
    backup: Mapping, n: int, outcome: Outcome, now: datetime, host: str, instance: str
) -> dict:
    meta = backup["metadata"]
    message = outcome.message
    if len(message) > MAX_MESSAGE:
        message = message[: MAX_MESSAGE - 3] + "..."
    return {
        "apiVersion": "v1",
        "kind": "Event",
        "metadata": {
            "name": f"{meta['name']}-{n}",
            "namespace": meta["namespace"],
            "labels": {"app.kubernetes.io/managed-by": COMPONENT},
        },
        "involvedObject": {
            "apiVersion": API_VERSION,
            "kind": KIND,
            "name": meta["name"],
            "namespace": meta["namespace"],
            "uid": meta.get("uid", ""),
            "resourceVersion": meta.get("resourceVersion", ""),
        },
        "reason": "Success" if outcome.success else "Failed",
        "type": "Normal" if outcome.success else "Warning",
        "message": message,
        "source": {"component": COMPONENT, "host": host},
        "firstTimestamp": rfc3339(now),
        "lastTimestamp": rfc3339(now),
        "count": 1,
        "reportingComponent": COMPONENT,
        "reportingInstance": instance,
    }


def report(
    kube: Kube,
    namespace: str,
    name: str,
    outcome: Outcome,
    *,
    started: datetime,
    now: datetime,
    host: str,
    instance: str,
) -> str:
    """Claim the next run number (optimistic concurrency) and create its Event; its name."""
    path = api_path(API_VERSION, PLURAL, namespace, name)
    at_least = 0
    for _ in range(MAX_CLAIMS):
        try:
            current = kube.get(path)
        except ApiError as exc:
            if exc.not_found:
                raise BackupGone(f"Backup {namespace}/{name} is gone") from None
            raise
        status = current.get("status") or {}
        count = status.get("backupCount")
        n = max(count if isinstance(count, int) and count >= 0 else 0, at_least) + 1
        rv = current["metadata"]["resourceVersion"]
        try:
            updated = kube.merge_patch(
                api_path(API_VERSION, PLURAL, namespace, name, "status"),
                status_patch(status, outcome, n, started, rv),
            )
        except ApiError as exc:
            if exc.conflict:  # someone else (a replica, the controller) wrote first
                log.debug("status of %s/%s changed meanwhile; re-reading", namespace, name)
                continue
            if exc.not_found:
                raise BackupGone(f"Backup {namespace}/{name} is gone") from None
            raise
        body = event_body(updated, n, outcome, now, host, instance)
        if _create_event(kube, namespace, body):
            return body["metadata"]["name"]
        # An old Event holds this name (a Backup deleted and re-created): numbering never
        # repeats, so claim the next number.
        log.info("Event %s exists already; taking the next number", body["metadata"]["name"])
        at_least = n
    raise RuntimeError(f"could not claim a run number for {namespace}/{name}")


def _create_event(kube: Kube, namespace: str, body: dict) -> bool:
    """Create the Event; False if its name is taken (409 AlreadyExists)."""
    for _ in range(5):
        try:
            kube.create(api_path("v1", "events", namespace), body)
            return True
        except ApiError as exc:
            if not exc.conflict:
                raise
            if exc.reason == "AlreadyExists":
                return False
            # another kind of conflict on a create is transient: the same name again
    return False
