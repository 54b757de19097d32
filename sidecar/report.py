"""Report a run: claim the next number in status.backupCount, then create Event <backup>-<n>."""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from datetime import datetime

from reconciler.kube.client import ApiError, Kube
from reconciler.kube.events import MAX_MESSAGE, backup_event, clip, rfc3339
from reconciler.kube.resource import BACKUPS, EVENTS
from sidecar.outcome import Outcome

log = logging.getLogger(__name__)

COMPONENT = "restik"
MAX_CLAIMS = 200  # Events of a deleted-and-recreated Backup may still hold low numbers
# status.recentRuns: the run history that outlives Events (the API server drops those after
# --event-ttl, one hour by default). Newest first, bounded so the object stays small.
MAX_RECENT_RUNS = 10
MAX_RUN_MESSAGE = 256
# status.snapshots: the newest snapshot of each host (id, time), newest first; bounded (the
# hosts backed up longest ago fall off: a StatefulSet scaled down, a renamed workload).
MAX_SNAPSHOT_HOSTS = 100
# The condition the sidecars own (the controller owns Ready): how the latest run went.
RUN_CONDITION = "LastRunSucceeded"


class BackupGone(Exception):
    """The Backup was deleted before its run could be reported."""


def format_duration(seconds: float) -> str:
    return f"{seconds:.1f}s"


def run_entry(n: int, outcome: Outcome, started: datetime, host: str) -> dict:
    """One entry of status.recentRuns. The message is the Event's (restic's output is
    redacted by the runner before it gets here), clipped."""
    entry = {
        "number": n,
        "result": "Success" if outcome.success else "Failed",
        "time": rfc3339(started),
        "duration": format_duration(outcome.duration),
        "host": host,
        "message": clip(outcome.message, MAX_RUN_MESSAGE),
    }
    if outcome.summary is not None:
        entry["snapshotID"] = outcome.summary.snapshot_id
    return entry


def newest_snapshots(status: Mapping, host: str, snapshot_id: str, started: datetime) -> list:
    """status.snapshots with ``host``'s entry replaced by the snapshot just saved; the other
    hosts' entries (written by their own sidecars) kept as they are."""
    old = [
        e
        for e in status.get("snapshots") or []
        if isinstance(e, Mapping) and isinstance(e.get("host"), str) and e.get("host") != host
    ]
    entry = {"host": host, "id": snapshot_id, "time": rfc3339(started)}
    entries = sorted(
        [entry, *old], key=lambda e: (str(e.get("time") or ""), e["host"]), reverse=True
    )
    return entries[:MAX_SNAPSHOT_HOSTS]


def run_condition(old: Mapping | None, outcome: Outcome, n: int, now: datetime) -> dict:
    """The LastRunSucceeded condition after run ``n``; its lastTransitionTime moves only
    when its status does."""
    status = "True" if outcome.success else "False"
    reason = outcome.condition_reason
    old = old or {}
    return {
        "type": RUN_CONDITION,
        "status": status,
        "reason": reason,
        "message": clip(f"run {n}: {outcome.message}", MAX_MESSAGE),
        "lastTransitionTime": old.get("lastTransitionTime")
        if old.get("status") == status and old.get("lastTransitionTime")
        else rfc3339(now),
    }


def run_status_patch(
    status: Mapping,
    outcome: Outcome,
    n: int,
    started: datetime,
    resource_version: str,
    *,
    host: str = "",
    now: datetime | None = None,
) -> dict:
    """The merge patch claiming number ``n``; resourceVersion makes it conditional.

    A merge patch replaces lists whole, so recentRuns, snapshots and conditions are written
    complete, from the object read at ``resource_version``: the precondition makes a
    concurrent writer (a replica, another host's sidecar, the controller's Ready) a 409 and
    a re-read, never a lost entry.
    """
    new = {
        "backupCount": n,
        "lastBackupTime": rfc3339(started),
        "lastBackupDuration": format_duration(outcome.duration),
    }
    if not status.get("firstBackupTime"):
        new["firstBackupTime"] = rfc3339(started)
    if outcome.success:
        new["lastSuccessfulBackupTime"] = rfc3339(started)
    if outcome.summary is not None:
        new["lastSnapshotID"] = outcome.summary.snapshot_id
        if outcome.success and host:
            new["snapshots"] = newest_snapshots(status, host, outcome.summary.snapshot_id, started)
    old_runs = [r for r in status.get("recentRuns") or [] if isinstance(r, Mapping)]
    new["recentRuns"] = [run_entry(n, outcome, started, host), *old_runs][:MAX_RECENT_RUNS]
    conditions = [c for c in status.get("conditions") or [] if isinstance(c, Mapping)]
    old_condition = next((c for c in conditions if c.get("type") == RUN_CONDITION), None)
    condition = run_condition(old_condition, outcome, n, now or started)
    new["conditions"] = [c for c in conditions if c.get("type") != RUN_CONDITION] + [condition]
    return {"metadata": {"resourceVersion": resource_version}, "status": new}


def event_body(
    backup: Mapping, n: int, outcome: Outcome, now: datetime, host: str, instance: str
) -> dict:
    name = f"{backup['metadata']['name']}-{n}"
    reason = "Success" if outcome.success else "Failed"
    return outcome_event(backup, name, reason, outcome, now, host, instance)


def outcome_event(
    backup: Mapping,
    name: str,
    reason: str,
    outcome: Outcome,
    now: datetime,
    host: str,
    instance: str,
) -> dict:
    """The Event ``name`` on the Backup about a run (or check) that ended with ``outcome``:
    Warning when it failed."""
    return backup_event(
        backup,
        name=name,
        reason=reason,
        message=outcome.message,
        warning=not outcome.success,
        now=rfc3339(now),
        component=COMPONENT,
        host=host,
        instance=instance,
        labels={"app.kubernetes.io/managed-by": COMPONENT},
        absent="",
    )


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
    current: Mapping | None = None,
) -> str:
    """Claim the next run number (optimistic concurrency) and create its Event; its name.
    ``current``: the Backup as last seen (its watch), to claim from without a GET."""
    return claim_and_report(
        kube,
        namespace,
        name,
        "backupCount",
        lambda status, n, rv: run_status_patch(status, outcome, n, started, rv, host=host, now=now),
        lambda updated, n: event_body(updated, n, outcome, now, host, instance),
        current=current,
    )


def served_trigger_patch(
    status: Mapping, host: str, value: str, run: int, success: bool, now: datetime, rv: str
) -> dict:
    """The status patch recording that ``host``'s run ``run`` served backup-now request
    ``value``: its entry in status.triggers (the other hosts' entries of the same request
    kept, those of older requests removed) and lastTrigger/lastTriggerRun. So status.triggers
    holds at most one entry per host of the Backup (the CRD bounds it at 1000 hosts);
    `restik backup-now --wait` waits for every host of the Backup's workloads there."""
    old = status.get("triggers")
    old = old if isinstance(old, Mapping) else {}
    triggers: dict = {
        h: None
        for h, e in old.items()
        if h != host and not (isinstance(e, Mapping) and e.get("trigger") == value)
    }
    triggers[host] = {
        "trigger": value,
        "run": run,
        "result": "Success" if success else "Failed",
        "time": rfc3339(now),
    }
    return {
        "metadata": {"resourceVersion": rv},
        "status": {"lastTrigger": value, "lastTriggerRun": run, "triggers": triggers},
    }


def record_trigger(
    kube: Kube,
    namespace: str,
    name: str,
    host: str,
    value: str,
    event_name: str,
    success: bool,
    now: datetime,
) -> None:
    """Record which run (its Event's number) of ``host`` served backup-now request
    ``value``; conditional on the version read, so two hosts never drop each other's entry."""
    path = BACKUPS.path(namespace, name)
    run = int(event_name.rsplit("-", 1)[1])
    for _ in range(MAX_CLAIMS):
        current = kube.get(path)
        status = current.get("status") or {}
        rv = current["metadata"]["resourceVersion"]
        patch = served_trigger_patch(status, host, value, run, success, now, rv)
        try:
            kube.merge_patch(BACKUPS.path(namespace, name, "status"), patch)
            return
        except ApiError as exc:
            if not exc.conflict:
                raise
    raise RuntimeError(f"could not record the backup request on {namespace}/{name}")


def claim_and_report(
    kube: Kube,
    namespace: str,
    name: str,
    counter: str,
    status_patch: Callable[[Mapping, int, str], dict],
    event: Callable[[Mapping, int], dict],
    *,
    current: Mapping | None = None,
) -> str:
    """Claim number n = status.<counter> + 1 with ``status_patch(status, n,
    resourceVersion)`` (conditional on the version read: a concurrent writer is a 409 and a
    re-read), then create ``event(updated Backup, n)``; its name. A number whose Event name
    is taken (a Backup deleted and re-created) is skipped: numbering never repeats.

    ``current``: the Backup as the caller last saw it (the sidecar's watch), the first
    claim's base instead of a GET: one request less between restic's exit and the Event
    when it is up to date, and a 409 and a GET (as for any concurrent writer) when not."""
    path = BACKUPS.path(namespace, name)
    at_least = 0
    seen = current if _versioned(current) else None
    for _ in range(MAX_CLAIMS):
        current, seen = seen, None
        try:
            current = current or kube.get(path)
        except ApiError as exc:
            if exc.not_found:
                raise BackupGone(f"Backup {namespace}/{name} is gone") from None
            raise
        status = current.get("status") or {}
        count = status.get(counter)
        n = max(count if isinstance(count, int) and count >= 0 else 0, at_least) + 1
        rv = current["metadata"]["resourceVersion"]
        try:
            updated = kube.merge_patch(
                BACKUPS.path(namespace, name, "status"), status_patch(status, n, rv)
            )
        except ApiError as exc:
            if exc.conflict:  # someone else (a replica, the controller) wrote first
                log.debug("status of %s/%s changed meanwhile; re-reading", namespace, name)
                continue
            if exc.not_found:
                raise BackupGone(f"Backup {namespace}/{name} is gone") from None
            raise
        body = event(updated, n)
        if _create_event(kube, namespace, body):
            return body["metadata"]["name"]
        log.info("Event %s exists already; taking the next number", body["metadata"]["name"])
        at_least = n
    raise RuntimeError(f"could not claim a {counter} number for {namespace}/{name}")


def _versioned(obj: Mapping | None) -> bool:
    meta = obj.get("metadata") if isinstance(obj, Mapping) else None
    return isinstance(meta, Mapping) and bool(meta.get("resourceVersion"))


def _create_event(kube: Kube, namespace: str, body: dict) -> bool:
    """Create the Event; False if its name is taken (409 AlreadyExists)."""
    for _ in range(5):
        try:
            kube.create(EVENTS.path(namespace), body)
            return True
        except ApiError as exc:
            if not exc.conflict:
                raise
            if exc.reason == "AlreadyExists":
                return False
            # another kind of conflict on a create is transient: the same name again
    return False
