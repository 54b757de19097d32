"""`spec.check`: one `restic check` run and its report (status.lastCheck, status.checkCount and
the Event ``<backup>-check-<n>`` with reason CheckSucceeded or CheckFailed).

Checks are numbered apart from backups: ``<backup>-<n>`` stays the backup run ``n`` of
status.backupCount (what `restik backup-now --wait` and the run history read), and the
reasons differ so that alerting and `kubectl get events --field-selector reason=CheckFailed`
tell the two apart."""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta

from reconciler.api.backup import Backup
from reconciler.kube.client import Kube
from reconciler.kube.events import MAX_MESSAGE, clip, rfc3339
from sidecar import restic
from sidecar.outcome import SECRET_MISSING, Outcome, log_outcome, missing_password
from sidecar.report import BackupGone, claim_and_report, outcome_event, run_entry
from sidecar.repository import Repository
from sidecar.restic import Context, Failure
from sidecar.runner import Result, Runner

log = logging.getLogger(__name__)

CHECK_SUCCEEDED = "CheckSucceeded"
CHECK_FAILED = "CheckFailed"
CHECK_COUNTER = "checkCount"
MAX_DETAILS = 3  # restic's error lines quoted in a failed check's message
MAX_DETAIL = 200  # characters of each
# restic's closing advice after errors (a link, the same every time): not a reason
_ADVICE = ("The repository is damaged", "Fatal: repository contains errors")


def check_repository(
    backup: Backup, ctx: Context, runner: Runner, *, stale_after: timedelta
) -> Outcome:
    """Run `restic check` (waiting for locks and removing stale ones as backups do; the
    runner's time limits apply). Never initialises a repository: a missing one is a failed
    check."""
    started = time.monotonic()
    problem = missing_password(backup, runner.env)
    if problem is not None:
        return Outcome(success=False, message=problem, duration=0.0, reason=SECRET_MISSING)
    repo = Repository(backup, ctx, runner, stale_after=stale_after)
    result = repo.with_lock_recovery(restic.render_check(backup, ctx))
    duration = time.monotonic() - started
    if result.ok:
        return Outcome(success=True, message=success_message(backup, duration), duration=duration)
    failure = restic.classify(result.code, result.stderr)
    return Outcome(
        success=False,
        message=failure_message(result, failure),
        duration=duration,
        failure=failure,
        interrupted=result.interrupted,
    )


def success_message(backup: Backup, duration: float) -> str:
    subset = backup.check.read_data_subset if backup.check else None
    read = f", read back {subset} of the data" if subset else " (structure only, no data read)"
    return f"restic check found no errors{read} in {duration:.1f}s"


def failure_message(result: Result, failure: Failure) -> str:
    """restic's reason: for a damaged repository its first error lines (what is missing or
    corrupt), each clipped; otherwise the line that says what went wrong."""
    headline = restic.first_error_line(result.stderr, result.code)
    if failure is not Failure.OTHER or result.interrupted:
        return f"restic check failed: {headline}"
    details: list[str] = []
    for line in restic.error_lines(result.stderr):
        text = " ".join(line.split())
        if text.startswith(_ADVICE) or text.startswith("Fatal:") or text in details:
            continue
        if details and details[-1].endswith(":"):  # "error for tree X:" + its cause
            details[-1] += " " + text
        else:
            details.append(text)
    shown = [clip(d, MAX_DETAIL) for d in details[:MAX_DETAILS]]
    more = len(details) - len(shown)
    message = f"restic check failed: {headline}"
    if shown:
        message += ": " + "; ".join(shown) + (f" (and {more} more)" if more else "")
    return clip(message, MAX_MESSAGE)


def check_entry(n: int, outcome: Outcome, started: datetime, host: str, subset: str | None) -> dict:
    entry = run_entry(n, outcome, started, host)  # a check's outcome has no snapshot
    if subset:
        entry["readDataSubset"] = subset
    return entry


def check_status_patch(
    n: int, outcome: Outcome, started: datetime, resource_version: str, host: str, subset
) -> dict:
    status = {CHECK_COUNTER: n, "lastCheck": check_entry(n, outcome, started, host, subset)}
    if outcome.success:
        status["lastSuccessfulCheckTime"] = rfc3339(started)
    return {"metadata": {"resourceVersion": resource_version}, "status": status}


def check_event(
    backup: Mapping, n: int, outcome: Outcome, now: datetime, host: str, instance: str
) -> dict:
    name = f"{backup['metadata']['name']}-check-{n}"
    reason = CHECK_SUCCEEDED if outcome.success else CHECK_FAILED
    return outcome_event(backup, name, reason, outcome, now, host, instance)


def report_check(
    kube: Kube,
    backup: Backup,
    outcome: Outcome,
    *,
    started: datetime,
    now: datetime,
    host: str,
    instance: str,
) -> str:
    """Claim the next check number, record status.lastCheck and create the Event; its name."""
    subset = backup.check.read_data_subset if backup.check else None
    return claim_and_report(
        kube,
        backup.namespace,
        backup.name,
        CHECK_COUNTER,
        lambda status, n, rv: check_status_patch(n, outcome, started, rv, host, subset),
        lambda updated, n: check_event(updated, n, outcome, now, host, instance),
    )


def check_and_report(
    backup: Backup,
    ctx: Context,
    runner: Runner,
    kube: Kube,
    *,
    stale_after: timedelta,
    host: str,
    instance: str,
    metrics=None,
) -> Outcome:
    """One check of the sidecar (in its run thread, so never during its backup): run it,
    count it, report it, log it. Nothing here raises: a check must not stop the sidecar."""
    started = datetime.now(UTC)
    log.info("restic check of %s/%s started (host %s)", backup.namespace, backup.name, host)
    try:
        outcome = check_repository(backup, ctx, runner, stale_after=stale_after)
    except Exception as exc:  # e.g. restic missing: still a CheckFailed Event
        log.exception("check failed")
        outcome = Outcome(success=False, message=f"{type(exc).__name__}: {exc}", duration=0.0)
    if metrics is not None:
        metrics.observe(outcome.success, outcome.duration, started)
    event = None
    try:
        event = report_check(kube, backup, outcome, started=started, now=datetime.now(UTC),
                             host=host, instance=instance)  # fmt: skip
    except BackupGone as exc:
        log.warning("%s: check not reported", exc)
    except Exception as exc:
        log.error("could not report the check: %s", exc)
    level = logging.INFO if outcome.success else logging.WARNING
    log_outcome(log, level, "restic check", backup, outcome, event)
    return outcome
