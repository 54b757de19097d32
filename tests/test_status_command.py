"""`restik status`: the pure summary of each Backup, the table and JSON, and the command
against the API emulator (one paged LIST, nothing else)."""

from __future__ import annotations

import argparse
import copy
import io
import json
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from reconciler.api.constants import API_VERSION
from reconciler.overview.show import Spinner, render_json, render_table, run
from reconciler.overview.summary import (
    CHECK_FAILED,
    CHECK_OVERDUE,
    FAILED,
    NOT_READY,
    OK,
    OVERDUE,
    PAUSED,
    PENDING,
    age,
    summarize,
)
from reconciler.resources import crd_manifest

ROOT = Path(__file__).resolve().parent.parent
NOW = datetime(2024, 1, 10, 12, 0, tzinfo=UTC)  # a Wednesday


def at(delta: timedelta) -> str:
    return (NOW - delta).strftime("%Y-%m-%dT%H:%M:%SZ")


def bk(name="www", ns="web", schedule="0 * * * *", status=None, created=None, **spec):
    return {
        "apiVersion": API_VERSION,
        "kind": "Backup",
        "metadata": {
            "name": name,
            "namespace": ns,
            "creationTimestamp": created or at(timedelta(days=30)),
        },
        "spec": {
            "schedule": schedule,
            "backupSource": {"volumeName": "data", "path": "/data"},
            "destination": {"repositorySecretName": "s", "repository": "/repo"},
            **spec,
        },
        "status": status or {},
    }


def run_entry(n, ago, result="Success", host="www", snap=None, message=None):
    entry = {
        "number": n,
        "result": result,
        "time": at(ago),
        "duration": "1.5s" if n % 2 else 1.5,  # both forms the status may carry
        "host": host,
        "message": message or ("snapshot saved" if result == "Success" else "repository locked"),
    }
    if result == "Success":
        entry["snapshotID"] = snap or f"{n:08x}" * 8
    return entry


READY = {"type": "Ready", "status": "True", "reason": "Ready", "message": "1 workload(s)"}


def healthy_status(**extra):
    return {
        "conditions": [READY],
        "workloads": ["StatefulSet/db"],
        "lastSuccessfulBackupTime": at(timedelta(minutes=12)),
        "lastBackupTime": at(timedelta(minutes=12)),
        "backupCount": 42,
        **extra,
    }


# --------------------------------------------------------------------------- summarize


def test_healthy_backup_with_recent_runs_and_snapshots_per_host():
    runs = [
        run_entry(42, timedelta(minutes=12), host="db-1", snap="b" * 64),
        run_entry(41, timedelta(minutes=13), host="db-0", snap="a" * 64),
        run_entry(40, timedelta(hours=1, minutes=12), result="Failed", host="db-0"),
        run_entry(39, timedelta(hours=1, minutes=13), host="db-1", snap="c" * 64),
        run_entry(38, timedelta(hours=30), host="db-0"),  # older than 24 h
    ]
    row = summarize(bk(status=healthy_status(recentRuns=runs)), NOW)
    assert (row.health, row.reason) == (OK, "")
    assert row.lastResult == "Success"
    assert row.runs24h == 4 and row.failures24h == 1 and row.runs24hComplete
    assert [(s.host, s.snapshotID) for s in row.snapshots] == [
        ("db-0", "a" * 64),
        ("db-1", "b" * 64),
    ]
    assert row.nextRunTime == "2024-01-10T13:00:00Z"
    assert row.lastDurationSeconds == 1.5  # "1.5s" in run 41, 1.5 in run 42: both read
    assert [(w.workload, w.current) for w in row.workloads] == [("StatefulSet/db", None)]


def test_durations_in_both_forms():
    from reconciler.overview.summary import parse_duration_seconds

    assert [parse_duration_seconds(v) for v in (12, 12.5, "12.3s", "1m30s", "x", True, None)] == [
        12.0,
        12.5,
        12.3,
        90.0,
        None,
        None,
        None,
    ]
    row = summarize(bk(status=healthy_status(lastBackupDuration="7.5s")), NOW)
    assert row.lastDurationSeconds == 7.5


def test_last_run_failed():
    runs = [run_entry(43, timedelta(minutes=2), result="Failed", message="wrong password")]
    row = summarize(bk(status=healthy_status(recentRuns=runs)), NOW)
    assert (row.health, row.reason, row.lastResult) == (FAILED, "wrong password", "Failed")
    # without recentRuns (an older sidecar): from the status times
    status = healthy_status(lastBackupTime=at(timedelta(minutes=2)))
    assert summarize(bk(status=status), NOW).health == FAILED


def test_overdue_is_twice_the_interval_after_the_last_success():
    def health(schedule, success_ago, created_ago=timedelta(days=30)):
        status = {"lastSuccessfulBackupTime": at(success_ago), "lastBackupTime": at(success_ago)}
        raw = bk(schedule=schedule, status=status, created=at(created_ago))
        return summarize(raw, NOW).health

    assert health("0 * * * *", timedelta(minutes=119)) == OK
    assert health("0 * * * *", timedelta(minutes=121)) == OVERDUE
    assert health("@every 10m", timedelta(minutes=19)) == OK
    assert health("@every 10m", timedelta(minutes=21)) == OVERDUE
    # weekdays at 9, now Wednesday 12:00: Monday 9:00's success is due by Wednesday 9:00
    assert health("0 9 * * 1-5", timedelta(days=2, hours=3)) == OVERDUE
    assert health("0 9 * * 1-5", timedelta(days=1, hours=3)) == OK
    # the next run comes from the schedule and now, however long ago the last run was
    status = {
        "lastSuccessfulBackupTime": at(timedelta(days=3)),
        "lastBackupTime": at(timedelta(days=3)),
    }
    row = summarize(bk(schedule="0 9 * * 1-5", status=status), NOW)
    assert row.nextRunTime == "2024-01-11T09:00:00Z"
    row = summarize(bk(schedule="@every 10m", status=status), NOW)
    assert row.nextRunTime == at(timedelta(days=3) - timedelta(minutes=10))  # due long ago
    # never succeeded: counted from the Backup's creation
    never = bk(schedule="@every 10m", created=at(timedelta(minutes=5)))
    assert summarize(never, NOW).health == PENDING
    never = bk(schedule="@every 10m", created=at(timedelta(minutes=25)))
    row = summarize(never, NOW)
    assert row.health == OVERDUE and "since the Backup was created" in row.reason


def test_paused_not_ready_and_invalid_schedule():
    row = summarize(bk(paused=True, status=healthy_status()), NOW)
    assert row.health == PAUSED and row.nextRunTime is None
    bad = {"type": "Ready", "status": "False", "reason": "InvalidSpec", "message": "spec.x: bad"}
    row = summarize(bk(status=healthy_status(conditions=[bad])), NOW)
    assert (row.health, row.reason) == (NOT_READY, "InvalidSpec: spec.x: bad")
    row = summarize(bk(schedule="every day", status=healthy_status()), NOW)
    assert row.health == NOT_READY and row.reason.startswith("spec.schedule: ")
    assert summarize({"metadata": {"name": "x"}}, NOW).health == NOT_READY  # no spec at all


def test_rollout_per_workload_is_read_when_the_controller_reports_it():
    status = healthy_status(
        workloads=["Deployment/www", "StatefulSet/db"],
        rollout=[
            {"workload": "Deployment/www", "current": True},
            {"workload": "StatefulSet/db", "current": False, "updated": 1, "replicas": 3},
            "garbage",
            {"workload": "DaemonSet/x"},  # no flag: ignored
        ],
    )
    row = summarize(bk(status=status), NOW)
    assert [(w.workload, w.current) for w in row.workloads] == [
        ("Deployment/www", True),
        ("StatefulSet/db", False),
    ]
    table = render_table([row], NOW, all_namespaces=False, colour=False)
    assert "1/2 rolled out" in table


def test_runs_in_24h_are_a_lower_bound_when_older_runs_fell_off():
    runs = [run_entry(n, timedelta(hours=30 - n)) for n in range(20, 30)]  # 10 kept
    row = summarize(bk(status=healthy_status(recentRuns=runs)), NOW)
    assert row.runs24h == 10 and not row.runs24hComplete
    assert " 10+ " in render_table([row], NOW, False, False)


def test_table_json_colour_and_ages():
    rows = [
        summarize(bk("www", status=healthy_status()), NOW),
        summarize(bk("db", ns="data", paused=True), NOW),
        summarize(bk("bad", schedule="nope"), NOW),
    ]
    plain = render_table(rows, NOW, all_namespaces=True, colour=False)
    lines = plain.splitlines()
    assert lines[0].split()[:3] == ["NAMESPACE", "NAME", "HEALTH"]
    assert "\033[" not in plain
    assert "12m ago" in lines[1] and "in 60m" in lines[1]
    assert "paused" in lines[2] and "never" in lines[2]
    assert lines[-1].startswith("web/bad: NotReady: spec.schedule: ")
    coloured = render_table(rows, NOW, all_namespaces=True, colour=True)
    assert "\033[32mOK" in coloured and "\033[31mNotReady" in coloured
    doc = json.loads(render_json(rows))
    assert doc["summary"] == {"backups": 3, "unhealthy": 1}
    assert doc["items"][0]["lastSuccessfulBackupTime"] == at(timedelta(minutes=12))
    assert [age(timedelta(seconds=s)) for s in (5, 119, 7199, 172799, 172800)] == [
        "5s",
        "119s",
        "119m",
        "47h",
        "2d",
    ]


def test_spinner_only_on_a_terminal():
    class Tty(io.StringIO):
        def isatty(self):
            return True

    plain = io.StringIO()
    with Spinner(plain, "listing"):
        time.sleep(0.25)
    assert plain.getvalue() == ""
    tty = Tty()
    with Spinner(tty, "listing"):
        time.sleep(0.35)
    assert "\r| listing" in tty.getvalue() and tty.getvalue().endswith("\r")


# --------------------------------------------------------------------------- the command


def crd_with_status_fields() -> dict:
    """The CRD, its status open to the fields other components add (recentRuns, rollout)."""
    crd = copy.deepcopy(crd_manifest())
    for version in crd["spec"]["versions"]:
        status = version["schema"]["openAPIV3Schema"]["properties"]["status"]
        status["x-kubernetes-preserve-unknown-fields"] = True
    return crd


@pytest.fixture
def backups(emulator):
    emulator.create(crd_with_status_fields())
    for ns in ("web", "data"):
        emulator.create({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}})
    now = datetime.now(UTC)

    def ago(**kw):
        return (now - timedelta(**kw)).strftime("%Y-%m-%dT%H:%M:%SZ")

    ok = {
        "conditions": [READY],
        "workloads": ["Deployment/www"],
        "lastSuccessfulBackupTime": ago(minutes=3),
        "lastBackupTime": ago(minutes=3),
        "backupCount": 7,
        "recentRuns": [
            {
                "number": 7,
                "result": "Success",
                "time": ago(minutes=3),
                "duration": "2.0s",
                "host": "www",
                "snapshotID": "1a2b3c4d" * 8,
                "message": "snapshot 1a2b3c4d saved",
            }
        ],
    }
    emulator.create(bk("www", "web", "*/15 * * * *", status=ok))
    failed = {
        **ok,
        "lastBackupTime": ago(minutes=1),
        "recentRuns": [
            {
                "number": 8,
                "result": "Failed",
                "time": ago(minutes=1),
                "duration": "0.4s",  # the CRD types a run's duration as a string
                "host": "www",
                "message": "Fatal: wrong password or no key found",
            },
            *ok["recentRuns"],
        ],
    }
    emulator.create(bk("db", "data", "@hourly", status=failed))
    emulator.clear_requests()
    return emulator


def status_cli(kubeconfig, *args):
    return subprocess.run(
        [sys.executable, "-m", "reconciler.cli", "status", "--kubeconfig", str(kubeconfig), *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_status_command_on_the_emulator(backups, kubeconfig):
    proc = status_cli(kubeconfig, "-n", "web")
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[0].split()[:2] == ["NAME", "HEALTH"]
    assert lines[1].split()[:6] == ["www", "OK", "1", "*/15", "*", "*"]
    assert "www:1a2b3c4d" in lines[1] and "3m ago" in lines[1]
    assert "\033[" not in proc.stdout and "\r" not in proc.stderr  # not a terminal
    # the API only: one LIST of the namespace's Backups, paged, and nothing else
    assert [(r.method, r.path) for r in backups.requests] == [
        ("GET", "/apis/backup.appscode.com/v1beta1/namespaces/web/backups")
    ]
    assert backups.requests[0].query.get("limit") == "500"

    proc = status_cli(kubeconfig, "-A")
    assert proc.returncode == 1  # data/db's last run failed
    assert proc.stdout.splitlines()[0].split()[:2] == ["NAMESPACE", "NAME"]
    assert "data/db: Failed: Fatal: wrong password or no key found" in proc.stdout

    proc = status_cli(kubeconfig, "-A", "-o", "json")
    doc = json.loads(proc.stdout)
    assert proc.returncode == 1
    assert doc["summary"] == {"backups": 2, "unhealthy": 1}
    db = next(i for i in doc["items"] if i["name"] == "db")
    assert db["health"] == "Failed" and db["runs24h"] == 2 and db["failures24h"] == 1

    proc = status_cli(kubeconfig, "-n", "empty")
    assert proc.returncode == 0 and proc.stdout == ""
    assert "No Backups found in namespace empty." in proc.stderr

    proc = status_cli(kubeconfig, "-n", "web", "-A")
    assert proc.returncode == 2 and "not allowed with" in proc.stderr


def test_status_without_the_crd_or_the_api_is_an_error(emulator, kubeconfig, tmp_path):
    proc = status_cli(kubeconfig)
    assert proc.returncode == 2
    assert "no Backup resource" in proc.stderr and "Traceback" not in proc.stderr
    dead = tmp_path / "dead.kubeconfig"
    dead.write_text(kubeconfig.read_text().replace(f":{emulator.port}", ":1"), encoding="utf-8")
    proc = status_cli(dead)
    assert proc.returncode == 2
    assert "cannot list Backups" in proc.stderr and "Traceback" not in proc.stderr


def test_status_colours_a_terminal(backups, kubeconfig):
    class Tty(io.StringIO):
        def isatty(self):
            return True

    args = argparse.Namespace(
        kubeconfig=str(kubeconfig), namespace="web", all_namespaces=False, output="table"
    )
    out = Tty()
    assert run(args, out=out, err=io.StringIO()) == 0
    assert "\033[32mOK" in out.getvalue()


@pytest.mark.slow
def test_many_backups_are_one_paged_list(emulator, kubeconfig):
    emulator.create(crd_with_status_fields())
    emulator.create({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "web"}})
    for i in range(501):
        emulator.create(bk(f"b{i:03}", "web", status=healthy_status()))
    emulator.clear_requests()
    args = argparse.Namespace(
        kubeconfig=str(kubeconfig), namespace="web", all_namespaces=False, output="json"
    )
    out = io.StringIO()
    assert run(args, out=out, err=io.StringIO(), now=NOW) == 0
    assert len(json.loads(out.getvalue())["items"]) == 501
    queries = [(r.method, r.path, dict(r.query)) for r in emulator.requests]
    assert [q[:2] for q in queries] == [
        ("GET", "/apis/backup.appscode.com/v1beta1/namespaces/web/backups")
    ] * 2
    assert queries[0][2] == {"limit": "500"}
    assert queries[1][2]["continue"]


# --------------------------------------------------------------------------- spec.check


def last_check(ago, result="Success", n=3, message=None, subset=None):
    entry = {
        "number": n,
        "result": result,
        "time": at(ago),
        "duration": "4.2s",
        "host": "www-0",
        "message": message or ("no errors were found" if result == "Success" else "damaged"),
    }
    if subset:
        entry["readDataSubset"] = subset
    return entry


def checked(check_status: dict, created=None, **status) -> dict:
    """A healthy Backup with spec.check (daily at 03:00) and ``check_status`` in its status."""
    return bk(
        status=healthy_status(**check_status, **status),
        created=created,
        check={"schedule": "0 3 * * *", "readDataSubset": "5%"},
    )


def test_a_backup_without_spec_check_has_no_check():
    row = summarize(bk(status=healthy_status()), NOW)
    assert row.check is None and row.health == OK
    assert " - " in render_table([row], NOW, False, False).splitlines()[1]


def test_the_last_check_is_shown_and_a_healthy_one_keeps_the_backup_ok():
    status = {
        "lastCheck": last_check(timedelta(hours=9), subset="5%"),
        "lastSuccessfulCheckTime": at(timedelta(hours=9)),
        "checkCount": 3,
    }
    row = summarize(checked(status), NOW)
    assert row.health == OK and row.reason == ""
    check = row.check
    assert (check.health, check.lastResult, check.number, check.host) == (
        OK, "Success", 3, "www-0",
    )  # fmt: skip
    assert check.lastCheckTime == check.lastSuccessfulCheckTime == at(timedelta(hours=9))
    assert (check.lastDurationSeconds, check.readDataSubset) == (4.2, "5%")
    assert check.nextCheckTime == "2024-01-11T03:00:00Z"  # NOW is 12:00
    table = render_table([row], NOW, False, False).splitlines()
    assert table[0].index("FAILED 24H") < table[0].index("LAST CHECK") < table[0].index("NEWEST")
    assert "Success 9h ago" in table[1]
    assert len(table) == 2  # nothing to explain


def test_a_failed_check_flags_a_healthy_backup_with_restics_reason():
    reason = "restic check failed: repository contains errors: pack 6d92bfdd: does not exist"
    status = {
        "lastCheck": last_check(timedelta(hours=9), "Failed", message=reason),
        "lastSuccessfulCheckTime": at(timedelta(days=1, hours=9)),
    }
    row = summarize(checked(status), NOW)
    assert (row.health, row.reason) == (CHECK_FAILED, reason)
    assert (row.check.health, row.check.lastResult) == (CHECK_FAILED, "Failed")
    table = render_table([row], NOW, False, False)
    assert "Failed 9h ago" in table.splitlines()[1]
    assert table.splitlines()[-1] == f"www: CheckFailed: {reason}"
    assert "\033[31mCheckFailed" in render_table([row], NOW, False, True)
    doc = json.loads(render_json([row]))
    assert doc["summary"] == {"backups": 1, "unhealthy": 1}
    assert doc["items"][0]["check"]["message"] == reason


def test_a_failed_backup_and_a_failed_check_are_both_explained():
    status = {"lastCheck": last_check(timedelta(hours=9), "Failed", message="damaged")}
    raw = checked(status, recentRuns=[run_entry(5, timedelta(minutes=12), "Failed")])
    row = summarize(raw, NOW)
    assert row.health == FAILED and row.check.health == CHECK_FAILED
    assert render_table([row], NOW, False, False).splitlines()[-2:] == [
        "www: Failed: repository locked",
        "www: CheckFailed: damaged",
    ]


def test_no_successful_check_for_two_intervals_is_overdue():
    old = {
        "lastCheck": last_check(timedelta(days=2, hours=9)),
        "lastSuccessfulCheckTime": at(timedelta(days=2, hours=9)),
    }
    row = summarize(checked(old), NOW)
    assert row.health == row.check.health == CHECK_OVERDUE
    assert row.reason == f"no successful restic check since {at(timedelta(days=2, hours=9))}"
    # within two intervals: fine
    recent = {**old, "lastSuccessfulCheckTime": at(timedelta(days=1, hours=9))}
    recent["lastCheck"] = last_check(timedelta(days=1, hours=9))
    assert summarize(checked(recent), NOW).health == OK


def test_no_check_yet_is_pending_then_overdue_from_the_creation():
    row = summarize(checked({}, created=at(timedelta(hours=20))), NOW)
    assert row.health == OK  # the backups are fine; the check is only pending
    assert (row.check.health, row.check.reason) == (PENDING, "no check yet")
    assert "never" in render_table([row], NOW, False, False).splitlines()[1]
    row = summarize(checked({}, created=at(timedelta(days=3))), NOW)
    assert row.health == CHECK_OVERDUE
    assert row.reason == (
        f"no successful restic check since the Backup was created ({at(timedelta(days=3))})"
    )


def test_a_paused_backup_checks_nothing_and_is_not_flagged_for_it():
    raw = checked({"lastCheck": last_check(timedelta(days=9), "Failed")})
    raw["spec"]["paused"] = True
    row = summarize(raw, NOW)
    assert row.health == PAUSED and row.check.health == PAUSED
    assert row.check.nextCheckTime is None


def test_status_shows_check_results_on_the_emulator(emulator, kubeconfig):
    emulator.create(crd_manifest())  # the CRD as shipped: status.lastCheck is in its schema
    emulator.create({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "web"}})
    now = datetime.now(UTC)
    stamp = (now - timedelta(hours=2)).strftime("%Y-%m-%dT%H:%M:%SZ")
    reason = "restic check failed: repository contains errors: pack 6d92bfdd: does not exist"
    for name, result in (("www", "Success"), ("db", "Failed")):
        raw = bk(name, "web", "@daily", check={"schedule": "@daily"})
        raw["metadata"].pop("creationTimestamp")
        raw.pop("status")
        emulator.create(raw)
        obj = emulator.get(API_VERSION, "backups", name, "web")
        status = {
            "conditions": [READY],
            "lastSuccessfulBackupTime": stamp,
            "lastBackupTime": stamp,
            "checkCount": 1,
            "lastCheck": {"number": 1, "result": result, "time": stamp, "duration": "3.0s",
                          "host": f"{name}-0",
                          "message": "no errors were found" if result == "Success" else reason},
        }  # fmt: skip
        if result == "Success":
            status["lastSuccessfulCheckTime"] = stamp
        obj["status"] = status
        emulator.update(obj, subresource="status")
    emulator.clear_requests()

    proc = status_cli(kubeconfig, "-n", "web")
    assert proc.returncode == 1, proc.stderr  # db's last check failed
    lines = proc.stdout.splitlines()
    assert "LAST CHECK" in lines[0]
    db, www = lines[1], lines[2]
    assert db.split()[:2] == ["db", "CheckFailed"] and "Failed 2h ago" in db
    assert www.split()[:2] == ["www", "OK"] and "Success 2h ago" in www
    assert lines[-1] == f"db: CheckFailed: {reason}"
    assert [(r.method, r.path) for r in emulator.requests] == [
        ("GET", "/apis/backup.appscode.com/v1beta1/namespaces/web/backups")
    ]  # still one LIST and nothing else

    doc = json.loads(status_cli(kubeconfig, "-n", "web", "-o", "json").stdout)
    checks = {i["name"]: i["check"] for i in doc["items"]}
    assert checks["www"]["health"] == "OK" and checks["www"]["lastResult"] == "Success"
    assert checks["db"] == {
        "schedule": "@daily",
        "health": "CheckFailed",
        "reason": reason,
        "lastResult": "Failed",
        "lastCheckTime": stamp,
        "lastSuccessfulCheckTime": None,
        "lastDurationSeconds": 3.0,
        "nextCheckTime": checks["db"]["nextCheckTime"],
        "number": 1,
        "host": "db-0",
        "readDataSubset": None,
        "message": reason,
    }
    assert checks["db"]["nextCheckTime"] > stamp
    assert doc["summary"] == {"backups": 2, "unhealthy": 1}
