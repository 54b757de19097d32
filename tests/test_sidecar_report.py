"""How the sidecar reports a run on its Backup: status.recentRuns and the LastRunSucceeded
condition (pure, then against the emulator, which prunes and validates like the API)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from reconciler.api.constants import API_VERSION
from reconciler.resources import crd_manifest
from sidecar.outcome import Outcome
from sidecar.report import (
    MAX_RECENT_RUNS,
    MAX_RUN_MESSAGE,
    MAX_SNAPSHOT_HOSTS,
    RUN_CONDITION,
    report,
    run_status_patch,
)
from sidecar.restic import Failure, Summary
from tests.factories import backup_object, crd_validator

NS = "default"
T0 = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
READY = {
    "type": "Ready",
    "status": "True",
    "reason": "Ready",
    "message": "1 workload(s) backed up",
    "lastTransitionTime": "2026-01-01T00:00:00Z",
}


def ok(snapshot="0123abcd"):
    return Outcome(
        success=True, message=f"snapshot {snapshot} saved", duration=2.25,
        summary=Summary(snapshot_id=snapshot),
    )  # fmt: skip


def failed(message="boom", **kw):
    return Outcome(success=False, message=message, duration=0.5, **kw)


def backup_with(status: dict) -> dict:
    obj = backup_object("/data", "/repo")
    obj["status"] = status
    return obj


def test_a_run_is_recorded_newest_first_and_bounded():
    status: dict = {"conditions": [READY]}
    for n in range(1, MAX_RECENT_RUNS + 3):
        outcome = ok(f"{n:08x}") if n % 2 else failed(f"error {n}")
        patch = run_status_patch(status, outcome, n, T0 + timedelta(minutes=n), "7", host="www")
        status = {**status, **patch["status"]}
        errors = list(crd_validator().iter_errors(backup_with(status)))
        assert errors == [], [e.message for e in errors]
    runs = status["recentRuns"]
    assert len(runs) == MAX_RECENT_RUNS
    assert [r["number"] for r in runs] == list(range(MAX_RECENT_RUNS + 2, 2, -1))
    assert runs[0] == {
        "number": 12,
        "result": "Failed",
        "time": "2026-01-02T03:16:05Z",
        "duration": "0.5s",
        "host": "www",
        "message": "error 12",
    }
    assert runs[1]["snapshotID"] == "0000000b" and runs[1]["result"] == "Success"
    assert status["lastSnapshotID"] == "0000000b"  # of the last success
    assert patch["metadata"] == {"resourceVersion": "7"}


def test_the_run_condition_leaves_ready_alone_and_moves_only_on_a_change():
    first = run_status_patch({"conditions": [READY]}, failed(), 1, T0, "1")["status"]
    assert first["conditions"][0] == READY  # the controller's, as read
    cond = first["conditions"][1]
    assert cond == {
        "type": RUN_CONDITION,
        "status": "False",
        "reason": "Failed",
        "message": "run 1: boom",
        "lastTransitionTime": "2026-01-02T03:04:05Z",
    }
    later = T0 + timedelta(hours=1)
    second = run_status_patch(first, failed("wrong", failure=Failure.WRONG_PASSWORD), 2, later, "2")
    cond2 = second["status"]["conditions"][1]
    assert (cond2["reason"], cond2["lastTransitionTime"]) == (
        "WrongPassword",
        cond["lastTransitionTime"],
    )
    third = run_status_patch(second["status"], ok(), 3, later, "3")["status"]["conditions"][1]
    assert (third["status"], third["reason"]) == ("True", "Success")
    assert third["lastTransitionTime"] == "2026-01-02T04:04:05Z"
    assert len(second["status"]["conditions"]) == 2


def test_each_hosts_newest_snapshot_replaces_only_its_own_entry():
    other = {"host": "db-1", "id": "1" * 64, "time": "2026-01-02T03:00:00Z"}
    old = {"host": "db-0", "id": "0" * 64, "time": "2026-01-02T02:00:00Z"}
    status = {"snapshots": [other, old]}
    new = run_status_patch(status, ok("a" * 64), 3, T0, "9", host="db-0")["status"]
    mine = {"host": "db-0", "id": "a" * 64, "time": "2026-01-02T03:04:05Z"}
    assert new["snapshots"] == [mine, other]  # newest first, db-1's entry as it was
    # a failed run, or one without a snapshot, leaves the list alone (merge patch: absent)
    for outcome in (failed(), failed(summary=Summary(snapshot_id="b" * 64))):
        assert (
            "snapshots" not in run_status_patch(status, outcome, 4, T0, "9", host="db-0")["status"]
        )
    # bounded: the hosts backed up longest ago fall off
    many = [
        {"host": f"h{i}", "id": f"{i:064x}", "time": f"2025-12-{1 + i % 28:02d}T00:00:00Z"}
        for i in range(MAX_SNAPSHOT_HOSTS + 5)
    ]
    new = run_status_patch({"snapshots": many}, ok(), 5, T0, "9", host="db-0")["status"]
    assert len(new["snapshots"]) == MAX_SNAPSHOT_HOSTS
    assert new["snapshots"][0]["host"] == "db-0"
    kept = {e["host"] for e in new["snapshots"]}
    assert max(e["time"] for e in many if e["host"] not in kept) <= min(
        e["time"] for e in new["snapshots"]
    )


def test_long_messages_are_clipped():
    patch = run_status_patch({}, failed("x" * 5000), 1, T0, "1")["status"]
    assert len(patch["recentRuns"][0]["message"]) == MAX_RUN_MESSAGE
    assert patch["recentRuns"][0]["message"].endswith("...")
    assert len(patch["conditions"][0]["message"]) <= 1024


def _api(kubeconfig):
    from reconciler.kube.client import Kube

    return Kube.connect(str(kubeconfig))


def test_recent_runs_survive_the_api_schema_and_concurrent_writers(emulator, kubeconfig):
    """Through the emulator (which prunes fields the CRD does not declare, as the API
    server does): the history is kept, bounded, and a controller's Ready written between
    runs stays."""
    emulator.create(crd_manifest())
    emulator.create(backup_object("/data", "/repo"))
    emulator.patch(API_VERSION, "backups", "www", {"status": {"conditions": [READY]}}, NS,
                   subresource="status")  # fmt: skip
    api = _api(kubeconfig)
    for n in range(MAX_RECENT_RUNS + 2):
        if n == 5:  # the controller changes Ready between two runs
            ready = {**READY, "message": "2 workload(s) backed up"}
            emulator.patch(API_VERSION, "backups", "www", {"status": {"conditions": [ready]}},
                           NS, subresource="status")  # fmt: skip
        outcome = ok(f"{n:08x}") if n % 3 else failed()
        report(api, NS, "www", outcome, started=T0, now=T0, host=f"www-{n % 2}",
               instance=f"www-{n % 2}")  # fmt: skip
    st = emulator.get(API_VERSION, "backups", "www", NS)["status"]
    assert [r["number"] for r in st["recentRuns"]] == list(range(12, 2, -1))
    assert {r["host"] for r in st["recentRuns"]} == {"www-0", "www-1"}
    assert st["recentRuns"][0]["snapshotID"] == "0000000b"
    # runs 10 (www-0) and 11 (www-1) saved snapshots: each host its newest, nothing pruned
    assert sorted((e["host"], e["id"]) for e in st["snapshots"]) == [
        ("www-0", "0000000a"),
        ("www-1", "0000000b"),
    ]
    types = [c["type"] for c in st["conditions"]]
    assert types == ["Ready", RUN_CONDITION]
    assert st["conditions"][0] == {**READY, "message": "2 workload(s) backed up"}
    assert st["conditions"][1]["status"] == "True"
    writes = [r for r in emulator.writes() if r.subresource == "status"]
    assert len(writes) == 12 and all(r.body["metadata"]["resourceVersion"] for r in writes)


def test_a_run_is_claimed_from_the_watched_backup_without_a_get(emulator, kubeconfig):
    """Issue 14: the sidecar's watch has the Backup already; an up-to-date copy saves the
    GET between restic's exit and the Event, a stale one costs a 409 and a GET (the number
    stays right: the claim is conditional on its resourceVersion)."""
    emulator.create(crd_manifest())
    emulator.create(backup_object("/data", "/repo"))
    api = _api(kubeconfig)
    seen = emulator.get(API_VERSION, "backups", "www", NS)
    emulator.clear_requests()
    name = report(api, NS, "www", ok(), started=T0, now=T0, host="www", instance="www",
                  current=seen)  # fmt: skip
    assert name == "www-1"
    assert [(r.method, r.resource, r.subresource, r.status) for r in emulator.requests] == [
        ("PATCH", "backups", "status", 200),
        ("POST", "events", "", 201),
    ]
    emulator.clear_requests()
    name = report(api, NS, "www", ok(), started=T0, now=T0, host="www", instance="www",
                  current=seen)  # stale: run 1 was written since  # fmt: skip
    assert name == "www-2"
    assert [(r.method, r.resource, r.status) for r in emulator.requests] == [
        ("PATCH", "backups", 409),
        ("GET", "backups", 200),
        ("PATCH", "backups", 200),
        ("POST", "events", 201),
    ]
    status = emulator.get(API_VERSION, "backups", "www", NS)["status"]
    assert status["backupCount"] == 2
    assert [r["number"] for r in status["recentRuns"]] == [2, 1]
