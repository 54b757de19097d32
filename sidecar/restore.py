"""`restik restore-run`: run one Restore for one host, once (in an init container or a Job).

Pure parts first (restic invocations, snapshot choice, progress parsing, status entries),
then the executor that reads the Restore and its Backup, restores and reports.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import secrets
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime

from reconciler.api.backup import Backup, InvalidBackup, parse_backup
from reconciler.api.constants import RESTORE_KIND, RESTORED_ANNOTATION, WORKLOAD_KINDS
from reconciler.api.restore import (
    FINISHED,
    InvalidRestore,
    Restore,
    parse_restore,
    parse_time,
)
from reconciler.kube.client import ApiError, Kube
from reconciler.kube.events import backup_event, clip, rfc3339, with_condition
from reconciler.kube.resource import BACKUPS, EVENTS, PVCS, RESTORES
from reconciler.logs import setup_logging
from sidecar import restic
from sidecar.follow import one_line
from sidecar.lease import LeaseKeeper, lease_name
from sidecar.outcome import format_bytes, missing_password
from sidecar.restic import Context, Failure, classify, first_error_line
from sidecar.restore_options import RestoreSettings, settings_from_args
from sidecar.runner import redact, restic_env, secret_values

log = logging.getLogger("restik.restore")

COMPONENT = "restik-restore"
# `restore --json` progress lines and `--delete` exist since restic 0.17.0.
RESTORE_SINCE = (0, 17, 0)
MAX_ERROR = 512


# --- snapshots (pure) ---------------------------------------------------------------------


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
        when = parse_time(str(item.get("time") or ""))
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
    """No snapshot fits; the message says what was asked and what exists."""


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


# --- restic restore (pure) ----------------------------------------------------------------


def _anchored(pattern: str) -> str:
    """A pattern relative to the source path, anchored at the restored folder's root."""
    return "/" + pattern


def render_restore(
    backup: Backup, ctx: Context, restore: Restore, snapshot_id: str, target: str
) -> list[str]:
    """`restic restore ID:<source path> --target <mount>`: the contents of the Backup's path
    go into the mounted volume, wherever it is mounted."""
    args = [*restic.locking_args(backup, ctx), "restore", "--json"]
    args += [f"--target={target}"]
    args += [f"--include={_anchored(p)}" for p in restore.include]
    args += [f"--exclude={_anchored(p)}" for p in restore.exclude]
    if restore.delete:
        args.append("--delete")
    if restore.verify:
        args.append("--verify")
    return [*args, "--", f"{snapshot_id}:{backup.source_path}"]


@dataclass
class Progress:
    """restic restore's JSON status/summary lines, folded."""

    percent: float = 0.0
    total_files: int = 0
    files_restored: int = 0
    files_skipped: int = 0
    files_deleted: int = 0
    total_bytes: int = 0
    bytes_restored: int = 0
    bytes_skipped: int = 0
    done: bool = False
    errors: list[str] = field(default_factory=list)

    def feed(self, line: str) -> bool:
        """Take one line of stdout; True if it was a status or summary line."""
        line = line.strip()
        if not line.startswith("{"):
            return False
        try:
            msg = json.loads(line)
        except ValueError:
            return False
        if not isinstance(msg, dict):
            return False
        kind = msg.get("message_type")
        if kind == "error":
            err = msg.get("error")
            text = err.get("message") if isinstance(err, dict) else err
            item = msg.get("item")
            self.errors.append(f"{item}: {text}" if item else str(text))
            return False
        if kind not in ("status", "summary"):
            return False
        for key, attr in (
            ("total_files", "total_files"),
            ("files_restored", "files_restored"),
            ("files_skipped", "files_skipped"),
            ("files_deleted", "files_deleted"),
            ("total_bytes", "total_bytes"),
            ("bytes_restored", "bytes_restored"),
            ("bytes_skipped", "bytes_skipped"),
        ):
            value = msg.get(key)
            if isinstance(value, int):
                setattr(self, attr, value)
        if kind == "summary":
            self.done = True
            self.percent = 1.0
        elif isinstance(msg.get("percent_done"), int | float):
            self.percent = float(msg["percent_done"])
        return True

    @property
    def files(self) -> int:
        """Files now in place: restored, or already identical (skipped)."""
        return self.files_restored + self.files_skipped


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


def own_entry(status: Mapping, host: str, run_id: str | None) -> Mapping | None:
    """This host's entry of the current run (spec.runID), if any."""
    for h in status.get("hosts") or []:
        if isinstance(h, Mapping) and h.get("host") == host and h.get("runID") == run_id:
            return h
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


# --- the executor ---------------------------------------------------------------------------


class RestoreFailed(Exception):
    """The run failed; ``reason`` is the condition's reason."""

    def __init__(self, reason: str, message: str):
        self.reason = reason
        super().__init__(message)


FAILURE_REASONS = {
    Failure.WRONG_PASSWORD: "WrongPassword",
    Failure.NO_REPOSITORY: "NoRepository",
    Failure.LOCKED: "RepositoryLocked",
}


class Executor:
    """One Restore, one host. ``run()`` returns the exit code: 0 restored (or restored
    before), 1 failed, 2 bad invocation."""

    def __init__(
        self,
        settings: RestoreSettings,
        kube: Kube,
        *,
        env: Mapping[str, str] | None = None,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        listing=None,
    ):
        self.s = settings
        self.listing = listing  # an EarlyListing (sidecar.restore_start) or None
        self.kube = kube
        self.env = dict(os.environ if env is None else env)
        self.clock = clock
        self.namespace = settings.namespace or self.env.get("POD_NAMESPACE")
        self.namespace = self.namespace or kube.default_namespace or "default"
        self.pod = self.env.get("POD_NAME")
        self._stop = threading.Event()
        self._proc: subprocess.Popen | None = None
        self.run_id: str | None = None
        self.secrets = secret_values(self.env)

    # -- API helpers

    @property
    def path(self) -> str:
        return RESTORES.path(self.namespace, self.s.restore)

    def _read(self) -> dict | None:
        return self.kube.get_or_none(self.path)

    def _update_status(self, change: Callable[[dict], dict | None]) -> dict | None:
        """Read-modify-write of status, conditional on the resourceVersion read (a
        concurrent pod's entry is never lost); ``change`` returns the new status or None."""
        for _ in range(50):
            raw = self._read()
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
                    RESTORES.path(self.namespace, self.s.restore, "status"), patch
                )
            except ApiError as exc:
                if exc.conflict:
                    continue
                if exc.not_found:
                    return None
                raise
        raise RuntimeError(
            f"could not update the status of Restore {self.namespace}/{self.s.restore}"
        )

    def _event(self, raw: Mapping, reason: str, message: str, warning: bool = False) -> None:
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
            # the same Event on the workload: `kubectl describe sts db` shows the restore too
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
                log.warning("Event %s on Restore %s: %s", reason, self.s.restore, exc)

    # -- the run

    def run(self) -> int:
        raw = self._read()
        if raw is None:
            log.warning(
                "Restore %s/%s not found (deleted?): nothing to restore",
                self.namespace,
                self.s.restore,
            )
            return 0
        try:
            restore = parse_restore(raw)
        except InvalidRestore as exc:
            log.error("%s", exc)
            message = str(exc)
            self._update_status(lambda st: self._invalid(st, message))
            return 1
        status = raw.get("status") or {}
        if is_finished(status, restore):
            return self._already(status, restore)
        target_host = self._target_host(restore)
        mine = own_entry(status, target_host, restore.run_id)
        if mine and mine.get("phase") in FINISHED:
            log.info("host %s was restored already (%s): not again", target_host, mine.get("phase"))
            return 0 if mine.get("phase") == "Succeeded" else 1
        if self._shares_host(restore):
            return self._one_replica(raw, restore, target_host)
        return self._restore_when_ready(raw, restore, target_host)

    def _restore_when_ready(self, raw: Mapping, restore: Restore, target_host: str) -> int:
        backup = self._wait_for_backup(restore)
        if backup is None:
            return 1  # stopped while waiting
        return self._restore(raw, restore, backup, target_host)

    def _shares_host(self, restore: Restore) -> bool:
        """The replicas of a Deployment, ReplicaSet or ReplicationController share one host
        (and usually one volume): one of them restores, the others wait for it."""
        return (
            not restore.is_pvc
            and self.pod is not None
            and restic.needs_lease(restore.workload_kind)
        )

    def _one_replica(self, raw: Mapping, restore: Restore, host: str) -> int:
        """Restore as the holder of the Lease restik-restore-<restore>-<host>; a replica
        that does not get it waits until the holder's entry for the host is finished."""
        lease = LeaseKeeper(
            self.kube,
            self.namespace,
            lease_name(f"restore-{restore.name}", host),
            self.pod,
            self.s.lease_duration,
        )
        told = False
        while not self._stop.is_set():
            current = self._read()
            if current is None:
                return 0
            entry = own_entry(current.get("status") or {}, host, restore.run_id)
            if entry is not None and entry.get("phase") in FINISHED:
                # checked before taking the Lease: the holder releases it when done
                log.info("another replica restored host %s: %s", host, entry.get("phase"))
                return 0 if entry.get("phase") == "Succeeded" else 1
            lease.tick()
            if lease.holding:
                break
            if not told:
                log.info(
                    "another replica holds Lease %s and restores host %s: waiting", lease.name, host
                )
                told = True
            self._stop.wait(self.s.wait_interval)
        if self._stop.is_set():
            return 1
        done = threading.Event()

        def renew() -> None:
            while not done.wait(max(1.0, lease.duration / 3)):
                try:
                    lease.tick()
                except Exception as exc:
                    log.warning("Lease %s: %s", lease.name, one_line(exc))

        keeper = threading.Thread(target=renew, name="lease", daemon=True)
        keeper.start()
        try:
            current = self._read()  # the previous holder may have finished just now
            if current is None:
                return 0
            entry = own_entry(current.get("status") or {}, host, restore.run_id)
            if entry is not None and entry.get("phase") in FINISHED:
                return 0 if entry.get("phase") == "Succeeded" else 1
            return self._restore_when_ready(current, restore, host)
        finally:
            done.set()
            keeper.join(lease.duration)
            lease.release()

    def _already(self, status: Mapping, restore: Restore) -> int:
        phase = status.get("phase")
        log.info(
            "Restore %s/%s finished already (%s): it never runs again; create a new Restore "
            "(or change spec.runID) to restore once more",
            self.namespace,
            restore.name,
            phase,
        )
        return 0 if phase == "Succeeded" else 1

    def _invalid(self, status: dict, message: str) -> dict | None:
        if status.get("phase") == "Invalid" and status.get("message") == message:
            return None
        return {
            "phase": "Invalid",
            "message": clip(message),
            "conditions": with_condition(
                status, "Failed", "True", "Invalid", message, self.clock()
            ),
        }

    def _target_host(self, restore: Restore) -> str:
        """The host this run restores: --host, else as the sidecar names it (pod, node or
        workload), else the claim's name for a PVC target."""
        if self.s.host:
            return self.s.host
        if restore.is_pvc:
            return restore.claim_name
        kind, name = self.s.workload or (restore.workload_kind, restore.workload_name)
        pod = self.pod or name
        return restic.host_for(kind, name, pod, self.env.get("NODE_NAME"))

    def _wait_for_backup(self, restore: Restore) -> Backup | None:
        """The Backup, waiting while it is missing or invalid (GitOps applies in any order:
        that is Pending, not Failed)."""
        noted = None
        while not self._stop.is_set():
            raw = self.kube.get_or_none(BACKUPS.path(self.namespace, restore.backup))
            why = None
            if raw is None:
                why = f"Backup {self.namespace}/{restore.backup} not found"
            else:
                try:
                    return parse_backup(raw)
                except InvalidBackup as exc:
                    why = str(exc)
            if why != noted:
                log.warning("%s: waiting", why)
                message = f"{why}: waiting"
                self._update_status(lambda st, m=message: _pending(st, m))
                noted = why
            self._stop.wait(self.s.wait_interval)
        return None

    def _restore(self, raw: Mapping, restore: Restore, backup: Backup, target_host: str) -> int:
        started = self.clock()
        self.run_id = restore.run_id
        target = self.s.target or backup.source_path
        source_host = restore.source_host(target_host)
        snapshot = None
        self._begin(restore, target_host, source_host, started)
        try:
            ctx, runner_env = self._context(backup, target_host)
            if restore.is_pvc:
                self._check_claim(restore)
            snapshots = self._snapshots(backup, ctx, runner_env, restore)
            if restore.is_pvc and restore.claim_name not in restore.hosts:
                source_host = self._claim_source(snapshots, restore, backup)
            snapshot = self._choose(snapshots, restore, source_host, backup)
            log.info(
                "restoring snapshot %s of host %s (%s) into %s",
                snapshot.short_id,
                source_host,
                rfc3339(snapshot.time),
                target,
            )
            self._event(
                raw,
                "RestoreStarted",
                f"host {target_host}: restoring snapshot "
                f"{snapshot.short_id} of {source_host} ({rfc3339(snapshot.time)}) into {target}",
            )
            os.makedirs(target, exist_ok=True)
            args = render_restore(backup, ctx, restore, snapshot.id, target)
            progress = self._run_restore(
                args, runner_env, restore, target_host, source_host, snapshot, started
            )
            if (
                progress.total_files == 0
                and progress.files == 0
                and (snapshot.files or restore.include or restore.exclude)
            ):
                raise RestoreFailed(
                    "NothingRestored",
                    "restic restored no file: the include/exclude patterns "
                    f"({', '.join(restore.include) or '-'} / {', '.join(restore.exclude) or '-'}) "
                    f"match nothing in snapshot {snapshot.short_id}",
                )
        except RestoreFailed as exc:
            return self._finish(
                raw, restore, target_host, source_host, started, snapshot, None, exc
            )
        except Exception as exc:  # an API or OS error: still a Failed Restore, never silent
            log.exception("restore failed")
            failed = RestoreFailed("Error", f"{type(exc).__name__}: {one_line(exc)}")
            return self._finish(
                raw, restore, target_host, source_host, started, snapshot, None, failed
            )
        if restore.is_pvc:
            self._annotate_claim(restore, snapshot)
        return self._finish(
            raw, restore, target_host, source_host, started, snapshot, progress, None
        )

    def _begin(self, restore: Restore, host: str, source_host: str, started: datetime) -> None:
        now = self.clock()

        def change(status: dict) -> dict:
            new = {
                "phase": "Running",
                "target": restore.target,
                "hosts": with_host(
                    status,
                    host_entry(
                        host,
                        source_host,
                        self.pod,
                        "Running",
                        started=started,
                        now=now,
                        run_id=restore.run_id,
                    ),
                ),
                "message": f"restoring host {host}",
                "conditions": with_condition(status, "Failed", "False", "Running", "", now),
            }
            if status.get("phase") != "Running" or not status.get("startTime"):
                new["startTime"] = rfc3339(started)
            if restore.generation is not None:
                new["observedGeneration"] = restore.generation
            new["completionTime"] = None
            return new

        self._update_status(change)

    def _context(self, backup: Backup, host: str) -> tuple[Context, dict]:
        version = restic.detect_version(self.s.restic)
        if version is None:
            raise RestoreFailed(
                "ResticMissing", f"cannot run {self.s.restic!r} (restic version failed)"
            )
        if version < RESTORE_SINCE:
            have = ".".join(map(str, version))
            need = ".".join(map(str, RESTORE_SINCE))
            raise RestoreFailed(
                "ResticTooOld",
                f"restic {have} cannot restore for restik: restore needs restic {need} or later "
                "(restore --json progress, --delete); use the restik image's restic",
            )
        why = missing_password(backup, self.env)
        if why:
            raise RestoreFailed(
                "SecretMissing", why.replace("restart the pod", "restart the restore")
            )
        cache_dir = (
            self.s.cache_dir
            or self.env.get("RESTIC_CACHE_DIR")
            or tempfile.mkdtemp(prefix="restik-restore-")
        )
        os.makedirs(cache_dir, exist_ok=True)
        ctx = Context(
            host=host,
            cache_dir=cache_dir,
            restic=self.s.restic,
            retry_lock=60.0,
            native_retry_lock=restic.has_retry_lock(version),
        )
        return ctx, restic_env(self.env, cache_dir)

    def _check_claim(self, restore: Restore) -> None:
        claim = self.kube.get_or_none(PVCS.path(self.namespace, restore.claim_name))
        if claim is None:
            raise RestoreFailed(
                "ClaimMissing",
                f"PersistentVolumeClaim {self.namespace}/{restore.claim_name} not found",
            )
        why = earlier_restore((claim.get("metadata") or {}).get("annotations") or {}, restore)
        if why:
            raise RestoreFailed("AlreadyRestored", why)

    def _restic(self, args: list[str], env: Mapping[str, str]) -> subprocess.CompletedProcess:
        try:
            proc = subprocess.run(
                args,
                capture_output=True,
                text=True,
                env=dict(env),
                stdin=subprocess.DEVNULL,
                timeout=600,
                errors="replace",
            )
        except subprocess.TimeoutExpired as exc:
            raise RestoreFailed("Error", "restic snapshots did not answer within 600s") from exc
        return proc

    def _snapshots(
        self, backup: Backup, ctx: Context, env: Mapping, restore: Restore
    ) -> list[Snapshot]:
        """Every snapshot of the Backup's path (all hosts: for the reason when none fits)."""
        argv = restic.render_source_snapshots(backup, ctx)
        early = None
        if self.listing is not None:
            try:
                early = self.listing.take(argv)
            except subprocess.TimeoutExpired as exc:
                raise RestoreFailed("Error", "restic snapshots did not answer within 600s") from exc
        if early is not None:
            log.debug("the snapshot listing started ahead is the Backup's: using it")
        proc = early if early is not None else self._restic(argv, env)
        if proc.returncode != 0:
            self._fail_restic(proc.returncode, proc.stderr, "listing snapshots")
        return parse_snapshots(proc.stdout)

    def _claim_source(self, snapshots: list[Snapshot], restore: Restore, backup: Backup) -> str:
        """The source host of a PVC target without spec.hosts: the given snapshot's host,
        else the only host with snapshots of the Backup's path."""
        if restore.snapshot:
            hits = [s for s in snapshots if s.id.startswith(restore.snapshot)]
            if len(hits) == 1:
                return hits[0].host
            raise RestoreFailed(
                "NoSnapshot",
                f"no snapshot {restore.snapshot} of {backup.source_path}; "
                + describe_snapshots(snapshots, backup.source_path),
            )
        hosts = sorted({s.host for s in snapshots})
        if len(hosts) == 1:
            return hosts[0]
        if not hosts:
            raise RestoreFailed("NoSnapshot", describe_snapshots(snapshots, backup.source_path))
        raise RestoreFailed(
            "AmbiguousHost",
            f"snapshots of {len(hosts)} hosts ({', '.join(hosts)}): say which one with "
            f"spec.hosts: {{{restore.claim_name}: <host>}}; "
            + describe_snapshots(snapshots, backup.source_path),
        )

    def _choose(
        self, snapshots: list[Snapshot], restore: Restore, host: str, backup: Backup
    ) -> Snapshot:
        own = [s for s in snapshots if s.host == host]
        try:
            return select_snapshot(own, restore, host)
        except NoSnapshot as exc:
            elsewhere = ""
            if restore.snapshot and any(s.id.startswith(restore.snapshot) for s in snapshots):
                other = next(s for s in snapshots if s.id.startswith(restore.snapshot))
                elsewhere = f" (snapshot {other.short_id} belongs to host {other.host})"
            raise RestoreFailed(
                "NoSnapshot",
                f"{exc}{elsewhere}; " + describe_snapshots(snapshots, backup.snapshot_path),
            ) from None

    def _fail_restic(self, code: int, stderr: str, what: str) -> None:
        stderr = redact(stderr, self.secrets)
        kind = classify(code, stderr)
        reason = FAILURE_REASONS.get(kind, "ResticFailed")
        raise RestoreFailed(reason, f"{what}: {first_error_line(stderr, code)}")

    def _run_restore(self, args, env, restore, host, source_host, snapshot, started) -> Progress:
        progress = Progress()
        log.debug("running %s", " ".join(redact(a, self.secrets) for a in args))
        proc = subprocess.Popen(
            args,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=dict(env),
            text=True,
            errors="replace",
            start_new_session=True,
        )
        self._proc = proc
        err_lines: list[str] = []
        reader = threading.Thread(target=lambda: err_lines.extend(proc.stderr), daemon=True)
        reader.start()
        last = time.monotonic()
        for line in proc.stdout:
            if progress.feed(line) and not progress.done:
                if time.monotonic() - last >= self.s.progress_interval:
                    last = time.monotonic()
                    self._progress(host, source_host, snapshot, progress, started)
        code = proc.wait()
        reader.join(10)
        self._proc = None
        stderr = redact("".join(err_lines), self.secrets)
        if self._stop.is_set():
            raise RestoreFailed(
                "Interrupted",
                "interrupted (SIGTERM) before the restore finished: "
                "the volume holds part of the snapshot",
            )
        if code != 0 or progress.errors:
            text = first_error_line(stderr, code)
            if progress.errors:
                first = redact(progress.errors[0], self.secrets)
                text = f"{len(progress.errors)} error(s), first: {first}"
            kind = classify(code, stderr)
            raise RestoreFailed(
                FAILURE_REASONS.get(kind, "ResticFailed"), f"restic restore: {text}"
            )
        if not progress.done:
            raise RestoreFailed("ResticFailed", "restic restore ended without its summary")
        return progress

    def _progress(self, host, source_host, snapshot, progress, started) -> None:
        entry = host_entry(
            host,
            source_host,
            self.pod,
            "Running",
            started=started,
            now=self.clock(),
            snapshot=snapshot,
            progress=progress,
            run_id=self.run_id,
        )
        try:
            self._update_status(lambda st: {"hosts": with_host(st, entry)})
        except ApiError as exc:
            log.warning("progress not written: %s", exc)

    def _annotate_claim(self, restore: Restore, snapshot: Snapshot) -> None:
        note = restored_note(restore, snapshot, self.clock())
        patch = {"metadata": {"annotations": {RESTORED_ANNOTATION: note}}}
        self.kube.merge_patch(PVCS.path(self.namespace, restore.claim_name), patch)

    def _finish(self, raw, restore, host, source_host, started, snapshot, progress, failure) -> int:
        now = self.clock()
        phase = "Failed" if failure else "Succeeded"
        error = str(failure) if failure else None
        entry = host_entry(
            host,
            source_host,
            self.pod,
            phase,
            started=started,
            now=now,
            snapshot=snapshot,
            progress=progress,
            error=error,
            finished=True,
            run_id=restore.run_id,
        )
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
                    else f"host {host}: {_figures(snapshot, progress, now - started)}"
                )
                new["message"] = clip(message)
                new["conditions"] = with_condition(
                    status, "Failed", "True" if failure else "False", reason, message, now
                )
            return new

        self._update_status(change)
        if failure:
            log.error("restore of host %s FAILED: %s", host, failure)
            self._event(raw, "RestoreFailed", f"host {host}: {failure}", warning=True)
            return 1
        message = f"host {host}: {_figures(snapshot, progress, now - started)}"
        log.info("restore of host %s succeeded: %s", host, message)
        self._event(raw, "RestoreSucceeded", message)
        return 0

    def stop(self, signum=None, frame=None) -> None:
        self._stop.set()
        proc = self._proc
        if proc is not None and proc.poll() is None:
            try:
                proc.send_signal(signal.SIGINT)
            except ProcessLookupError:
                pass


def _figures(snapshot: Snapshot | None, progress: Progress | None, took) -> str:
    if snapshot is None or progress is None:
        return "done"
    return (
        f"snapshot {snapshot.short_id} of {snapshot.host} ({rfc3339(snapshot.time)}): "
        f"{progress.files} files, {format_bytes(progress.bytes_restored + progress.bytes_skipped)} "
        f"restored in {took.total_seconds():.1f}s"
    )


def _pending(status: dict, message: str) -> dict | None:
    if status.get("phase") == "Pending" and status.get("message") == message:
        return None
    return {"phase": "Pending", "message": clip(message)}


def run(args: argparse.Namespace, listing=None, executor_class: type[Executor] = Executor) -> int:
    """`restik restore-run`: the exit code (0 restored, 1 failed, 2 bad invocation).
    ``listing``: the snapshot listing sidecar.restore_start began, if any; ``executor_class``:
    sidecar.restore_dump.DumpExecutor for a dump Restore's Job."""
    try:
        settings = settings_from_args(args)
    except ValueError as exc:
        print(f"restik restore-run: {exc}", file=sys.stderr)
        return 2
    secret = secret_values(os.environ)
    setup_logging(settings.log_level, settings.log_format, lambda text: redact(text, secret))
    try:
        kube = Kube.connect(settings.kubeconfig)
    except Exception as exc:
        log.error("restik restore-run: %s", one_line(exc))
        return 1
    executor = executor_class(settings, kube, listing=listing)
    signal.signal(signal.SIGTERM, executor.stop)
    try:
        return executor.run()
    except Exception as exc:
        log.error("restik restore-run failed: %s", one_line(exc))
        return 1
