"""restic's snapshot list of a Backup's path: parsing, choosing the one to restore (always of
one host), and describing what exists when none fits (pure)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime

from reconciler.api.restore import Restore
from reconciler.api.times import parse_time
from reconciler.kube.events import rfc3339


@dataclass(frozen=True)
class Snapshot:
    id: str
    time: datetime
    host: str
    paths: tuple[str, ...] = ()
    tags: tuple[str, ...] = ()
    size: int | None = None  # bytes the backup read (restic's summary), if recorded
    files: int | None = None

    @property
    def short_id(self) -> str:
        return self.id[:8]


def parse_snapshots(text: str) -> list[Snapshot]:
    """`restic snapshots --json`, oldest first; entries restic did not write are skipped."""
    try:
        raw = json.loads(text or "[]")
    except ValueError:
        return []
    out = []
    for item in raw if isinstance(raw, list) else []:
        if not isinstance(item, dict) or not isinstance(item.get("id"), str):
            continue
        when = parse_time(item.get("time"))
        if when is None:
            continue
        summary = item.get("summary") if isinstance(item.get("summary"), dict) else {}
        size = summary.get("total_bytes_processed")
        files = summary.get("total_files_processed")
        out.append(
            Snapshot(
                id=item["id"],
                time=when,
                host=str(item.get("hostname") or ""),
                paths=tuple(str(p) for p in item.get("paths") or ()),
                tags=tuple(str(t) for t in item.get("tags") or ()),
                size=size if isinstance(size, int) else None,
                files=files if isinstance(files, int) else None,
            )
        )
    return sorted(out, key=lambda s: s.time)


class NoSnapshot(Exception):
    """No snapshot fits; the message says what was asked and what exists, ``reason`` is the
    Restore condition's reason."""

    def __init__(self, message: str, reason: str = "NoSnapshot"):
        self.reason = reason
        super().__init__(message)


def select_snapshot(snapshots: list[Snapshot], restore: Restore, host: str) -> Snapshot:
    """The snapshot of ``host`` to restore: spec.snapshot (an id or unique prefix of one of
    this host's snapshots), else the newest at or before spec.asOf, else the newest."""
    own = [s for s in snapshots if s.host == host]
    if restore.snapshot:
        hits = [s for s in own if s.id.startswith(restore.snapshot)]
        if len(hits) > 1:
            raise NoSnapshot(f"snapshot {restore.snapshot} is ambiguous: give more of its id")
        if not hits:
            raise NoSnapshot(f"host {host} has no snapshot {restore.snapshot}")
        return hits[0]
    if restore.as_of is not None:
        before = [s for s in own if s.time <= restore.as_of]
        if not before:
            raise NoSnapshot(f"host {host} has no snapshot at or before {rfc3339(restore.as_of)}")
        return before[-1]
    if not own:
        raise NoSnapshot(f"host {host} has no snapshot")
    return own[-1]


def describe_snapshots(snapshots: list[Snapshot], path: str, limit: int = 5) -> str:
    """What exists, for a failure's reason: per host its newest snapshot times."""
    if not snapshots:
        return f"the repository has no snapshot of {path}"
    by_host: dict[str, list[Snapshot]] = {}
    for s in snapshots:
        by_host.setdefault(s.host, []).append(s)
    parts = []
    for host in sorted(by_host):
        snaps = by_host[host]
        times = ", ".join(f"{rfc3339(s.time)} ({s.short_id})" for s in reversed(snaps[-limit:]))
        more = f" and {len(snaps) - limit} older" if len(snaps) > limit else ""
        parts.append(f"{host}: {times}{more}")
    return f"snapshots of {path}: " + "; ".join(parts)


def claim_source(snapshots: list[Snapshot], restore: Restore, path: str) -> str:
    """The source host of a PVC target without spec.hosts: the given snapshot's host, else
    the only host with snapshots of the Backup's path."""
    if restore.snapshot:
        hits = [s for s in snapshots if s.id.startswith(restore.snapshot)]
        if len(hits) == 1:
            return hits[0].host
        raise NoSnapshot(
            f"no snapshot {restore.snapshot} of {path}; " + describe_snapshots(snapshots, path)
        )
    hosts = sorted({s.host for s in snapshots})
    if len(hosts) == 1:
        return hosts[0]
    if not hosts:
        raise NoSnapshot(describe_snapshots(snapshots, path))
    raise NoSnapshot(
        f"snapshots of {len(hosts)} hosts ({', '.join(hosts)}): say which one with "
        f"spec.hosts: {{{restore.claim_name}: <host>}}; " + describe_snapshots(snapshots, path),
        reason="AmbiguousHost",
    )


def choose_snapshot(snapshots: list[Snapshot], restore: Restore, host: str, path: str) -> Snapshot:
    """select_snapshot of ``host``, its failure saying what exists (and whose a given
    snapshot id is, when it is another host's)."""
    own = [s for s in snapshots if s.host == host]
    try:
        return select_snapshot(own, restore, host)
    except NoSnapshot as exc:
        elsewhere = ""
        if restore.snapshot and any(s.id.startswith(restore.snapshot) for s in snapshots):
            other = next(s for s in snapshots if s.id.startswith(restore.snapshot))
            elsewhere = f" (snapshot {other.short_id} belongs to host {other.host})"
        raise NoSnapshot(f"{exc}{elsewhere}; " + describe_snapshots(snapshots, path)) from None
