"""How a run ended (the Outcome the sidecar reports as an Event), and its messages."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass

from reconciler.api.backup import Backup
from sidecar import restic
from sidecar.restic import Failure


@dataclass(frozen=True)
class Outcome:
    success: bool
    message: str
    duration: float
    summary: restic.Summary | None = None
    failure: Failure | None = None
    initialised: bool = False
    interrupted: bool = False
    # A CamelCase word for the LastRunSucceeded condition when the cause is known
    # (e.g. SecretMissing); else derived from ``failure``.
    reason: str | None = None

    @property
    def condition_reason(self) -> str:
        if self.reason:
            return self.reason
        if self.success:
            return "Success"
        return FAILURE_REASONS.get(self.failure, "Failed")


FAILURE_REASONS = {
    Failure.WRONG_PASSWORD: "WrongPassword",
    Failure.LOCKED: "RepositoryLocked",
    Failure.NO_REPOSITORY: "NoRepository",
}


def format_bytes(n: int) -> str:
    size = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if size < 1024 or unit == "TiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{n} B"  # pragma: no cover


def success_message(summary: restic.Summary, duration: float) -> str:
    return (
        f"snapshot {summary.snapshot_id} saved: {summary.files_new} new, "
        f"{summary.files_changed} changed, {summary.files_unmodified} unmodified files, "
        f"{format_bytes(summary.data_added)} added in {duration:.1f}s"
    )


PASSWORD_SOURCES = ("RESTIC_PASSWORD", "RESTIC_PASSWORD_FILE", "RESTIC_PASSWORD_COMMAND")
SECRET_MISSING = "SecretMissing"  # noqa: S105 (a condition reason, not a password)


def missing_password(backup: Backup, env: Mapping[str, str]) -> str | None:
    """Why restic has no password, or None. The sidecar references the Secret as optional
    (a missing Secret must not keep the application's pod from starting), so a missing
    Secret or key shows up here as an unset RESTIC_PASSWORD."""
    if any(env.get(name) for name in PASSWORD_SOURCES):
        return None
    return (
        f"Secret {backup.namespace}/{backup.secret_name} "
        "(spec.destination.repositorySecretName) is missing or has no non-empty key "
        '"password": RESTIC_PASSWORD is not set, restic was not started. Create the '
        "Secret with that key, then restart the pod: environment variables are fixed "
        "when the container starts"
    )


def run_log_level(outcome: Outcome, backup) -> tuple[int, str]:
    """How loud a finished run is logged, and the next step for a failure: INFO for a
    success, WARNING for a failed run, ERROR when the repository cannot be used at all."""
    if outcome.success:
        return logging.INFO, ""
    secret = f"Secret {backup.namespace}/{backup.secret_name}"
    if outcome.failure is Failure.WRONG_PASSWORD:
        return logging.ERROR, f" (next: check the {secret}, key 'password')"
    if outcome.failure is Failure.NO_REPOSITORY:
        return logging.ERROR, " (next: check spec.destination and that the repository exists)"
    if outcome.reason == SECRET_MISSING:
        return logging.ERROR, f" (next: create the {secret} with key 'password', restart the pod)"
    if outcome.failure is Failure.LOCKED:
        return logging.WARNING, " (next: `restic list locks`; a stale lock is removed by restik)"
    return logging.WARNING, ""


def log_outcome(
    logger: logging.Logger,
    level: int,
    what: str,
    backup,
    outcome: Outcome,
    event: str | None,
    hint: str = "",
) -> None:
    """One line for a finished run or check: "<what> of ns/name succeeded|FAILED in Ns
    (Event e): message" and ``hint``, the next step for a failure."""
    logger.log(
        level,
        "%s of %s/%s %s in %.1fs%s: %s%s",
        what,
        backup.namespace,
        backup.name,
        "succeeded" if outcome.success else "FAILED",
        outcome.duration,
        f" (Event {event})" if event else "",
        outcome.message,
        hint,
    )
