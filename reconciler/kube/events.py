"""core/v1 Events and the API's time format: one builder for the controller's warnings (on
a Backup or a workload) and the sidecar's run reports; one setter of a status condition."""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from datetime import UTC, datetime

from reconciler.api.constants import API_VERSION, KIND

MAX_MESSAGE = 1024  # of an Event's and a condition's message


def rfc3339(t: datetime) -> str:
    """``t`` as the API writes times (seconds, "Z"); a naive ``t`` is taken as UTC."""
    if t.tzinfo is not None:
        t = t.astimezone(UTC)
    return t.strftime("%Y-%m-%dT%H:%M:%SZ")


def now_rfc3339() -> str:
    return rfc3339(datetime.now(UTC))


def clip(message: str, limit: int = MAX_MESSAGE) -> str:
    """At most ``limit`` characters, "..." marking a cut."""
    return message if len(message) <= limit else message[: limit - 3] + "..."


def backup_event(backup: Mapping, *, absent: str | None = None, kind: str = KIND, **fields) -> dict:
    """An Event on ``backup`` (its metadata as read; ``kind``: another restik kind, e.g. a
    Restore; ``fields`` as object_event takes them); ``absent`` stands for a uid or
    resourceVersion the object lacks."""
    meta = backup.get("metadata") or {}
    involved = {
        "apiVersion": API_VERSION,
        "kind": kind,
        "name": meta.get("name"),
        "namespace": meta.get("namespace"),
        "uid": meta.get("uid", absent),
        "resourceVersion": meta.get("resourceVersion", absent),
    }
    return object_event(involved, **fields)


def warning_event(
    obj: Mapping, reason: str, message: str, now: str, component: str, kind: str = KIND
) -> dict:
    """A Warning Event on a restik object (a Backup, or ``kind``), named
    "<name>.<hash of time, reason, message>": never the sidecar's "<name>-<n>"."""
    suffix = hashlib.sha256(f"{now}/{reason}/{message}".encode()).hexdigest()[:16]
    name = (obj.get("metadata") or {}).get("name")
    return backup_event(
        obj,
        name=f"{name}.{suffix}",
        reason=reason,
        message=message,
        warning=True,
        now=now,
        component=component,
        kind=kind,
    )


def object_event(
    involved: Mapping,
    *,
    name: str,
    reason: str,
    message: str,
    warning: bool,
    now: str,
    component: str,
    host: str | None = None,
    instance: str | None = None,
    labels: Mapping | None = None,
) -> dict:
    """An Event in the namespace of ``involved`` (its involvedObject: apiVersion, kind,
    name, namespace, uid, ...). The message is clipped to MAX_MESSAGE."""
    metadata: dict = {"name": name, "namespace": involved.get("namespace")}
    if labels:
        metadata["labels"] = dict(labels)
    source = {"component": component}
    if host is not None:
        source["host"] = host
    body = {
        "apiVersion": "v1",
        "kind": "Event",
        "metadata": metadata,
        "involvedObject": dict(involved),
        "reason": reason,
        "message": clip(message),
        "type": "Warning" if warning else "Normal",
        "source": source,
        "reportingComponent": component,
        "firstTimestamp": now,
        "lastTimestamp": now,
        "count": 1,
    }
    if instance is not None:
        body["reportingInstance"] = instance
    return body


def with_condition(
    status: Mapping, ctype: str, value: str, reason: str, message: str, now: datetime
) -> list[dict]:
    """status.conditions with ``ctype`` set; its lastTransitionTime moves with its status."""
    old = [c for c in status.get("conditions") or () if isinstance(c, Mapping)]
    prev = next((c for c in old if c.get("type") == ctype), {})
    since = prev.get("lastTransitionTime") if prev.get("status") == value else None
    cond = {
        "type": ctype,
        "status": value,
        "reason": reason,
        "message": clip(message),
        "lastTransitionTime": since or rfc3339(now),
    }
    return [c for c in old if c.get("type") != ctype] + [cond]
