"""restic invocations rendered from a Backup (pure); restic's output is parsed in
sidecar/restic_output.py (its names are re-exported here)."""

from __future__ import annotations

import json
import re
import subprocess
from collections.abc import Iterable
from dataclasses import dataclass

from reconciler.api.backup import Backup
from reconciler.api.constants import PER_POD_HOST_KINDS, REPO_MOUNT
from sidecar.restic_output import (  # re-exported: callers use restic.<name>
    EXIT_INCOMPLETE,
    EXIT_LOCKED,
    EXIT_NO_REPOSITORY,
    EXIT_WRONG_PASSWORD,
    RESTIK_NOTE,
    Failure,
    Summary,
    classify,
    error_lines,
    error_text,
    first_error_line,
    json_line,
    json_messages,
    parse_summary,
)

# `--retry-lock` (restic waits for a lock itself) exists since restic 0.16.0.
RETRY_LOCK_SINCE = (0, 16, 0)
LOCK_WAIT_SLICE = 20.0  # seconds restic waits for a lock per attempt (--retry-lock)


@dataclass(frozen=True)
class Context:
    """What a restic invocation needs besides the Backup: where and as whom it runs.

    ``retry_lock``: seconds restic may wait for a lock held by another run (passed as
    `--retry-lock` when ``native_retry_lock``, i.e. restic >= 0.16; older restic is retried
    by the Job with jitter instead)."""

    host: str
    cache_dir: str
    restic: str = "restic"
    retry_lock: float = 0.0
    native_retry_lock: bool = False


def parse_version(text: str) -> tuple[int, int, int] | None:
    """restic's version from `restic version` ("restic 0.14.0 compiled with go1.19.8 ...")."""
    m = re.search(r"\brestic (\d+)\.(\d+)\.(\d+)", text)
    return (int(m.group(1)), int(m.group(2)), int(m.group(3))) if m else None


def has_retry_lock(version: tuple[int, int, int] | None) -> bool:
    return version is not None and version >= RETRY_LOCK_SINCE


def detect_version(binary: str, timeout: float = 30.0) -> tuple[int, int, int] | None:
    """Run `restic version` once (no repository, no password); None if that fails."""
    try:
        proc = subprocess.run(
            [binary, "version"],
            capture_output=True,
            text=True,
            timeout=timeout,
            stdin=subprocess.DEVNULL,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return parse_version(proc.stdout) if proc.returncode == 0 else None


def repository_of(backup: Backup) -> str:
    """The restic repository: the given one, or the destination volume's mount + path."""
    if backup.repository:
        return backup.repository
    path = (backup.destination_path or "/").rstrip("/")
    return REPO_MOUNT + path


def host_for(
    kind: str | None, workload_name: str | None, pod_name: str, node_name: str | None = None
) -> str:
    """Snapshot host, stable across rollouts so `forget --host` sees every old snapshot:
    the node for a DaemonSet (one pod per node; the pod's name changes on every rollout),
    the pod for a StatefulSet (stable ordinal names, each with its own volume), and the
    workload for the kinds whose replicas share their data (Deployment, ReplicaSet,
    ReplicationController). Without a known workload: the pod's name."""
    if not kind or not workload_name:
        return pod_name
    if kind == "DaemonSet":
        return node_name or pod_name
    if kind in PER_POD_HOST_KINDS:
        return pod_name
    return workload_name


def needs_lease(kind: str | None) -> bool:
    """Whether replicas share one host name, so only one of them may back up."""
    return bool(kind) and kind not in PER_POD_HOST_KINDS


def _global(backup: Backup, ctx: Context) -> list[str]:
    # `=` forms keep a value that starts with "-" from being read as an option.
    return [ctx.restic, f"--repo={repository_of(backup)}", f"--cache-dir={ctx.cache_dir}"]


def render_init(backup: Backup, ctx: Context) -> list[str]:
    return [*_global(backup, ctx), "init"]


def locking_args(backup: Backup, ctx: Context) -> list[str]:
    """Global options of a command that takes a lock: wait for it where restic can."""
    args = _global(backup, ctx)
    if ctx.native_retry_lock and ctx.retry_lock > 0:
        # In slices: between two, restik removes a dead restic's lock, which restic itself
        # would wait for until the whole --lock-wait had passed.
        wait = max(1, int(min(ctx.retry_lock, LOCK_WAIT_SLICE)))
        args.append(f"--retry-lock={wait}s")
    return args


def snapshot_options(backup: Backup, ctx: Context) -> list[str]:
    """`restic backup` options every snapshot of the Backup gets: its host and tags."""
    return [f"--host={ctx.host}", *(f"--tag={tag}" for tag in backup.tags)]


def render_backup(backup: Backup, ctx: Context) -> list[str]:
    args = [*locking_args(backup, ctx), "backup", "--json", *snapshot_options(backup, ctx)]
    args += [f"--exclude={pattern}" for pattern in backup.excludes]
    return [*args, "--", backup.source_path]


def render_forget(backup: Backup, ctx: Context, hosts: Iterable[str] = ()) -> list[str] | None:
    """`restic forget` for the retention policy, or None when there is nothing to forget.

    ``hosts``: the hosts whose snapshots the policy applies to (each grouped on its own,
    restic's default `--group-by host,paths`); default this pod's host. The Backup's
    `retainHostname` overrides both."""
    r = backup.retention
    if r is None or not r.keeps_anything:
        return None
    chosen = [r.retain_hostname] if r.retain_hostname else sorted(set(hosts) or {ctx.host})
    args = [*locking_args(backup, ctx), "forget", *(f"--host={h}" for h in chosen)]
    args += [f"--tag={tag}" for tag in r.retain_tags]
    for flag, value in (
        ("last", r.last),
        ("hourly", r.hourly),
        ("daily", r.daily),
        ("weekly", r.weekly),
        ("monthly", r.monthly),
        ("yearly", r.yearly),
    ):
        if value:  # 0 means "no rule" in every restic version; never pass it
            args.append(f"--keep-{flag}={value}")
    args += [f"--keep-tag={tag}" for tag in r.keep_tags]
    if r.prune:
        args.append("--prune")
    return args


def render_check(backup: Backup, ctx: Context) -> list[str]:
    """`restic check` of spec.check: the repository's structure, and the data subset to read
    back when one is given. It takes restic's exclusive lock, so it waits like forget does."""
    args = [*locking_args(backup, ctx), "check"]
    subset = backup.check.read_data_subset if backup.check else None
    if subset:
        args.append(f"--read-data-subset={subset}")
    return args


def render_unlock(backup: Backup, ctx: Context, *, remove_all: bool = False) -> list[str]:
    return [*_global(backup, ctx), "unlock", *(["--remove-all"] if remove_all else [])]


def render_list_locks(backup: Backup, ctx: Context) -> list[str]:
    return [*_global(backup, ctx), "--no-lock", "list", "locks"]


def render_cat_lock(backup: Backup, ctx: Context, lock_id: str) -> list[str]:
    return [*_global(backup, ctx), "--no-lock", "cat", "lock", lock_id]


def render_snapshots(backup: Backup, ctx: Context) -> list[str]:
    return [*_global(backup, ctx), "--no-lock", "snapshots", "--json"]


def render_source_snapshots(backup: Backup, ctx: Context) -> list[str]:
    """The snapshots of this Backup's source (any host), without taking a lock."""
    return [*render_snapshots(backup, ctx), f"--path={backup.snapshot_path}"]


def workload_hosts(
    snapshots_json: str, kind: str | None, workload_name: str | None, own_host: str
) -> list[str]:
    """The hosts whose snapshots the designated pod of a workload forgets: every pod's
    (StatefulSet: `<name>-<ordinal>`) or every node's (DaemonSet: any host with snapshots
    of the Backup's source path, the listing's filter) — and always its own."""
    try:
        snaps = json.loads(snapshots_json or "[]")
    except ValueError:
        snaps = []
    hosts = {
        str(snap.get("hostname"))
        for snap in (snaps if isinstance(snaps, list) else [])
        if isinstance(snap, dict) and snap.get("hostname")
    }
    if kind == "StatefulSet" and workload_name:
        ordinal = re.compile(re.escape(workload_name) + r"-\d+")
        hosts = {h for h in hosts if ordinal.fullmatch(h)}
    elif kind != "DaemonSet":
        hosts = set()
    return sorted(hosts | {own_host})


def render_cat_config(backup: Backup, ctx: Context) -> list[str]:
    return [*_global(backup, ctx), "--no-lock", "cat", "config"]


__all__ = [
    "EXIT_INCOMPLETE",
    "EXIT_LOCKED",
    "EXIT_NO_REPOSITORY",
    "EXIT_WRONG_PASSWORD",
    "RESTIK_NOTE",
    "Failure",
    "Summary",
    "classify",
    "error_lines",
    "error_text",
    "first_error_line",
    "json_line",
    "json_messages",
    "parse_summary",
]
