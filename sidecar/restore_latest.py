"""The default restore (the newest snapshot of one host and the Backup's path) as ONE
restic: `restic restore latest:<path> --host H --path P` in restic's text mode, which
opens the repository once (no listing beforehand: one key derivation, not two) and names
the snapshot it restores in its first line:

    restoring snapshot 8b5f2f84 of [/data] at 2026-11-30 03:10:36.855031456 +0000 UTC by
    root@h1 to /data          (one line)

That line is restic's own word on what it restores: race-free, unlike a listing taken
alongside (a backup of the same host can land in between). Progress lines (printed when
RESTIC_PROGRESS_FPS is set, stdout being no terminal) and the summary carry restic's
rounded byte figures (`formatBytes`: 3 decimals of KiB/MiB/GiB/TiB); file counts are
exact. The formats are restic 0.17's and 0.18's (internal/ui/restore/text.go,
cmd/restic/cmd_restore.go); 0.18 adds ", deleted N files/dirs".

Everything here is pure or stdlib (it runs before restic starts, see restore_start)."""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import UTC, datetime, timedelta, timezone

from reconciler.api.backup import Backup
from reconciler.api.restore import Restore
from sidecar import restic
from sidecar.restic import Context
from sidecar.restore_restic import Progress, RestoreFailed, restore_filters
from sidecar.snapshots import Snapshot

# restic's text restore as parsed here (and `restore latest:<subfolder>`): restic 0.17.0,
# the executor's minimum anyway (sidecar.restore_restic.RESTORE_SINCE).
LATEST_SINCE = (0, 17, 0)
NO_SNAPSHOT = "no snapshot found"  # restic's ErrNoSnapshotFound, in its fatal error

_SIZE = r"\d+ B|\d+\.\d+ [KMGT]iB"
_UNITS = {"B": 1, "KiB": 1 << 10, "MiB": 1 << 20, "GiB": 1 << 30, "TiB": 1 << 40}
_TIME = r"(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d(?:\.\d+)?) ([+-]\d\d)(\d\d)(?: \S+)?(?: m=[+-][\d.]+)?"
_STARTED = re.compile(rf"^restoring snapshot ([0-9a-f]{{8,64}}) of \[(.*)\] at {_TIME} by (.*)$")
_STATUS = re.compile(
    rf"^\[[\d:]+\] +(?:(\d+(?:\.\d+)?)%)? +(\d+) files/dirs ({_SIZE}), "
    rf"total (\d+) files/dirs ({_SIZE})"
    rf"(?:, skipped (\d+) files/dirs ({_SIZE}))?(?:, deleted (\d+) files/dirs)?$"
)
_SUMMARY = re.compile(
    rf"^Summary: Restored (?:(\d+) / )?(\d+) files/dirs \(({_SIZE})(?: / ({_SIZE}))?\) in [\d:]+"
    rf"(?:, skipped (\d+) files/dirs ({_SIZE}))?(?:, deleted (\d+) files/dirs)?$"
)
_ERROR = re.compile(r"^ignoring error for (.*?): (.*)$")


def latest_source(restore: Restore, backup: Backup, target_host: str) -> str | None:
    """The source host when restic may pick the snapshot itself: no spec.snapshot, no
    spec.asOf, a file Backup, and the host known without a listing (a workload's host, or a
    PVC's mapped in spec.hosts); else None (the executor lists the snapshots and picks)."""
    if restore.snapshot or restore.as_of is not None or backup.source_command is not None:
        return None
    if restore.is_pvc and restore.claim_name not in restore.hosts:
        return None
    return restore.source_host(target_host)


def render_latest(
    backup: Backup, ctx: Context, restore: Restore, source_host: str, target: str
) -> list[str]:
    """`restic restore latest:<source path> --host H --path P --target T` (text output):
    the contents of the newest snapshot of ``source_host`` go into the mounted volume."""
    args = [*restic.locking_args(backup, ctx), "restore", f"--host={source_host}"]
    args += [f"--path={backup.snapshot_path}", f"--target={target}"]
    args += restore_filters(restore)
    return [*args, "--", f"latest:{backup.source_path}"]


def progress_fps(interval: float) -> str:
    """RESTIC_PROGRESS_FPS for a progress line at least every second (and every
    ``interval`` when shorter): fresh figures whenever the status is written."""
    return f"{min(60.0, max(1.0, 1.0 / interval if interval > 0 else 60.0)):g}"


def latest_env(env: dict, interval: float) -> dict:
    """restic's environment for the text restore: progress lines although stdout is a pipe."""
    return {**env, "RESTIC_PROGRESS_FPS": progress_fps(interval)}


def parse_size(text: str) -> int:
    """restic's formatBytes back into bytes ("12 B" exact, "1.500 MiB" rounded)."""
    number, unit = text.split(" ")
    return round(float(number) * _UNITS[unit])


def parse_started(line: str, target: str) -> Snapshot | None:
    """restic's first line, "restoring snapshot ID of [PATHS] at TIME by USER@HOST to T",
    as the Snapshot it restores (short id, time, host); None if ``line`` is not that line
    for ``target``."""
    line = line.rstrip("\n")
    suffix = f" to {target}"
    if not line.endswith(suffix):
        return None
    m = _STARTED.match(line[: -len(suffix)])
    if m is None:
        return None
    short_id, paths, when, hours, minutes, by = m.groups()
    day, _, clock = when.partition(" ")
    whole, _, fraction = clock.partition(".")
    sign = -1 if hours.startswith("-") else 1
    offset = timedelta(hours=abs(int(hours)), minutes=int(minutes)) * sign
    try:
        time = datetime.fromisoformat(f"{day}T{whole}").replace(
            microsecond=int((fraction + "000000")[:6]), tzinfo=timezone(offset)
        )
    except ValueError:
        return None
    _, _, host = by.rpartition("@")
    return Snapshot(id=short_id, time=time.astimezone(UTC), host=host, paths=(paths,))


class TextProgress(Progress):
    """restic restore's text output, folded like its JSON lines (sidecar.restore_restic
    .Progress), plus the snapshot its first line names (``on_started`` is called then)."""

    def __init__(
        self, target: str, source_host: str, on_started: Callable[[Snapshot], None] | None = None
    ):
        super().__init__()
        self.target = target
        self.source_host = source_host
        self.on_started = on_started
        self.snapshot: Snapshot | None = None
        self.first_line: str | None = None  # the first line when it did not parse
        self.no_snapshot = False  # restic found no snapshot of the host and path

    def feed(self, line: str) -> bool:
        text = line.rstrip("\n")
        if not text.strip():
            return False
        if self.snapshot is None:
            # restic's first line names the snapshot; anything before it (a warning, an
            # index-loading bar of another restic version) is no restore progress
            snapshot = parse_started(text, self.target)
            if snapshot is None:
                if self.first_line is None or not self.first_line.startswith("restoring "):
                    self.first_line = text  # for the failure's message
                return False
            self.snapshot = snapshot
            if self.on_started is not None:
                self.on_started(snapshot)
            return False
        m = _STATUS.match(text)
        if m:
            pct, done, written, total, total_bytes, skipped, skipped_bytes, deleted = m.groups()
            self._set(done, total, written, total_bytes, skipped, skipped_bytes, deleted)
            self.percent = float(pct) / 100 if pct else 0.0
            return True
        m = _SUMMARY.match(text)
        if m:
            done, total, written, total_bytes, skipped, skipped_bytes, deleted = m.groups()
            if done is None:  # "Restored N files/dirs (B)": all of them
                if total_bytes is not None:
                    return False
                done, total_bytes = total, written
            elif total_bytes is None:
                return False
            self._set(done, total, written, total_bytes, skipped, skipped_bytes, deleted)
            self.percent, self.done = 1.0, True
            return True
        return False

    def _set(self, done, total, written, total_bytes, skipped, skipped_bytes, deleted) -> None:
        self.files_restored, self.total_files = int(done), int(total)
        self.bytes_restored, self.total_bytes = parse_size(written), parse_size(total_bytes)
        self.files_skipped = int(skipped) if skipped else 0
        self.bytes_skipped = parse_size(skipped_bytes) if skipped_bytes else 0
        self.files_deleted = int(deleted) if deleted else 0

    def feed_stderr(self, text: str) -> None:
        for line in text.splitlines():
            m = _ERROR.match(line.strip())
            if m:
                self.errors.append(f"{m.group(1)}: {m.group(2)}")
            elif NO_SNAPSHOT in line and self.snapshot is None:
                self.no_snapshot = True

    def check(self) -> None:
        """After a clean exit: restic must have named the snapshot, of the right host."""
        if self.snapshot is None:
            seen = f": {self.first_line[:200]!r}" if self.first_line else " (no output)"
            raise RestoreFailed(
                "ResticFailed",
                "restic restore did not say which snapshot it restored (no line "
                f"'restoring snapshot ... to {self.target}'){seen}",
            )
        if self.snapshot.host != self.source_host:
            raise RestoreFailed(
                "ResticFailed",
                f"restic restored snapshot {self.snapshot.short_id} of host "
                f"{self.snapshot.host!r}, not of {self.source_host!r}",
            )
        super().check()
