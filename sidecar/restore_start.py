"""`restik restore-run`'s entry: the part of a restore that runs before restic, kept short.

It reads the Restore (and for the default restore the Backup and the claim) with the
stdlib API client (reconciler.kube.lean: no pykube/requests), applies the runs-once
guard, and then either
- the default restore (newest snapshot of a host known without a listing, not a shared
  host): checks what must hold before restic writes anything (the Backup, the claim,
  restic's version, the password) and spawns `restic restore latest` (sidecar
  .restore_latest) at once; the executor loads while it runs and writes the status and
  Events with the same client (pykube/requests are never loaded);
- a Restore that needs the snapshot listing (asOf, snapshot, a PVC's source host, a dump
  Restore, a configuration the lean reader does not read): starts `restic snapshots --json
  --no-lock --path P` (the restic that opens the repository and derives its key) before
  the executor's own imports and API reads, so that both run at the same time. The
  repository and path come from the arguments the controller rendered (--repository,
  --source-path); the executor uses the listing only if it is exactly the one it would run
  for the Backup it read (else it is stopped and the right one runs);
- anything else (finished, missing Backup, shared host, ...): the executor as always.
Whatever goes wrong here falls back to the executor, which reads everything again and
reports it."""

from __future__ import annotations

import argparse
import logging
import os
import signal
import subprocess
import threading
from dataclasses import dataclass
from datetime import UTC, datetime

LISTING_TIMEOUT = 600.0
log = logging.getLogger("restik.restore")


class EarlyListing:
    """One `restic snapshots` started ahead; ``take(argv)`` is its result when ``argv`` is
    what it ran, else None (and it is stopped)."""

    def __init__(self, argv: list[str], env: dict[str, str]):
        self.argv = argv
        self.proc: subprocess.Popen | None = subprocess.Popen(
            argv,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            errors="replace",
        )

    def take(self, argv: list[str]) -> subprocess.CompletedProcess | None:
        proc, self.proc = self.proc, None
        if proc is None:
            return None
        if argv != self.argv:
            _stop(proc)
            return None
        try:
            out, err = proc.communicate(timeout=LISTING_TIMEOUT)
        except subprocess.TimeoutExpired:
            _stop(proc)
            raise
        return subprocess.CompletedProcess(argv, proc.returncode, out, err)

    def close(self) -> None:
        """Stop it if nobody took it (the Restore finished already, failed early, ...)."""
        proc, self.proc = self.proc, None
        if proc is not None:
            _stop(proc)


def _stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.kill()
    proc.communicate()


def listing_argv(restic: str, repository: str, cache_dir: str, path: str) -> list[str]:
    """The executor's listing, as sidecar.restic.render_source_snapshots renders it."""
    return [
        restic,
        f"--repo={repository}",
        f"--cache-dir={cache_dir}",
        "--no-lock",
        "snapshots",
        "--json",
        f"--path={path}",
    ]


def start_listing(args: argparse.Namespace, environ=None) -> EarlyListing | None:
    """The early listing, when the arguments name the repository and path and the cache
    directory is known; None otherwise (or when restic cannot start: the executor then
    reports that itself)."""
    environ = os.environ if environ is None else environ
    repository = getattr(args, "repository", None)
    path = getattr(args, "source_path", None)
    cache_dir = getattr(args, "cache_dir", None) or environ.get("RESTIC_CACHE_DIR")
    if not repository or not path or not cache_dir:
        return None
    env = dict(environ)
    env.pop("RESTIC_REPOSITORY_FILE", None)  # as sidecar.runner.restic_env
    try:
        return EarlyListing(listing_argv(args.restic, repository, cache_dir, path), env)
    except OSError:
        return None


@dataclass
class EarlyRestore:
    """A default restore spawned before the executor loaded: what was read and checked,
    and the running restic (sidecar.restore.Executor takes it over)."""

    kube: object  # the reconciler.kube.lean.LeanKube that read: the executor writes with it
    raw: dict
    restore: object  # reconciler.api.restore.Restore
    backup: object  # reconciler.api.backup.Backup
    namespace: str
    target_host: str
    source_host: str
    target: str
    ctx: object  # sidecar.restic.Context
    env: dict
    process: object  # sidecar.restore_restic.RestoreProcess
    proc: subprocess.Popen
    stopping: threading.Event
    started: datetime

    def close(self) -> None:
        """Stop restic if nobody followed it to its end (the executor could not start)."""
        if self.proc.poll() is None:
            self.process.stop()
        self.proc.communicate()
        self.kube.close()


@dataclass(frozen=True)
class Start:
    """What to do before the executor loads: list early, or a restic already running."""

    listing: bool = False
    early: EarlyRestore | None = None


class VersionProbe:
    """`restic version`, started at once so that it runs while the API is read."""

    def __init__(self, binary: str):
        try:
            self.proc: subprocess.Popen | None = subprocess.Popen(
                [binary, "version"],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.DEVNULL,
                text=True,
            )
        except OSError:
            self.proc = None

    def result(self, binary: str = "") -> tuple[int, int, int] | None:
        """restic's version, as sidecar.restic.detect_version gives it (None: it failed)."""
        from sidecar.restic import parse_version

        if self.proc is None:
            return None
        try:
            out, _ = self.proc.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            self.close()
            return None
        return parse_version(out) if self.proc.returncode == 0 else None

    def close(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.communicate()


def prepare(args: argparse.Namespace, environ=None) -> Start:
    """Read the Restore with the lean reader and decide (see the module's docstring)."""
    environ = os.environ if environ is None else environ
    probe = VersionProbe(args.restic)
    try:
        return _prepare(args, environ, probe)
    finally:
        probe.close()


def _prepare(args: argparse.Namespace, environ, probe: VersionProbe) -> Start:
    from reconciler.api.restore import InvalidRestore, parse_restore
    from reconciler.kube.errors import ApiError
    from reconciler.kube.lean import LeanKube, Unsupported
    from reconciler.kube.resource import RESTORES
    from sidecar.restore_once import finished_host, is_finished, shares_host, target_host
    from sidecar.restore_options import settings_from_args

    try:
        settings = settings_from_args(args)
        kube = LeanKube.connect(settings.kubeconfig, environ)
    except (ValueError, Unsupported) as exc:
        log.debug("the executor reads everything: %s", exc)
        return Start(listing=True)
    kept = None
    try:
        namespace = settings.namespace or environ.get("POD_NAMESPACE")
        namespace = namespace or kube.default_namespace or "default"
        raw = kube.get_or_none(RESTORES.path(namespace, settings.restore))
        if raw is None:
            return Start()
        try:
            restore = parse_restore(raw)
        except InvalidRestore:
            return Start()
        status = raw.get("status") or {}
        pod = environ.get("POD_NAME")
        host = target_host(restore, settings.host, settings.workload, pod, environ.get("NODE_NAME"))
        if is_finished(status, restore) or finished_host(status, host, restore.run_id):
            return Start()
        needs_listing = restore.snapshot or restore.as_of is not None
        needs_listing = needs_listing or (
            restore.is_pvc and restore.claim_name not in restore.hosts
        )
        if needs_listing:
            return Start(listing=True)
        if shares_host(restore, pod):
            return Start()  # one replica restores (a Lease): the executor's part
        kept = spawn(settings, kube, raw, restore, namespace, host, environ, probe)
        return kept
    except ApiError as exc:  # the executor reads again and reports
        log.debug("the executor reads everything: %s", exc)
        return Start()
    finally:
        if kept is None or kept.early is None:
            kube.close()


def spawn(settings, kube, raw, restore, namespace, host, environ, probe: VersionProbe) -> Start:
    """Check what must hold before restic writes anything (the Backup, the claim, restic's
    version, the password) and start `restic restore latest`; nothing started when
    something does not hold (the executor then finds it again and reports it)."""
    from reconciler.api.backup import InvalidBackup, parse_backup
    from reconciler.kube.resource import BACKUPS
    from sidecar.restore_latest import LATEST_SINCE, latest_env, latest_source, render_latest
    from sidecar.restore_once import check_claim
    from sidecar.restore_restic import RestoreFailed, RestoreProcess, restore_context_version
    from sidecar.runner import secret_values

    backup_raw = kube.get_or_none(BACKUPS.path(namespace, restore.backup))
    if backup_raw is None:
        return Start()
    try:
        backup = parse_backup(backup_raw)
    except InvalidBackup:
        return Start()
    source = latest_source(restore, backup, host)
    if source is None:
        return Start(listing=True)  # e.g. a command Backup's snapshot
    try:
        if restore.is_pvc:
            check_claim(kube, namespace, restore)
        ctx, env, version = restore_context_version(
            backup, host, settings.restic, settings.cache_dir, environ, detect=probe.result
        )
    except RestoreFailed:
        return Start()
    if version < LATEST_SINCE:
        return Start(listing=True)
    target = settings.target or backup.source_path
    os.makedirs(target, exist_ok=True)
    stopping = threading.Event()
    process = RestoreProcess(stopping, list(secret_values(environ)))
    started = datetime.now(UTC)
    argv = render_latest(backup, ctx, restore, source, target)
    proc = process.start(argv, latest_env(env, settings.progress_interval))

    def on_sigterm(signum=None, frame=None) -> None:  # until the executor takes over
        stopping.set()
        process.stop()

    signal.signal(signal.SIGTERM, on_sigterm)
    early = EarlyRestore(
        kube, raw, restore, backup, namespace, host, source, target, ctx, env, process, proc,
        stopping, started,
    )  # fmt: skip
    return Start(early=early)


def run(args: argparse.Namespace) -> int:
    listing = early = None
    try:
        if getattr(args, "into_pods", None):  # a dump Restore's Job
            listing = start_listing(args)
            from sidecar import restore
            from sidecar.restore_dump import DumpExecutor

            return restore.run(args, listing=listing, executor_class=DumpExecutor)
        start = prepare(args)
        early = start.early
        if start.listing:
            listing = start_listing(args)
        from sidecar import restore  # after the listing or restic started

        return restore.run(args, listing=listing, early=early)
    finally:
        if listing is not None:
            listing.close()
        if early is not None:
            early.close()
