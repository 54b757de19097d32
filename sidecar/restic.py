"""restic invocations rendered from a Backup (pure), and restic's output parsed and classified."""

from __future__ import annotations

import enum
import json
import re
import subprocess
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass

from reconciler.api.backup import Backup
from reconciler.api.constants import PER_POD_HOST_KINDS, REPO_MOUNT
from sidecar.backend import last_backend_error

# Exit codes of newer restic (0.17+); 0.14 exits 1 for all of these and we read stderr.
EXIT_INCOMPLETE = 3  # backup: snapshot saved, some source files could not be read
EXIT_NO_REPOSITORY = 10
EXIT_LOCKED = 11
EXIT_WRONG_PASSWORD = 12


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


# --- output ------------------------------------------------------------------------------


def json_line(line: str) -> dict | None:
    """One line of restic's --json output as its message; None for what is not one: the
    plain text restic prints besides (warnings, "Fatal: ..." of older versions), a line cut
    short by a killed restic, JSON that is not an object."""
    line = line.strip()
    if not line.startswith("{"):
        return None
    try:
        msg = json.loads(line)
    except ValueError:
        return None
    return msg if isinstance(msg, dict) else None


def json_messages(text: str) -> Iterator[dict]:
    """The messages among the lines of ``text`` (see json_line), in order."""
    for line in text.splitlines():
        msg = json_line(line)
        if msg is not None:
            yield msg


def error_text(msg: Mapping) -> object:
    """The text of an `error` message: {"error": {"message": ...}} (restic 0.17+) or
    {"error": "..."}."""
    err = msg.get("error")
    return err.get("message") if isinstance(err, Mapping) else err


@dataclass(frozen=True)
class Summary:
    """The summary line of `restic backup --json`."""

    snapshot_id: str
    files_new: int = 0
    files_changed: int = 0
    files_unmodified: int = 0
    data_added: int = 0
    total_files_processed: int = 0
    total_bytes_processed: int = 0
    total_duration: float = 0.0


def parse_summary(stdout: str) -> Summary | None:
    """The last `message_type: summary` object of `restic backup --json`, if any."""
    found = None
    for msg in json_messages(stdout):
        if msg.get("message_type") == "summary":
            found = msg
    if not found or not found.get("snapshot_id"):
        return None
    ints = {
        k: int(found.get(k) or 0)
        for k in (
            "files_new",
            "files_changed",
            "files_unmodified",
            "data_added",
            "total_files_processed",
            "total_bytes_processed",
        )
    }
    return Summary(
        snapshot_id=str(found["snapshot_id"])[:8],
        total_duration=float(found.get("total_duration") or 0.0),
        **ints,
    )


class Failure(enum.Enum):
    NO_REPOSITORY = "repository does not exist"
    WRONG_PASSWORD = "wrong password"  # noqa: S105 (a failure kind, not a password)
    LOCKED = "repository is locked"
    OTHER = "error"


# restic 0.14 prints "Is there a repository at the following location?" after *any* error
# opening the config file, connection refused included. So a missing repository is only
# believed when the error itself says "does not exist" and names no network failure:
# that is what makes `restic init` safe (never on a network error or a wrong password).
_CONFIG_ERROR = re.compile(r"unable to open config file: (.*)")
_NOT_EXIST = re.compile(
    r"no such file or directory|does not exist|NoSuchKey|NoSuchBucket|not found",
    re.IGNORECASE,
)
_NETWORK = re.compile(
    r"dial tcp|connection refused|connection reset|no such host|timeout|timed out|tls:|x509|"
    r"\bEOF\b|response \(\d+\)|Internal Server Error|Service Unavailable|Bad Gateway|"
    r"network is unreachable|permission denied|access denied|forbidden|unauthorized",
    re.IGNORECASE,
)
_WRONG_PASSWORD = (re.compile(r"wrong password or no key found"), re.compile(r"wrong password"))
_LOCKED = (
    re.compile(r"repository is already locked"),
    re.compile(r"unable to create lock in backend"),
)


def _repository_missing(stderr: str) -> bool:
    if re.search(r"^Fatal: repository does not exist", stderr, re.MULTILINE):
        return True  # restic 0.17+ wording (with exit code 10)
    m = _CONFIG_ERROR.search(stderr)
    if not m:
        return False
    error = m.group(1)
    if error.strip().endswith(_CANCELED):
        # interrupted while retrying (see BackendWatch): the error it retried
        error = last_backend_error(stderr) or error
    return bool(_NOT_EXIST.search(error) and not _NETWORK.search(error))


def classify(exit_code: int, stderr: str) -> Failure:
    """What kind of failure a non-zero restic exit is."""
    stderr = "\n".join(_plain(line.strip()) for line in stderr.splitlines())
    if exit_code == EXIT_WRONG_PASSWORD or any(p.search(stderr) for p in _WRONG_PASSWORD):
        return Failure.WRONG_PASSWORD
    if exit_code == EXIT_LOCKED or any(p.search(stderr) for p in _LOCKED):
        return Failure.LOCKED
    if exit_code == EXIT_NO_REPOSITORY or _repository_missing(stderr):
        return Failure.NO_REPOSITORY
    return Failure.OTHER


def _plain(line: str) -> str:
    """restic >= 0.17 with --json reports errors as JSON lines on stderr
    ({"message_type":"exit_error","code":12,"message":"Fatal: ..."}, or "error" with
    {"error":{"message":...},"item":...}): their text, like older restic prints it."""
    msg = json_line(line)
    if msg is None:
        return line
    if msg.get("message_type") == "exit_error" and isinstance(msg.get("message"), str):
        return msg["message"].strip()
    if msg.get("message_type") == "error":
        text = error_text(msg)
        if isinstance(text, str):
            return f"error: {text.strip()}"
    return line


# restik's own lines appended to restic's stderr (why restik stopped restic), kept apart
# from restic's error and added after it in the message.
RESTIK_NOTE = "restik: "


def first_error_line(stderr: str, exit_code: int | None = None) -> str:
    """The line of restic's stderr that says what went wrong, for an Event message, with
    why restik interrupted restic if it did."""
    notes = [
        line.strip()[len(RESTIK_NOTE) :]
        for line in stderr.splitlines()
        if line.strip().startswith(RESTIK_NOTE)
    ]
    found = _error_line(error_lines(stderr))
    if found is not None and found.endswith(_CANCELED):
        # restic was interrupted while it retried its backend: the last backend error is the
        # cause ("unable to open config file: context canceled" says nothing).
        cause = last_backend_error(stderr)
        if cause:
            found = found[: -len(_CANCELED)] + cause
    if found is None:
        if notes:
            return "; ".join(notes)
        return f"restic exited with code {exit_code}" if exit_code is not None else "restic failed"
    return "; ".join([found, *notes])


def error_lines(stderr: str) -> list[str]:
    """restic's own non-empty stderr lines as text (JSON messages unpacked), without
    restik's notes."""
    return [
        part.strip()
        for line in stderr.splitlines()
        if line.strip() and not line.strip().startswith(RESTIK_NOTE)
        for part in _plain(line.strip()).splitlines()  # a JSON message may hold several
        if part.strip()
    ]


_CANCELED = "context canceled"


def _error_line(lines: list[str]) -> str | None:
    for line in lines:
        if line.startswith("Fatal:"):
            return line[len("Fatal:") :].strip()
    for line in lines:
        if line.lower().startswith(("error", "unable", "repository")):
            return line
    return lines[-1] if lines else None
