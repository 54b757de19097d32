"""A Restore runs once: its own status says whether this run (spec.runID) ended already, for
the whole Restore or for one host; a restored claim carries an annotation naming the
Restore, its uid and the snapshot, so that a re-created Restore of the same name does not
clobber newer data; of the replicas sharing a host, one restores (a Lease)."""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable, Mapping
from datetime import datetime
from typing import TYPE_CHECKING

from reconciler.api.constants import RESTORED_ANNOTATION
from reconciler.api.restore import FINISHED, Restore
from reconciler.kube.events import rfc3339
from reconciler.kube.resource import PVCS
from sidecar import restic
from sidecar.follow import one_line
from sidecar.restore_restic import RestoreFailed
from sidecar.snapshots import Snapshot

if TYPE_CHECKING:  # not imported at run time: restore_start uses this before pykube loads
    from reconciler.kube.client import Kube
    from sidecar.lease import LeaseKeeper

log = logging.getLogger("restik.restore")


def target_host(
    restore: Restore,
    host: str | None,
    workload: tuple[str, str] | None,
    pod: str | None,
    node: str | None,
) -> str:
    """The host a run restores: ``host`` (--host), else as the sidecar names it (pod, node
    or workload; ``workload`` is --workload), else the claim's name for a PVC target."""
    if host:
        return host
    if restore.is_pvc:
        return restore.claim_name
    kind, name = workload or (restore.workload_kind, restore.workload_name)
    return restic.host_for(kind, name, pod or name, node)


def shares_host(restore: Restore, pod: str | None) -> bool:
    """The replicas of a Deployment, ReplicaSet or ReplicationController share one host
    (and usually one volume): one of them restores, the others wait for it (a Lease)."""
    return not restore.is_pvc and pod is not None and restic.needs_lease(restore.workload_kind)


def own_entry(status: Mapping, host: str, run_id: str | None) -> Mapping | None:
    """This host's entry of the current run (spec.runID), if any."""
    for h in status.get("hosts") or []:
        if isinstance(h, Mapping) and h.get("host") == host and h.get("runID") == run_id:
            return h
    return None


def finished_host(status: Mapping, host: str, run_id: str | None) -> str | None:
    """The phase this host's run ended with (Succeeded/Failed), or None while it did not."""
    entry = own_entry(status, host, run_id)
    if entry is not None and entry.get("phase") in FINISHED:
        return entry.get("phase")
    return None


def is_finished(status: Mapping, restore: Restore) -> bool:
    """A Restore that ended (Succeeded/Failed) for its current runID never runs again."""
    return status.get("phase") in FINISHED and status.get("runID") == restore.run_id


def restored_note(restore: Restore, snapshot: Snapshot, now: datetime) -> str:
    """The annotation on a restored PVC: which Restore wrote it, from which snapshot."""
    note = {"restore": restore.name, "uid": restore.uid, "snapshot": snapshot.short_id}
    if restore.run_id:
        note["runID"] = restore.run_id
    note["time"] = rfc3339(now)
    return json.dumps(note, sort_keys=True, separators=(",", ":"))


def earlier_restore(annotations: Mapping, restore: Restore) -> str | None:
    """Why the claim must not be restored again by this Restore, from its annotation: it
    was restored by this very run already, or by an earlier Restore of the same name (a
    re-created one must not clobber newer data)."""
    text = annotations.get(RESTORED_ANNOTATION)
    if not isinstance(text, str):
        return None
    try:
        note = json.loads(text)
    except ValueError:
        return None
    if not isinstance(note, dict) or note.get("restore") != restore.name:
        return None
    when, snap = note.get("time", "?"), note.get("snapshot", "?")
    if note.get("uid") != restore.uid:
        return (
            f"the claim was restored by an earlier Restore {restore.name} (uid {note.get('uid')}) "
            f"from snapshot {snap} at {when}; a re-created Restore does not overwrite it: "
            "use a new name, or remove the annotation "
            f"{RESTORED_ANNOTATION} from the claim"
        )
    if note.get("runID") == restore.run_id:
        return f"the claim was restored by this Restore from snapshot {snap} at {when}"
    return None


def check_claim(kube: Kube, namespace: str, restore: Restore) -> None:
    """Refuse a missing claim, and one this Restore (or an earlier one of its name) wrote."""
    claim = kube.get_or_none(PVCS.path(namespace, restore.claim_name))
    if claim is None:
        raise RestoreFailed(
            "ClaimMissing", f"PersistentVolumeClaim {namespace}/{restore.claim_name} not found"
        )
    why = earlier_restore((claim.get("metadata") or {}).get("annotations") or {}, restore)
    if why:
        raise RestoreFailed("AlreadyRestored", why)


def annotate_claim(
    kube: Kube, namespace: str, restore: Restore, snapshot: Snapshot, now: datetime
) -> None:
    note = restored_note(restore, snapshot, now)
    patch = {"metadata": {"annotations": {RESTORED_ANNOTATION: note}}}
    kube.merge_patch(PVCS.path(namespace, restore.claim_name), patch)


def as_one_replica(
    lease: LeaseKeeper,
    read: Callable[[], dict | None],
    restore: Restore,
    host: str,
    stop: threading.Event,
    wait_interval: float,
    restore_now: Callable[[Mapping], int],
) -> int:
    """The replicas of a Deployment, ReplicaSet or ReplicationController share one host: the
    holder of ``lease`` (restik-restore-<restore>-<host>) restores (``restore_now`` with the
    Restore as read last), a replica that does not get it waits until the holder's entry for
    the host is finished. The exit code."""
    told = False
    while not stop.is_set():
        current = read()
        if current is None:
            return 0
        done = finished_host(current.get("status") or {}, host, restore.run_id)
        if done:
            # checked before taking the Lease: the holder releases it when done
            log.info("another replica restored host %s: %s", host, done)
            return 0 if done == "Succeeded" else 1
        lease.tick()
        if lease.holding:
            break
        if not told:
            log.info(
                "another replica holds Lease %s and restores host %s: waiting", lease.name, host
            )
            told = True
        stop.wait(wait_interval)
    if stop.is_set():
        return 1
    released = threading.Event()

    def renew() -> None:
        while not released.wait(max(1.0, lease.duration / 3)):
            try:
                lease.tick()
            except Exception as exc:
                log.warning("Lease %s: %s", lease.name, one_line(exc))

    keeper = threading.Thread(target=renew, name="lease", daemon=True)
    keeper.start()
    try:
        current = read()  # the previous holder may have finished just now
        if current is None:
            return 0
        done = finished_host(current.get("status") or {}, host, restore.run_id)
        if done:
            return 0 if done == "Succeeded" else 1
        return restore_now(current)
    finally:
        released.set()
        keeper.join(lease.duration)
        lease.release()
