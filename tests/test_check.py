"""`spec.check`: `restic check` on its own schedule by the pod that prunes, never during its
backup, reported as Events CheckSucceeded/CheckFailed (a series of their own,
``<backup>-check-<n>``), status.lastCheck and metrics; real restic, the emulator."""

from __future__ import annotations

import re
import time
from datetime import UTC, datetime, timedelta

import pytest

from reconciler.api.backup import InvalidBackup, parse_backup
from reconciler.api.check import CheckSpec, subset_problem
from reconciler.api.schedule import parse_schedule
from sidecar import restic as sidecar_restic
from sidecar.check import check_event, check_status_patch, failure_message
from sidecar.outcome import Outcome
from sidecar.restic import Context, Failure
from sidecar.runner import Result
from sidecar.scheduler import Scheduler
from tests.factories import PASSWORD, backup, needs_restic, restic, statefulset_pod, wait_for
from tests.factories import WATCH_NS as NS

CTX = Context(host="db-0", cache_dir="/restik/cache")

# ---------------------------------------------------------------- the model


def errors_of(raw) -> list[str]:
    with pytest.raises(InvalidBackup) as info:
        parse_backup(raw)
    return [str(e) for e in info.value.errors]


def test_check_parses_to_its_schedule_and_subset():
    b = parse_backup(backup(check={"schedule": "0 3 * * 0", "readDataSubset": "1/10"}))
    assert b.check == CheckSpec(parse_schedule("0 3 * * 0"), "1/10")
    assert parse_backup(backup(check={"schedule": "@daily"})).check.read_data_subset is None
    assert parse_backup(backup()).check is None
    # the pod template does not depend on it: changing spec.check rolls no pods
    assert parse_backup(backup()).render_key == b.render_key


@pytest.mark.parametrize(
    ("check", "message"),
    [
        ({"schedule": "0 25 * * *"}, "spec.check.schedule: invalid cron expression '0 25 * * *': "
         "hour field '25': 25 is out of range 0-23"),
        ({}, "spec.check.schedule: required"),
        ({"schedule": ""}, "spec.check.schedule: must be a non-empty string"),
        ({"schedule": "@daily", "readDataSubset": "10"}, "spec.check.readDataSubset: '10' is not "
         'a data subset: use "n/t" (e.g. "1/10"), "x%" (e.g. "5%") or a size ("500M", "2G")'),
        ({"schedule": "@daily", "readDataSubset": "3/2"},
         "spec.check.readDataSubset: '3/2': n/t needs 1 <= n <= t (e.g. \"1/10\")"),
        ({"schedule": "@daily", "readDataSubset": "0/2"},
         "spec.check.readDataSubset: '0/2': n/t needs 1 <= n <= t (e.g. \"1/10\")"),
        ({"schedule": "@daily", "readDataSubset": "150%"},
         "spec.check.readDataSubset: '150%': the percentage must be above 0 and at most 100"),
        ({"schedule": "@daily", "readDataSubset": "0M"},
         "spec.check.readDataSubset: '0M': the size must be above 0"),
        ({"schedule": "@daily", "readDataSubset": ["5%"]},
         "spec.check.readDataSubset: must be a string, got list"),
        ({"schedule": "@daily", "extra": 1}, "spec.check.extra: unknown field"),
    ],
)  # fmt: skip
def test_check_errors_name_the_field(check, message):
    assert errors_of(backup(check=check)) == [message]


def test_check_errors_come_with_the_others():
    raw = backup(schedule="nope", check={"schedule": "nope", "readDataSubset": "x"})
    paths = [e.split(":")[0] for e in errors_of(raw)]
    assert paths == ["spec.schedule", "spec.check.schedule", "spec.check.readDataSubset"]
    assert errors_of(backup(check="weekly")) == ["spec.check: must be an object, got string"]


@pytest.mark.parametrize(
    "subset", ["1/1", "1/10", "5%", "0.5%", "100%", "100.0%", "1k", "500M", "2G", "1T"]
)
def test_restics_own_subset_forms_are_accepted(subset):
    assert subset_problem(subset) is None


@pytest.mark.parametrize("subset", ["500", "1.5G", "5 %", "%", "1/", "/2", "-1%", "5MiB", "1e3M"])
def test_other_subsets_are_refused(subset):
    assert subset_problem(subset)


@needs_restic
@pytest.mark.parametrize(
    ("subset", "accepted"), [("5%", True), ("1/10", True), ("500m", True), ("500", False),
                             ("1.5G", False), ("101%", False), ("3/2", False)],
)  # fmt: skip
def test_the_model_agrees_with_restic_on_subsets(tmp_path, subset, accepted):
    """restic itself on an empty repository: a subset it refuses is a usage error naming
    the flag (a size on an empty repository fails otherwise: "Cannot read from a repository
    having size 0")."""
    from tests.factories import copy_template

    repo = copy_template(tmp_path / "repo")
    proc = restic(str(repo), "check", f"--read-data-subset={subset}", check=False)
    assert ("flag --read-data-subset" not in proc.stderr) is accepted, proc.stderr
    assert proc.returncode == 0 or not accepted or subset.endswith("m")
    assert (subset_problem(subset) is None) is accepted


# ---------------------------------------------------------------- rendering and reporting


def test_render_check_waits_for_locks_and_reads_the_subset():
    b = parse_backup(backup(repository="/mnt/repo", check={"schedule": "@daily"}))
    native = Context(host="db-0", cache_dir="/c", retry_lock=60, native_retry_lock=True)
    assert sidecar_restic.render_check(b, native) == [
        "restic", "--repo=/mnt/repo", "--cache-dir=/c", "--retry-lock=20s", "check",
    ]  # fmt: skip
    b = parse_backup(
        backup(repository="/mnt/repo", check={"schedule": "@daily", "readDataSubset": "5%"})
    )
    assert sidecar_restic.render_check(b, CTX)[-2:] == ["check", "--read-data-subset=5%"]


# What restic 0.18 prints for a repository whose one data pack was deleted.
DAMAGED = """\
pack 6d92bfddcea6f41a309cf9fe34fc399ac76387cd4a0ebf0ded76f3dc6e590f94: does not exist
Load(<data/6d92bfddce>, 0, 0) failed: open /repo/data/6d/6d92bfdd: no such file or directory
Load(<data/6d92bfddce>, 0, 0) failed: open /repo/data/6d/6d92bfdd: no such file or directory
error for tree b0978ab7:
  ReadFull(<data/6d92bfddce>): open /repo/data/6d/6d92bfdd: no such file or directory

The repository is damaged and must be repaired. Please follow the troubleshooting guide at \
https://restic.readthedocs.io/en/stable/077_troubleshooting.html .

Fatal: repository contains errors
"""


def _result(stderr: str, code: int = 1) -> Result:
    return Result(("restic", "check"), code, "", stderr, 1.0)


def test_a_damaged_repository_is_reported_with_restics_first_errors():
    message = failure_message(_result(DAMAGED), Failure.OTHER)
    assert message == (
        "restic check failed: repository contains errors: pack 6d92bfddcea6f41a309cf9fe34fc399a"
        "c76387cd4a0ebf0ded76f3dc6e590f94: does not exist; Load(<data/6d92bfddce>, 0, 0) "
        "failed: open /repo/data/6d/6d92bfdd: no such file or directory; error for tree "
        "b0978ab7: ReadFull(<data/6d92bfddce>): open /repo/data/6d/6d92bfdd: no such file or "
        "directory"
    )
    many = "".join(f"pack {i:064x}: does not exist\n" for i in range(50))
    message = failure_message(_result(many + "Fatal: repository contains errors\n"), Failure.OTHER)
    assert message.endswith("(and 47 more)") and len(message) < 1024
    locked = "Fatal: unable to create lock in backend: repository is already locked by PID 7"
    assert failure_message(_result(locked, 11), Failure.LOCKED) == (
        "restic check failed: unable to create lock in backend: repository is already locked "
        "by PID 7"
    )


def test_the_check_status_and_event_are_their_own_series():
    started = datetime(2026, 11, 30, 3, 0, tzinfo=UTC)
    ok = Outcome(success=True, message="restic check found no errors", duration=2.5)
    patch = check_status_patch(4, ok, started, "17", "db-0", "5%")
    assert patch == {
        "metadata": {"resourceVersion": "17"},
        "status": {
            "checkCount": 4,
            "lastCheck": {"number": 4, "result": "Success", "time": "2026-11-30T03:00:00Z",
                          "duration": "2.5s", "host": "db-0", "readDataSubset": "5%",
                          "message": "restic check found no errors"},
            "lastSuccessfulCheckTime": "2026-11-30T03:00:00Z",
        },
    }  # fmt: skip
    bad = Outcome(success=False, message="x" * 5000, duration=1.0)
    patch = check_status_patch(5, bad, started, "18", "db-0", None)["status"]
    assert "lastSuccessfulCheckTime" not in patch and "readDataSubset" not in patch["lastCheck"]
    assert len(patch["lastCheck"]["message"]) <= 256
    meta = {"metadata": {"name": "www", "namespace": NS, "uid": "u", "resourceVersion": "18"}}
    event = check_event(meta, 5, bad, started, "db-0", "db-0")
    assert event["metadata"]["name"] == "www-check-5"
    assert (event["reason"], event["type"]) == ("CheckFailed", "Warning")
    assert len(event["message"]) <= 1024
    assert check_event(meta, 6, ok, started, "db-0", "db-0")["reason"] == "CheckSucceeded"


# ---------------------------------------------------------------- the schedule


def _raw(check=None, **spec):
    raw = backup(schedule="@hourly", **spec)
    if check is not None:
        raw["spec"]["check"] = check
    return raw


def test_checks_have_their_own_schedule_kept_across_unrelated_changes():
    now = [datetime(2026, 11, 30, 1, 0, 30, tzinfo=UTC)]
    s = Scheduler("www", clock=lambda: now[0])
    s.apply(_raw(check={"schedule": "*/5 * * * *"}))
    assert s.next_check == datetime(2026, 11, 30, 1, 5, tzinfo=UTC)
    assert s.wait(600, now[0]) == 270  # the check is due before the hourly backup
    assert s.check_due(now[0]) is None
    now[0] = datetime(2026, 11, 30, 1, 5, 1, tzinfo=UTC)
    s.apply(_raw(check={"schedule": "*/5 * * * *", "readDataSubset": "5%"}, tags=["x"]))
    assert s.next_check == datetime(2026, 11, 30, 1, 5, tzinfo=UTC)  # kept
    assert s.check_due(now[0]) == datetime(2026, 11, 30, 1, 5, tzinfo=UTC)
    assert s.next_check == datetime(2026, 11, 30, 1, 10, tzinfo=UTC)
    s.apply(_raw(check={"schedule": "@daily"}))
    assert s.next_check == datetime(2026, 12, 1, tzinfo=UTC)
    s.apply(_raw(check={"schedule": "@daily"}, paused=True))
    assert s.next_check is None and s.check_due(now[0] + timedelta(days=2)) is None
    s.apply(_raw(check={"schedule": "@daily"}))
    assert s.next_check == datetime(2026, 12, 1, tzinfo=UTC)
    s.apply(_raw())  # spec.check removed
    assert s.next_check is None
    s.apply(_raw(check={"schedule": "@daily"}))
    s.apply(_raw(check={"schedule": "@daily"}, schedule_broken=True))  # invalid Backup
    assert s.next_check is None


# ---------------------------------------------------------------- real restic, the sidecar


def _checks(world) -> list[dict]:
    return [e for e in world.events() if "-check-" in e["metadata"]["name"]]


def _damage(repo) -> str:
    """Delete one data pack of the repository; its id."""
    packs = sorted(p for p in (repo / "data").rglob("*") if p.is_file())
    assert packs, "no data pack to damage"
    packs[0].unlink()
    return packs[0].name


@needs_restic
@pytest.mark.slow
def test_a_healthy_repository_checks_ok_and_a_damaged_one_fails_with_restics_reason(world):
    restic(str(world.repo), "backup", "--host", "www", str(world.src))  # data packs to check
    world.backup(schedule="@every 1h", check={"schedule": "@every 2s", "readDataSubset": "50%"})
    sc = world.sidecar("--workload", "Deployment/www")
    wait_for(lambda: _checks(world), 60, [sc])
    first = _checks(world)[0]
    assert first["metadata"]["name"] == "www-check-1", sc.log[-3000:]
    assert (first["reason"], first["type"]) == ("CheckSucceeded", "Normal")
    assert re.fullmatch(
        r"restic check found no errors, read back 50% of the data in \d+\.\ds", first["message"]
    )
    status = world.status()
    assert status["lastCheck"]["result"] == "Success" and status["checkCount"] >= 1
    assert status["lastCheck"]["readDataSubset"] == "50%"
    assert status["lastSuccessfulCheckTime"] <= status["lastCheck"]["time"]
    assert "backupCount" not in status  # checks are not backup runs
    runs = [line for line in sc.log.splitlines() if re.search(r"running \S+ .* check", line)]
    assert runs and "--read-data-subset=50%" in runs[0]

    pack = _damage(world.repo)
    wait_for(lambda: any(e["reason"] == "CheckFailed" for e in _checks(world)), 60, [sc])
    failed = next(e for e in _checks(world) if e["reason"] == "CheckFailed")
    assert failed["type"] == "Warning"
    assert failed["message"].startswith("restic check failed: repository contains errors: ")
    assert f"pack {pack}: does not exist" in failed["message"], failed["message"]
    assert PASSWORD not in failed["message"]
    wait_for(lambda: world.status()["lastCheck"]["result"] == "Failed", 30, [sc])
    code, text = sc.get("/metrics")
    assert code == 200
    labels = '{backup="www",namespace="default"}'
    assert f"restik_check_last_run_success{labels} 0.0" in text
    assert 'restik_check_runs_total{backup="www",namespace="default",result="failed"}' in text
    assert f"restik_check_schedule_interval_seconds{labels} 2.0" in text
    assert "restic check of default/www FAILED" in sc.log
    # spec.check removed: no more checks, and the series go (no alert on a removed check)
    world.patch_spec(check=None)
    wait_for(lambda: "restik_check_last_run_success{" not in sc.get("/metrics")[1], 30, [sc])
    count = len(_checks(world))
    time.sleep(3)
    assert len(_checks(world)) == count
    assert sc.terminate() == 0


@needs_restic
@pytest.mark.slow
def test_only_the_pod_that_prunes_checks_and_never_during_its_backup(world):
    # both on the same 2-second cron: the check waits for the backup, never beside it
    world.backup(schedule="*/2 * * * * *", check={"schedule": "*/2 * * * * *"})
    for name in ("db-0", "db-1"):
        world.emu.create(statefulset_pod(name))
    sidecars = {
        name: world.sidecar("--lease-duration", "30s", "--lock-wait", "60s", pod=name)
        for name in ("db-0", "db-1")
    }
    wait_for(lambda: len(_checks(world)) >= 3, 90, sidecars.values())
    lease = world.emu.get("coordination.k8s.io/v1", "leases", "restik-www-db-prune", NS)
    designated = lease["spec"]["holderIdentity"]
    checks = _checks(world)
    # before SIGTERM: a backup it interrupts is Failed, rightly
    backups = [e for e in world.events() if "-check-" not in e["metadata"]["name"]]
    for sc in sidecars.values():
        assert sc.terminate() == 0
    assert {e["source"]["host"] for e in checks} == {designated}
    assert all(e["reason"] == "CheckSucceeded" for e in checks), [e["message"] for e in checks]
    other = next(n for n in sidecars if n != designated)
    assert "restic check of" not in sidecars[other].log
    assert "restic check of" in sidecars[designated].log
    # one run thread: each check starts after the backup before it has been reported
    lines = sidecars[designated].log.splitlines()
    events = [ln for ln in lines if re.search(r"(run|restic check) of \S+ (started|succeeded)", ln)]
    started = None
    for line in events:
        kind = "check" if "restic check" in line else "run"
        if " started (" in line:
            assert started is None, f"{kind} started while the {started} was going"
            started = kind
        else:
            assert started == kind
            started = None
    failed = [(e["source"]["host"], e["message"]) for e in backups if e["reason"] != "Success"]
    assert backups and failed == []
