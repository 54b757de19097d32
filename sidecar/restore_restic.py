"""restic for a Restore: the context (version, password, cache), `restic restore --json` (its
arguments, the run and its progress lines folded), and restic's failures as reasons."""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from reconciler.api.backup import Backup
from reconciler.api.restore import Restore
from sidecar import restic
from sidecar.outcome import missing_password
from sidecar.restic import Context, Failure, classify, error_text, first_error_line, json_line
from sidecar.runner import redact, restic_env

log = logging.getLogger("restik.restore")

# `restore --json` progress lines and `--delete` exist since restic 0.17.0.
RESTORE_SINCE = (0, 17, 0)


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


def restic_failed(code: int, stderr: str, what: str) -> RestoreFailed:
    """A failed restic (``stderr`` redacted already) as the failure to report."""
    reason = FAILURE_REASONS.get(classify(code, stderr), "ResticFailed")
    return RestoreFailed(reason, f"{what}: {first_error_line(stderr, code)}")


def restore_context(
    backup: Backup, host: str, binary: str, cache_dir: str | None, env: Mapping[str, str]
) -> tuple[Context, dict]:
    """The restic to run for ``backup`` as ``host`` and its environment; refuses a missing or
    too old restic and a missing password."""
    ctx, runner_env, _ = restore_context_version(backup, host, binary, cache_dir, env)
    return ctx, runner_env


def restore_context_version(
    backup: Backup,
    host: str,
    binary: str,
    cache_dir: str | None,
    env: Mapping[str, str],
    detect: Callable[[str], tuple[int, int, int] | None] = restic.detect_version,
) -> tuple[Context, dict, tuple[int, int, int]]:
    """restore_context, and restic's version (``detect``: how to learn it)."""
    version = detect(binary)
    if version is None:
        raise RestoreFailed("ResticMissing", f"cannot run {binary!r} (restic version failed)")
    if version < RESTORE_SINCE:
        have = ".".join(map(str, version))
        need = ".".join(map(str, RESTORE_SINCE))
        raise RestoreFailed(
            "ResticTooOld",
            f"restic {have} cannot restore for restik: restore needs restic {need} or later "
            "(restore --json progress, --delete); use the restik image's restic",
        )
    why = missing_password(backup, env)
    if why:
        raise RestoreFailed("SecretMissing", why.replace("restart the pod", "restart the restore"))
    cache_dir = (
        cache_dir or env.get("RESTIC_CACHE_DIR") or tempfile.mkdtemp(prefix="restik-restore-")
    )
    os.makedirs(cache_dir, exist_ok=True)
    ctx = Context(
        host=host,
        cache_dir=cache_dir,
        restic=binary,
        retry_lock=60.0,
        native_retry_lock=restic.has_retry_lock(version),
    )
    return ctx, restic_env(env, cache_dir), version


def _anchored(pattern: str) -> str:
    """A pattern relative to the source path, anchored at the restored folder's root."""
    return "/" + pattern


def render_restore(
    backup: Backup, ctx: Context, restore: Restore, snapshot_id: str, target: str
) -> list[str]:
    """`restic restore ID:<source path> --target <mount>`: the contents of the Backup's path
    go into the mounted volume, wherever it is mounted."""
    args = [*restic.locking_args(backup, ctx), "restore", "--json"]
    args += [f"--target={target}", *restore_filters(restore)]
    return [*args, "--", f"{snapshot_id}:{backup.source_path}"]


def restore_filters(restore: Restore) -> list[str]:
    """The Restore's include/exclude patterns, --delete and --verify as restic options."""
    args = [f"--include={_anchored(p)}" for p in restore.include]
    args += [f"--exclude={_anchored(p)}" for p in restore.exclude]
    if restore.delete:
        args.append("--delete")
    if restore.verify:
        args.append("--verify")
    return args


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
        msg = json_line(line)
        if msg is None:
            return False
        kind = msg.get("message_type")
        if kind == "error":
            text = error_text(msg)
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

    def feed_stderr(self, text: str) -> None:
        """restic's stderr after it ended (the JSON output reports errors on stdout)."""

    def check(self) -> None:
        """After restic exited cleanly: the output was complete."""
        if not self.done:
            raise RestoreFailed("ResticFailed", "restic restore ended without its summary")


class RestoreProcess:
    """One `restic restore` at a time; ``stop`` (from the SIGTERM handler) interrupts it,
    and the run then fails as Interrupted."""

    def __init__(self, stopping: threading.Event, secrets: list[str]):
        self.stopping = stopping
        self.secrets = secrets
        self._proc: subprocess.Popen | None = None

    def run(
        self,
        args: list[str],
        env: Mapping[str, str],
        on_progress: Callable[[Progress], None],
        interval: float,
    ) -> Progress:
        """Run restic; ``on_progress`` at most every ``interval`` seconds while it runs."""
        return self.follow(self.start(args, env), Progress(), on_progress, interval)

    def start(self, args: list[str], env: Mapping[str, str]) -> subprocess.Popen:
        """Start restic (its output is read by ``follow``)."""
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
        return proc

    def follow(
        self,
        proc: subprocess.Popen,
        progress: Progress,
        on_progress: Callable[[Progress], None],
        interval: float,
    ) -> Progress:
        """Read restic's output into ``progress`` until it exits; ``on_progress`` at most every
        ``interval`` seconds. The folded progress, or RestoreFailed."""
        err_lines: list[str] = []
        reader = threading.Thread(target=lambda: err_lines.extend(proc.stderr), daemon=True)
        reader.start()
        last = time.monotonic()
        for line in proc.stdout:
            if progress.feed(line) and not progress.done:
                if time.monotonic() - last >= interval:
                    last = time.monotonic()
                    on_progress(progress)
        code = proc.wait()
        reader.join(10)
        self._proc = None
        stderr = redact("".join(err_lines), self.secrets)
        progress.feed_stderr(stderr)
        if self.stopping.is_set():
            raise RestoreFailed(
                "Interrupted",
                "interrupted (SIGTERM) before the restore finished: "
                "the volume holds part of the snapshot",
            )
        if code != 0 or progress.errors:
            failed = restic_failed(code, stderr, "restic restore")
            if progress.errors:
                first = redact(progress.errors[0], self.secrets)
                failed = RestoreFailed(
                    failed.reason,
                    f"restic restore: {len(progress.errors)} error(s), first: {first}",
                )
            raise failed
        progress.check()
        return progress

    def stop(self) -> None:
        proc = self._proc
        if proc is not None and proc.poll() is None:
            try:
                proc.send_signal(signal.SIGINT)
            except ProcessLookupError:
                pass
