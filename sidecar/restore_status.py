"""What one host's restore run writes: its entry in the Restore's status.hosts (pure), the
status read-modify-writes (conditional on the resourceVersion: hosts restoring at the same
time never lose each other's entries), and the Restore<Started|Succeeded|Failed> Events on
the Restore and its workload."""

from __future__ import annotations

import json
import logging
import secrets
from collections.abc import Callable, Mapping
from datetime import datetime
from typing import TYPE_CHECKING

from reconciler.api.constants import RESTORE_KIND, WORKLOAD_KINDS
from reconciler.api.restore import Restore
from reconciler.kube.errors import ApiError
from reconciler.kube.events import backup_event, clip, rfc3339, with_condition
from reconciler.kube.resource import EVENTS, RESTORES
from sidecar.outcome import format_bytes
from sidecar.restore_restic import Progress, RestoreFailed
from sidecar.snapshots import Snapshot

if TYPE_CHECKING:  # not loaded at run time: restore-run's default restore never loads pykube
    from reconciler.kube.client import Kube

log = logging.getLogger("restik.restore")

COMPONENT = "restik-restore"
MAX_ERROR = 512


# --- status entries (pure) ----------------------------------------------------------------


def host_entry(
    host: str,
    source_host: str,
    pod: str | None,
    phase: str,
    *,
    started: datetime,
    now: datetime,
    snapshot: Snapshot | None = None,
    progress: Progress | None = None,
    error: str | None = None,
    finished: bool = False,
    run_id: str | None = None,
) -> dict:
    entry: dict = {"host": host, "sourceHost": source_host, "phase": phase}
    if run_id:
        entry["runID"] = run_id
    if pod:
        entry["pod"] = pod
    if snapshot is not None:
        entry["snapshotID"] = snapshot.short_id
        entry["snapshotTime"] = rfc3339(snapshot.time)
    if progress is not None:
        entry["percent"] = round(progress.percent * 100, 1)
        entry["filesRestored"] = progress.files
        entry["totalFiles"] = progress.total_files
        entry["bytesRestored"] = progress.bytes_restored + progress.bytes_skipped
        entry["totalBytes"] = progress.total_bytes
    entry["startTime"] = rfc3339(started)
    if finished:
        entry["completionTime"] = rfc3339(now)
        entry["duration"] = f"{(now - started).total_seconds():.1f}s"
    if error:
        entry["error"] = clip(error, MAX_ERROR)
    return entry


def with_host(status: Mapping, entry: dict) -> list[dict]:
    """status.hosts with ``entry`` in place of the same host's, sorted by host; entries of
    an earlier run (another runID) go."""
    others = [
        h
        for h in status.get("hosts") or []
        if isinstance(h, Mapping)
        and h.get("host") != entry["host"]
        and h.get("runID") == entry.get("runID")
    ]
    return sorted([*others, entry], key=lambda h: str(h.get("host")))


def figures(snapshot: Snapshot | None, progress: Progress | None, took) -> str:
    """A finished host's figures, for the status message and the Event."""
    if snapshot is None or progress is None:
        return "done"
    return (
        f"snapshot {snapshot.short_id} of {snapshot.host} ({rfc3339(snapshot.time)}): "
        f"{progress.files} files, {format_bytes(progress.bytes_restored + progress.bytes_skipped)} "
        f"restored in {took.total_seconds():.1f}s"
    )


# --- writing ------------------------------------------------------------------------------


class RestoreStatus:
    """The status and Events of Restore ``namespace/name`` as written by one run (``pod``)."""

    def __init__(
        self, kube: Kube, namespace: str, name: str, pod: str | None, clock: Callable[[], datetime]
    ):
        self.kube = kube
        self.namespace = namespace
        self.name = name
        self.pod = pod
        self.clock = clock

    @property
    def path(self) -> str:
        return RESTORES.path(self.namespace, self.name)

    def read(self) -> dict | None:
        return self.kube.get_or_none(self.path)

    def update(self, change: Callable[[dict], dict | None]) -> dict | None:
        """Read-modify-write of status, conditional on the resourceVersion read (a
        concurrent pod's entry is never lost); ``change`` returns the new status or None."""
        for _ in range(50):
            raw = self.read()
            if raw is None:
                return None
            status = dict(raw.get("status") or {})
            new = change(status)
            if new is None:
                return raw
            patch = {
                "metadata": {"resourceVersion": raw["metadata"]["resourceVersion"]},
                "status": new,
            }
            try:
                return self.kube.merge_patch(
                    RESTORES.path(self.namespace, self.name, "status"), patch
                )
            except ApiError as exc:
                if exc.conflict:
                    continue
                if exc.not_found:
                    return None
                raise
        raise RuntimeError(f"could not update the status of Restore {self.namespace}/{self.name}")

    def event(self, raw: Mapping, reason: str, message: str, warning: bool = False) -> None:
        """The Event on the Restore, and the same on its workload (`kubectl describe sts db`
        shows the restore too)."""
        name = f"{raw['metadata']['name']}.{secrets.token_hex(8)}"
        body = backup_event(
            raw,
            name=name,
            reason=reason,
            message=message,
            warning=warning,
            now=rfc3339(self.clock()),
            component=COMPONENT,
            instance=self.pod,
            kind=RESTORE_KIND,
        )
        bodies = [body]
        spec_target = ((raw.get("spec") or {}).get("target") or {}).get("workload") or {}
        kind, wname = spec_target.get("kind"), spec_target.get("name")
        if kind in WORKLOAD_KINDS and isinstance(wname, str):
            on_workload = json.loads(json.dumps(body))
            on_workload["metadata"]["name"] = f"{wname}.{secrets.token_hex(8)}"
            on_workload["message"] = clip(f"Restore {raw['metadata']['name']}: {message}")
            on_workload["involvedObject"] = {
                "apiVersion": WORKLOAD_KINDS[kind][0],
                "kind": kind,
                "name": wname,
                "namespace": self.namespace,
            }
            bodies.append(on_workload)
        for event in bodies:
            try:
                self.kube.create(EVENTS.path(self.namespace), event)
            except ApiError as exc:
                log.warning("Event %s on Restore %s: %s", reason, self.name, exc)

    def invalid(self, message: str) -> None:
        def change(status: dict) -> dict | None:
            if status.get("phase") == "Invalid" and status.get("message") == message:
                return None
            return {
                "phase": "Invalid",
                "message": clip(message),
                "conditions": with_condition(
                    status, "Failed", "True", "Invalid", message, self.clock()
                ),
            }

        self.update(change)

    def pending(self, message: str) -> None:
        def change(status: dict) -> dict | None:
            if status.get("phase") == "Pending" and status.get("message") == message:
                return None
            return {"phase": "Pending", "message": clip(message)}

        self.update(change)

    def begin(self, restore: Restore, host: str, source_host: str, started: datetime) -> None:
        now = self.clock()
        entry = host_entry(
            host, source_host, self.pod, "Running", started=started, now=now,
            run_id=restore.run_id,
        )  # fmt: skip

        def change(status: dict) -> dict:
            new = {
                "phase": "Running",
                "target": restore.target,
                "hosts": with_host(status, entry),
                "message": f"restoring host {host}",
                "conditions": with_condition(status, "Failed", "False", "Running", "", now),
            }
            if status.get("phase") != "Running" or not status.get("startTime"):
                new["startTime"] = rfc3339(started)
            if restore.generation is not None:
                new["observedGeneration"] = restore.generation
            new["completionTime"] = None
            return new

        self.update(change)

    def progress(
        self,
        restore: Restore,
        host: str,
        source_host: str,
        snapshot: Snapshot,
        progress: Progress,
        started: datetime,
    ) -> None:
        entry = host_entry(
            host, source_host, self.pod, "Running", started=started, now=self.clock(),
            snapshot=snapshot, progress=progress, run_id=restore.run_id,
        )  # fmt: skip
        try:
            self.update(lambda st: {"hosts": with_host(st, entry)})
        except ApiError as exc:
            log.warning("progress not written: %s", exc)

    def finish(
        self,
        raw: Mapping,
        restore: Restore,
        host: str,
        source_host: str,
        started: datetime,
        snapshot: Snapshot | None,
        progress: Progress | None,
        failure: RestoreFailed | None,
    ) -> int:
        """The host's final entry (and, when the Restore ends with it, its phase) and Event;
        the exit code."""
        now = self.clock()
        phase = "Failed" if failure else "Succeeded"
        error = str(failure) if failure else None
        entry = host_entry(
            host, source_host, self.pod, phase, started=started, now=now, snapshot=snapshot,
            progress=progress, error=error, finished=True, run_id=restore.run_id,
        )  # fmt: skip
        # A single-host target ends with its host; a StatefulSet's or DaemonSet's Restore
        # fails with any host and succeeds when the controller sees every pod's host done.
        ends = failure is not None or not restore.multi_host

        def change(status: dict) -> dict:
            new: dict = {"hosts": with_host(status, entry)}
            if ends:
                new["phase"] = phase
                new["completionTime"] = rfc3339(now)
                new["runID"] = restore.run_id
                if restore.multi_host:
                    new["snapshot"] = f"{len(new['hosts'])} hosts"
                elif snapshot is not None:
                    new["snapshot"] = snapshot.short_id
                reason = failure.reason if failure else "Restored"
                message = (
                    f"host {host}: {error}"
                    if failure
                    else f"host {host}: {figures(snapshot, progress, now - started)}"
                )
                new["message"] = clip(message)
                new["conditions"] = with_condition(
                    status, "Failed", "True" if failure else "False", reason, message, now
                )
            return new

        self.update(change)
        if failure:
            log.error("restore of host %s FAILED: %s", host, failure)
            self.event(raw, "RestoreFailed", f"host {host}: {failure}", warning=True)
            return 1
        message = f"host {host}: {figures(snapshot, progress, now - started)}"
        log.info("restore of host %s succeeded: %s", host, message)
        self.event(raw, "RestoreSucceeded", message)
        return 0
