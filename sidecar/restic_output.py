"""restic's output parsed and classified (pure): --json lines, the backup summary, the
failure kind of an exit code and stderr, and the error line worth showing."""

from __future__ import annotations

import enum
import json
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass

from sidecar.backend import last_backend_error

# Exit codes of newer restic (0.17+); 0.14 exits 1 for all of these and we read stderr.
EXIT_INCOMPLETE = 3  # backup: snapshot saved, some source files could not be read
EXIT_NO_REPOSITORY = 10
EXIT_LOCKED = 11
EXIT_WRONG_PASSWORD = 12


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
