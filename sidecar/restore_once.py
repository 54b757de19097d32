"""A Restore runs once: its own status says whether this run (spec.runID) ended already, for
the whole Restore or for one host, and a restored claim carries an annotation naming the
Restore, its uid and the snapshot, so that a re-created Restore of the same name does not
clobber newer data (pure, and the claim's read and write)."""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import datetime

from reconciler.api.constants import RESTORED_ANNOTATION
from reconciler.api.restore import FINISHED, Restore
from reconciler.kube.client import Kube
from reconciler.kube.events import rfc3339
from reconciler.kube.resource import PVCS
from sidecar.restore_restic import RestoreFailed
from sidecar.snapshots import Snapshot


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
