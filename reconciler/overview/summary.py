"""`restik status`: every Backup's health in one table, from the API only (one paged LIST)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from functools import lru_cache

from croniter import croniter

from reconciler.api.schedule import Schedule, ScheduleError, parse_duration, parse_schedule
from reconciler.kube.events import rfc3339 as api_time

DAY = timedelta(hours=24)
PAGE_SIZE = 500

# Health, worst first: the table sorts by nothing but the exit code reads these.
OK = "OK"
PENDING = "Pending"  # no run yet, and none overdue
PAUSED = "Paused"
FAILED = "Failed"  # the last run failed
OVERDUE = "Overdue"  # no success for twice the schedule interval
NOT_READY = "NotReady"  # the controller's Ready condition is False
# spec.check (`restic check` on its own schedule): shown when the backups themselves are
# healthy, in the same reckoning (a failed last check; no successful one for twice its
# interval).
CHECK_FAILED = "CheckFailed"
CHECK_OVERDUE = "CheckOverdue"
HEALTHY = frozenset({OK, PENDING, PAUSED})

# Where the controller reports per-workload rollout state. The field is new: accept the
# names and shapes it may take, and show nothing when it is absent.
ROLLOUT_FIELDS = ("rollout", "rollouts", "workloadStatus", "workloadStatuses")
ROLLOUT_NAME_KEYS = ("workload", "name", "ref")
ROLLOUT_CURRENT_KEYS = ("current", "upToDate", "rolledOut")


# --------------------------------------------------------------------------- the model


@dataclass
class Workload:
    workload: str
    current: bool | None = None  # None: the controller does not report rollouts (yet)


@dataclass
class Snapshot:
    host: str
    snapshotID: str  # the names of -o json, as in the status
    time: str


@dataclass
class Check:
    """spec.check of a Backup and how its last `restic check` went (status.lastCheck)."""

    schedule: str
    health: str  # OK, Pending (none yet), Paused, CheckFailed or CheckOverdue
    reason: str
    lastResult: str | None = None  # "Success" | "Failed"
    lastCheckTime: str | None = None
    lastSuccessfulCheckTime: str | None = None
    lastDurationSeconds: float | None = None
    nextCheckTime: str | None = None
    number: int | None = None  # of status.checkCount: Event <backup>-check-<number>
    host: str | None = None  # the pod that checked
    readDataSubset: str | None = None
    message: str | None = None  # the last check's (restic's reason when it failed)


@dataclass
class Row:
    """One Backup's health; also the item of `-o json`."""

    namespace: str
    name: str
    health: str
    reason: str
    ready: str | None
    paused: bool
    schedule: str
    workloads: list[Workload] = field(default_factory=list)
    lastSuccessfulBackupTime: str | None = None
    lastResult: str | None = None
    lastRunTime: str | None = None
    lastDurationSeconds: float | None = None
    nextRunTime: str | None = None
    runs24h: int | None = None
    failures24h: int | None = None
    runs24hComplete: bool = True  # False: older runs fell off recentRuns
    backupCount: int | None = None
    snapshots: list[Snapshot] = field(default_factory=list)
    check: Check | None = None  # None: no spec.check


def parse_time(value: object) -> datetime | None:
    if not isinstance(value, str) or not value:
        return None
    return _parse_time(value)


@lru_cache(maxsize=65536)  # Backups on one schedule run at the same times
def _parse_time(value: str) -> datetime | None:
    try:
        t = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return t if t.tzinfo else t.replace(tzinfo=UTC)


def rfc3339(t: datetime | None) -> str | None:
    return api_time(t) if t else None


def _condition(status: Mapping, kind: str) -> Mapping | None:
    for cond in status.get("conditions") or []:
        if isinstance(cond, Mapping) and cond.get("type") == kind:
            return cond
    return None


def _workloads(status: Mapping) -> list[Workload]:
    names = [str(w) for w in status.get("workloads") or [] if w]
    current: dict[str, bool] = {}
    for key in ROLLOUT_FIELDS:
        entries = status.get(key)
        if not isinstance(entries, list):
            continue
        for entry in entries:
            if not isinstance(entry, Mapping):
                continue
            name = next(
                (entry[k] for k in ROLLOUT_NAME_KEYS if isinstance(entry.get(k), str)), None
            )
            flag = next(
                (entry[k] for k in ROLLOUT_CURRENT_KEYS if isinstance(entry.get(k), bool)), None
            )
            if name is not None and flag is not None:
                current[name] = flag
        break
    for name in current:
        if name not in names:
            names.append(name)
    return [Workload(n, current.get(n)) for n in names]


def _runs(status: Mapping) -> list[tuple[datetime, Mapping]]:
    """status.recentRuns as (time, run), newest first; entries without a time are skipped."""
    runs = status.get("recentRuns")
    if not isinstance(runs, list):
        return []
    timed = [(parse_time(r.get("time")), r) for r in runs if isinstance(r, Mapping)]
    return sorted(((t, r) for t, r in timed if t is not None), key=lambda tr: tr[0], reverse=True)


def _last_result(
    status: Mapping, runs: list[tuple[datetime, Mapping]]
) -> tuple[str | None, datetime | None]:
    """("Success"|"Failed", time) of the last run: recentRuns, else the times in status."""
    if runs:
        when, newest = runs[0]
        result = newest.get("result")
        if result in ("Success", "Failed"):
            return result, when
    last = parse_time(status.get("lastBackupTime"))
    if last is None:
        return None, None
    success = parse_time(status.get("lastSuccessfulBackupTime"))
    return ("Success" if success is not None and success >= last else "Failed"), last


def parse_duration_seconds(value: object) -> float | None:
    """A run's duration as status carries it: seconds as a number, or a string "12.3s"."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        return float(value)
    if isinstance(value, str):
        try:
            return parse_duration(value).total_seconds()
        except ScheduleError:
            return None
    return None


def _snapshots(runs: list[tuple[datetime, Mapping]], last_snapshot: object) -> list[Snapshot]:
    newest: dict[str, Snapshot] = {}
    for _, run in runs:
        snap = run.get("snapshotID")
        if not isinstance(snap, str) or not snap or run.get("result") != "Success":
            continue
        host = str(run.get("host") or "")
        newest.setdefault(host, Snapshot(host, snap, run["time"]))
    if not newest and isinstance(last_snapshot, str) and last_snapshot:
        newest[""] = Snapshot("", last_snapshot, "")
    return sorted(newest.values(), key=lambda s: s.host)


# croniter takes about 0.5 ms to parse an expression and as much for each step: one parsed
# iterator per schedule, moved to each time asked about; Backups that share a schedule
# (and so their run times) share the answers; and a healthy Backup costs one step, from
# its last run (the first fire time after it, when still ahead, is the next run, and
# nothing was due since).
@lru_cache(maxsize=4096)
def _iterator(schedule: Schedule) -> croniter:
    return croniter(schedule.cron, datetime(2000, 1, 1), second_at_beginning=schedule.seconds_first)


@lru_cache(maxsize=65536)
def _cron_next(schedule: Schedule, t: datetime) -> datetime:
    """The first fire time after ``t`` of a cron schedule."""
    it = _iterator(schedule)
    it.set_current(t, force=True)
    return it.get_next(datetime)


@lru_cache(maxsize=65536)
def _interval(schedule: Schedule, base: datetime) -> timedelta:
    return schedule.interval_at(base)


def _overdue_reason(
    what: str, schedule: Schedule, success: datetime | None, meta: Mapping, now: datetime
) -> str | None:
    """Why ``what`` (a run, a restic check) is overdue, counted from its last success or,
    before the first, from the Backup's creation; None when it is not."""
    base = success or parse_time(meta.get("creationTimestamp"))
    if base is None or not _overdue(schedule, base, now):
        return None
    if success:
        return f"no successful {what} since {rfc3339(base)}"
    return f"no successful {what} since the Backup was created ({rfc3339(base)})"


def _overdue(schedule: Schedule, base: datetime, now: datetime) -> bool:
    """No success for twice the interval after ``base``: the alert RestikBackupTooOld."""
    if schedule.every is None and _cron_next(schedule, base) > now:
        return False  # nothing was due since: the common case, without the full reckoning
    return now - base > 2 * _interval(schedule, base)


def _next_run(schedule: Schedule, last_run: datetime | None, now: datetime) -> datetime | None:
    if schedule.every is None:
        if last_run is not None and last_run <= now:
            following = _cron_next(schedule, last_run)
            if following > now:
                return following
        return _cron_next(schedule, now)
    # @every counts from when the sidecar started: after a run, the next is one period on
    if last_run is None:
        return None
    return last_run + schedule.every


def summarize(raw: Mapping, now: datetime) -> Row:
    """One Backup (as listed) → its Row. Pure: ``now`` is given."""
    meta = raw.get("metadata") or {}
    spec = raw.get("spec") if isinstance(raw.get("spec"), Mapping) else {}
    status = raw.get("status") if isinstance(raw.get("status"), Mapping) else {}
    runs = _runs(status)
    last_result, last_run = _last_result(status, runs)
    last_success = parse_time(status.get("lastSuccessfulBackupTime"))
    ready_cond = _condition(status, "Ready") or {}
    ready = ready_cond.get("status")
    paused = spec.get("paused") is True
    text = spec.get("schedule")
    row = Row(
        namespace=meta.get("namespace") or "",
        name=meta.get("name") or "",
        health=OK,
        reason="",
        ready=ready,
        paused=paused,
        schedule=text if isinstance(text, str) else "",
        workloads=_workloads(status),
        lastSuccessfulBackupTime=rfc3339(last_success),
        lastResult=last_result,
        lastRunTime=rfc3339(last_run),
        lastDurationSeconds=parse_duration_seconds(
            runs[0][1].get("duration") if runs else status.get("lastBackupDuration")
        ),
        backupCount=status.get("backupCount")
        if isinstance(status.get("backupCount"), int)
        else None,
        snapshots=_snapshots(runs, status.get("lastSnapshotID")),
    )
    if runs:
        recent = [r for t, r in runs if now - t <= DAY]
        row.runs24h = len(recent)
        row.failures24h = sum(1 for r in recent if r.get("result") == "Failed")
        oldest_time, oldest = runs[-1]
        number = oldest.get("number")
        # the oldest run kept is within 24 h and was not the first: some may have fallen off
        row.runs24hComplete = not (
            now - oldest_time <= DAY and isinstance(number, int) and number > 1
        )
    elif last_run is None:
        row.runs24h, row.failures24h = 0, 0
    try:
        schedule = parse_schedule(text)
    except ScheduleError as exc:
        schedule = None
        schedule_error = f"spec.schedule: {exc}"
    if schedule is not None and not paused:
        row.nextRunTime = rfc3339(_next_run(schedule, last_run, now))

    # health, worst first
    if ready == "False":
        row.health = NOT_READY
        row.reason = f"{ready_cond.get('reason') or 'NotReady'}: {ready_cond.get('message') or ''}"
    elif schedule is None:
        row.health, row.reason = NOT_READY, schedule_error
    elif paused:
        row.health, row.reason = PAUSED, "spec.paused is true"
    elif last_result == "Failed":
        row.health, row.reason = FAILED, _failed_message(runs, status)
    else:
        reason = _overdue_reason("run", schedule, last_success, meta, now)
        if reason:
            row.health, row.reason = OVERDUE, reason
        elif last_result is None:
            row.health, row.reason = PENDING, "no run yet"
    row.reason = row.reason.strip().rstrip(":")
    row.check = _check(spec.get("check"), status, meta, paused, now)
    if row.check is not None and row.check.health not in HEALTHY and row.health in HEALTHY:
        row.health, row.reason = row.check.health, row.check.reason
    return row


def _check(
    spec: object, status: Mapping, meta: Mapping, paused: bool, now: datetime
) -> Check | None:
    """spec.check's state from status.lastCheck: Failed when the last check failed,
    Overdue when none succeeded for twice the check interval (counted, as for backups,
    from the Backup's creation when none ever did), Pending before the first one."""
    if not isinstance(spec, Mapping):
        return None
    text = spec.get("schedule")
    last = status.get("lastCheck") if isinstance(status.get("lastCheck"), Mapping) else {}
    when = parse_time(last.get("time"))
    success = parse_time(status.get("lastSuccessfulCheckTime"))
    result = last.get("result") if last.get("result") in ("Success", "Failed") else None
    number, subset = last.get("number"), last.get("readDataSubset")
    message = last.get("message")
    check = Check(
        schedule=text if isinstance(text, str) else "",
        health=OK,
        reason="",
        lastResult=result,
        lastCheckTime=rfc3339(when),
        lastSuccessfulCheckTime=rfc3339(success),
        lastDurationSeconds=parse_duration_seconds(last.get("duration")),
        number=number if isinstance(number, int) and not isinstance(number, bool) else None,
        host=last.get("host") if isinstance(last.get("host"), str) else None,
        readDataSubset=subset if isinstance(subset, str) else None,
        message=message if isinstance(message, str) else None,
    )
    try:
        schedule = parse_schedule(text)
    except ScheduleError as exc:  # the controller reports it too (Ready False)
        check.health, check.reason = NOT_READY, f"spec.check.schedule: {exc}"
        return check
    if paused:
        check.health, check.reason = PAUSED, "spec.paused is true"
        return check
    check.nextCheckTime = rfc3339(_next_run(schedule, when, now))
    if result == "Failed":
        check.health = CHECK_FAILED
        check.reason = check.message or "the last restic check failed"
        return check
    reason = _overdue_reason("restic check", schedule, success, meta, now)
    if reason:
        check.health, check.reason = CHECK_OVERDUE, reason
    elif result is None:
        check.health, check.reason = PENDING, "no check yet"
    return check


def _failed_message(runs: list[tuple[datetime, Mapping]], status: Mapping) -> str:
    if runs:
        newest = runs[0][1]
        if newest.get("message"):
            return str(newest["message"])
    cond = _condition(status, "LastRunSucceeded") or {}
    return str(cond.get("message") or "the last run failed")


# --------------------------------------------------------------------------- rendering


def age(delta: timedelta) -> str:
    """kubectl's short ages: 45s, 12m, 5h, 3d."""
    seconds = int(abs(delta.total_seconds()))
    if seconds < 120:
        return f"{seconds}s"
    if seconds < 120 * 60:
        return f"{seconds // 60}m"
    if seconds < 48 * 3600:
        return f"{seconds // 3600}h"
    return f"{seconds // 86400}d"
