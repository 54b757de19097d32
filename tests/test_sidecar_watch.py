"""`restik watch` as a process, against the API emulator over HTTP and real restic."""

from __future__ import annotations

import json
import os
import subprocess
import time
from datetime import datetime, timedelta
from pathlib import Path

import pytest

from reconciler.api.constants import API_VERSION
from reconciler.resources import crd_manifest
from sidecar.follow import workload_from_pod
from sidecar.lease import lease_name
from tests.factories import (
    PASSWORD,
    RESTIC,
    Sidecar,
    backup_object,
    base_env,
    copy_template,
    needs_restic,
    restic,
    tree_bytes,
    wait_for,
    write_tree,
)

ROOT = Path(__file__).resolve().parent.parent
NS = "default"
CRD = crd_manifest()  # the real schema: the emulator prunes and validates like the API

pytestmark = [needs_restic, pytest.mark.slow]


def test_workload_from_pod():
    def pod(kind, name, labels=None):
        return {
            "metadata": {
                "labels": labels or {},
                "ownerReferences": [{"kind": kind, "name": name, "controller": True}],
            }
        }

    assert workload_from_pod(pod("ReplicaSet", "www-5d9c", {"pod-template-hash": "5d9c"})) == (
        "Deployment",
        "www",
    )
    assert workload_from_pod(pod("ReplicaSet", "www")) == ("ReplicaSet", "www")
    assert workload_from_pod(pod("StatefulSet", "db")) == ("StatefulSet", "db")
    assert workload_from_pod({"metadata": {}}) is None


def test_lease_name():
    assert lease_name("www", "web") == "restik-www-web"
    long = lease_name("b" * 200, "w" * 200)
    assert len(long) == 253
    assert long != lease_name("b" * 200, "w" * 199 + "x")


def names(events):
    return [e["metadata"]["name"] for e in events]


def test_runs_on_schedule_and_reports_events_and_status(world):
    b = world.backup(schedule="*/2 * * * * *", tags=["prod"])
    sc = world.sidecar("--workload", "Deployment/www")
    events = world.wait_events(2)
    assert names(events)[:2] == ["www-1", "www-2"]
    for e in events[:2]:
        assert e["reason"] == "Success" and e["type"] == "Normal"
        assert e["message"].startswith("snapshot ")
        assert e["involvedObject"]["kind"] == "Backup"
        assert e["involvedObject"]["uid"] == b["metadata"]["uid"]
        assert e["involvedObject"]["apiVersion"] == API_VERSION
        assert e["source"]["component"] == "restik"
        assert e["count"] == 1
    st = world.status()
    assert st["backupCount"] >= 2
    assert st["firstBackupTime"] <= st["lastBackupTime"]
    assert st["lastSuccessfulBackupTime"] == st["lastBackupTime"]
    assert st["lastBackupDuration"].endswith("s")
    code, body = sc.get("/healthz")
    assert code == 200
    code, body = sc.get("/metrics")
    assert code == 200 and 'restik_backup_runs_total{backup="www"' in body
    assert "restik_backup_last_success_timestamp_seconds" in body
    assert sc.terminate() == 0
    # no pod in the emulator: a single instance, snapshots under POD_NAME, tags applied
    snaps = json.loads(restic(str(world.repo), "snapshots", "--json").stdout)
    assert {s["hostname"] for s in snaps} == {"www-test"}
    assert all(s["tags"] == ["prod"] for s in snaps)
    target = world.tmp / "restored"
    restic(str(world.repo), "restore", "latest", "--target", str(target))
    assert tree_bytes(target / str(world.src).lstrip("/")) == tree_bytes(world.src)
    # numbering continues across a restart and never repeats
    count = world.status()["backupCount"]
    sc2 = world.sidecar("--workload", "Deployment/www", pod="www-test2")
    events = world.wait_events(count + 1)
    assert names(events) == [f"www-{i}" for i in range(1, len(events) + 1)]
    assert sc2.terminate() == 0
    # status.snapshots: each host's newest snapshot, as restic lists it
    snaps = json.loads(restic(str(world.repo), "snapshots", "--json").stdout)
    newest = {}
    for snap in sorted(snaps, key=lambda s: s["time"]):
        newest[snap["hostname"]] = snap
    assert set(newest) == {"www-test", "www-test2"}
    entries = {e["host"]: e for e in world.status()["snapshots"]}
    assert {h: e["id"] for h, e in entries.items()} == {
        h: s["short_id"] for h, s in newest.items()
    }  # the short id, as in recentRuns and the Events
    for host, entry in entries.items():
        restic_time = datetime.fromisoformat(newest[host]["time"])
        assert abs(datetime.fromisoformat(entry["time"]) - restic_time) < timedelta(seconds=5)
    # the password is nowhere: arguments, logs, Events, status, any request body
    assert PASSWORD not in sc.log and PASSWORD not in sc2.log
    assert "RESTIC_PASSWORD" not in " ".join(sc.proc.args)
    dump = json.dumps([world.events(), world.emu.get(API_VERSION, "backups", "www", NS)])
    assert PASSWORD not in dump
    assert not any(PASSWORD in json.dumps(r.body) for r in world.emu.requests if r.body)


def test_schedule_change_pause_and_delete_are_followed_live(world):
    world.backup(schedule="@every 1h")
    sc = world.sidecar()
    wait_for(lambda: "next run" in sc.log, 30, [sc])
    time.sleep(1.5)
    assert world.events() == []
    rss_kib = int(_proc_status(sc.proc.pid)["VmRSS"].split()[0])
    assert rss_kib < 40 * 1024, f"idle sidecar uses {rss_kib} KiB"
    world.patch_spec(schedule="@every 1s")  # picked up without a restart
    world.wait_events(1)
    world.patch_spec(paused=True)
    wait_for(lambda: "is paused" in sc.log, 30, [sc])
    wait_for(lambda: not _running(sc), 30, [sc])
    count = len(world.events())
    time.sleep(2.5)
    assert len(world.events()) == count  # paused: no more runs
    world.patch_spec(paused=False)
    world.wait_events(count + 1)
    world.emu.delete(API_VERSION, "backups", "www", NS)
    wait_for(lambda: "not found: not scheduling" in sc.log, 30, [sc])
    wait_for(lambda: not _running(sc), 30, [sc])
    count = len(world.events())
    time.sleep(2.5)
    assert len(world.events()) == count
    assert sc.proc.poll() is None  # still alive, waiting for its Backup to come back
    assert sc.terminate() == 0


def _proc_status(pid: int) -> dict[str, str]:
    lines = Path(f"/proc/{pid}/status").read_text().splitlines()
    return dict(line.split(":", 1) for line in lines if ":" in line)


def _count_started(log: str) -> int:
    return log.count("run of default/www started")


def _running(sc) -> bool:
    log = sc.log
    return log.count("run of default/www started") > log.count("run of default/www succeeded") + (
        log.count("run of default/www FAILED")
    )


def test_wrong_password_gives_failed_event_without_reinit(world):
    world.backup(schedule="@every 1s")
    before = tree_bytes(world.repo)
    wrong = "Wrong-Pa55word-xyz"
    sc = world.sidecar(password=wrong)
    events = world.wait_events(2)
    for e in events:
        assert e["reason"] == "Failed" and e["type"] == "Warning"
        assert e["message"] == "wrong password or no key found"
    assert tree_bytes(world.repo) == before  # never re-initialised, nothing written
    st = world.status()
    assert "lastSuccessfulBackupTime" not in st and st["backupCount"] >= 2
    assert sc.terminate() == 0
    assert wrong not in sc.log and wrong not in json.dumps(world.events())


def test_missing_secret_is_a_failed_run_per_schedule_and_the_sidecar_stays(world):
    """The Secret is referenced as optional, so a missing one leaves RESTIC_PASSWORD unset:
    every scheduled run is a Failed run naming the Secret and key, restic never starts."""
    world.backup(schedule="@every 1s")
    before = tree_bytes(world.repo)
    sc = world.sidecar(password=None)
    events = world.wait_events(2)
    for e in events:
        assert (e["reason"], e["type"]) == ("Failed", "Warning")
        assert "Secret default/www-restic" in e["message"]
        assert '"password"' in e["message"] and "restart the pod" in e["message"]
    st = world.status()
    assert [r["result"] for r in st["recentRuns"]] == ["Failed"] * len(st["recentRuns"])
    assert "www-restic" in st["recentRuns"][0]["message"]
    cond = next(c for c in st["conditions"] if c["type"] == "LastRunSucceeded")
    assert (cond["status"], cond["reason"]) == ("False", "SecretMissing")
    assert "www-restic" in cond["message"]
    assert "running " + RESTIC not in sc.log  # restic was never started
    assert tree_bytes(world.repo) == before
    assert sc.proc.poll() is None  # alive: the application's pod stays in service
    assert sc.terminate() == 0


def test_invalid_backup_is_waited_out(world):
    world.backup(schedule="not a schedule")
    sc = world.sidecar()
    wait_for(lambda: "spec.schedule" in sc.log, 30, [sc])
    world.patch_spec(schedule="@every 1s")
    world.wait_events(1)
    assert world.events()[0]["reason"] == "Success"
    assert sc.terminate() == 0


def test_overlapping_run_is_skipped(world):
    big = world.src / "big"
    big.mkdir()
    for i in range(4):
        (big / f"f{i}").write_bytes(os.urandom(24 * 1024 * 1024))
    world.backup(schedule="@every 1s")
    sc = world.sidecar()
    wait_for(lambda: "previous run is still going" in sc.log, 60, [sc])
    _, metrics = sc.get("/metrics")
    assert 'restik_backup_runs_total{backup="www",namespace="default",result="skipped"}' in metrics
    world.wait_events(1)
    assert sc.terminate() == 0
    assert _count_started(sc.log) == len(world.events())  # skipped runs are not queued


def test_sigterm_mid_backup_exits_0_and_leaves_repository_consistent(world):
    big = world.src / "big"
    big.mkdir()
    for i in range(6):
        (big / f"f{i}").write_bytes(os.urandom(32 * 1024 * 1024))
    world.backup(schedule="@every 1s")
    sc = world.sidecar()
    wait_for(lambda: any((world.repo / "locks").iterdir()), 60, [sc])
    time.sleep(0.3)
    assert sc.terminate() == 0
    assert not any((world.repo / "locks").iterdir())
    restic(str(world.repo), "check")
    events = world.events()
    assert len(events) == 1 and events[0]["reason"] == "Failed"
    assert events[0]["message"].startswith("interrupted by shutdown")


def test_one_replica_backs_up_and_another_takes_over(world):
    for pod in ("www-a", "www-b"):
        world.emu.create(
            {
                "apiVersion": "v1",
                "kind": "Pod",
                "metadata": {"name": pod, "namespace": NS},
                "spec": {"containers": [{"name": "app", "image": "x"}]},
            }
        )
    world.backup(schedule="@every 1s")
    args = ("--workload", "Deployment/www", "--lease-duration", "3s")
    a = world.sidecar(*args, pod="www-a")
    wait_for(lambda: "Lease" in a.log and "acquired" in a.log, 30, [a])
    b = world.sidecar(*args, pod="www-b")
    world.wait_events(3)
    wait_for(lambda: "not the holder" in b.log, 30, [a, b])
    assert "run of default/www started" not in b.log
    lease = world.emu.get("coordination.k8s.io/v1", "leases", "restik-www-www", NS)
    assert lease["spec"]["holderIdentity"] == "www-a"
    assert a.terminate() == 0  # releases the Lease: b takes over
    count = len(world.events())
    world.wait_events(count + 2)
    wait_for(lambda: "run of default/www started" in b.log, 30, [b])
    snaps = json.loads(restic(str(world.repo), "snapshots", "--json").stdout)
    assert {s["hostname"] for s in snaps} == {"www"}  # the workload's name, not the pod's
    evs = world.events()
    assert names(evs) == [f"www-{i}" for i in range(1, len(evs) + 1)]


# --- reporting, in-process against the emulator ----------------------------------------------


def _api(kubeconfig):
    from reconciler.kube.client import Kube

    return Kube.connect(str(kubeconfig))


def _outcome(success=True):
    from sidecar.outcome import Outcome

    return Outcome(
        success=success, message="snapshot abc saved" if success else "boom", duration=1.5
    )


def _report(api, **kw):
    from datetime import UTC, datetime

    from sidecar.report import report

    now = datetime.now(UTC)
    return report(api, NS, "www", kw.pop("outcome", _outcome()), started=now, now=now,
                  host="www", instance="www-a")  # fmt: skip


def test_report_claims_numbers_with_optimistic_concurrency(emulator, kubeconfig):
    emulator.create(CRD)
    emulator.create(backup_object("/data", "/repo"))
    emulator.create(
        {
            "apiVersion": "v1",
            "kind": "Event",
            "metadata": {"name": "www-1", "namespace": NS},
            "involvedObject": {"kind": "Backup", "name": "www", "namespace": NS},
            "reason": "Success",
            "message": "left over from a deleted Backup of the same name",
        }
    )
    api = _api(kubeconfig)
    emulator.clear_requests()
    assert _report(api) == "www-2"  # www-1 is taken: the next number
    assert _report(api, outcome=_outcome(False)) == "www-3"
    st = emulator.get(API_VERSION, "backups", "www", NS)["status"]
    assert st["backupCount"] == 3
    assert st["lastSuccessfulBackupTime"] <= st["lastBackupTime"]
    patches = [r for r in emulator.writes() if r.subresource == "status"]
    assert patches and all(r.body["metadata"]["resourceVersion"] for r in patches)
    assert all(r.user_agent.startswith("restik/") for r in emulator.requests)
    ev = emulator.get("v1", "events", "www-3", NS)
    assert (ev["reason"], ev["type"], ev["message"]) == ("Failed", "Warning", "boom")


def test_concurrent_reports_never_repeat_a_number_under_faults(kubeconfig, tmp_path):
    import threading

    from tests.emulator import Emulator

    with Emulator(fail_rate=0.2, seed=7) as emu:
        emu.create(CRD)
        emu.create(backup_object("/data", "/repo"))
        api = _api(emu.write_kubeconfig(tmp_path / "kc-faults"))
        got, errors = [], []

        def worker():
            for _ in range(5):
                try:
                    got.append(_report(api))
                except Exception as exc:  # pragma: no cover - shown on failure
                    errors.append(exc)

        threads = [threading.Thread(target=worker) for _ in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(120)
        assert not errors
        assert len(got) == 20 and len(set(got)) == 20
        assert {e["metadata"]["name"] for e in emu.list("v1", "events", NS)} == set(got)
        assert emu.get(API_VERSION, "backups", "www", NS)["status"]["backupCount"] >= 20
        assert any(r.fault for r in emu.requests)  # faults were injected and survived


def test_sidecar_survives_api_faults(tmp_path):
    from tests.emulator import Emulator

    src = write_tree(tmp_path / "src", {"a": b"data\n"})
    repo = copy_template(tmp_path / "repo")
    with Emulator(fail_rate=0.15, seed=3) as emu:
        emu.create(CRD)
        emu.create(backup_object(str(src), str(repo), schedule="@every 1s"))
        kc = emu.write_kubeconfig(tmp_path / "kc")
        env = base_env(POD_NAME="www-f", POD_NAMESPACE=NS, PYTHONPATH=str(ROOT),
                       RESTIC_CACHE_DIR=str(tmp_path / "cache"))  # fmt: skip
        sc = Sidecar(tmp_path, kc, ["--backup", "www"], env, "faulty")
        try:
            wait_for(lambda: len(emu.list("v1", "events", NS)) >= 3, 90, [sc])
        finally:
            assert sc.terminate() == 0
        evs = emu.list("v1", "events", NS)
        assert all(e["reason"] == "Success" for e in evs)
        numbers = sorted(int(e["metadata"]["name"].rsplit("-", 1)[1]) for e in evs)
        assert len(set(numbers)) == len(numbers)
        assert emu.get(API_VERSION, "backups", "www", NS)["status"]["backupCount"] == numbers[-1]
        assert any(r.fault for r in emu.requests)


def test_restic_run_in_the_sidecar_container_finds_the_backups_repository(world):
    """`kubectl exec deploy/www -c restik -- restic snapshots` runs restic with the
    container's environment and no --repo: the template's RESTIC_REPOSITORY_FILE names a
    file that the sidecar keeps holding the Backup's repository, also after the Backup
    moves to another one (no restart). The template's empty RESTIC_REPOSITORY overrides one
    from the Secret (restic refuses it together with the file), and the sidecar's own
    restic, which gets --repo, works with both set."""
    cache = world.tmp / "cache-www-exec"
    repo_file = cache / "repository"
    template_env = {"RESTIC_REPOSITORY_FILE": str(repo_file), "RESTIC_REPOSITORY": ""}
    world.backup(schedule="@every 1s")
    sc = world.sidecar(pod="www-exec", **template_env)
    first = world.wait_events(1)[0]
    assert first["reason"] == "Success", first["message"]
    assert repo_file.read_text() == f"{world.repo}\n"
    assert repo_file.stat().st_mode & 0o777 == 0o600  # a rest: URL may hold a password

    exec_env = base_env(RESTIC_CACHE_DIR=str(cache), **template_env)

    def snapshots_in_the_container() -> set[str]:
        proc = subprocess.run(
            [RESTIC, "snapshots", "--json"],
            env=exec_env,
            capture_output=True,
            text=True,
            stdin=subprocess.DEVNULL,
            timeout=60,
        )
        assert proc.returncode == 0, proc.stderr
        return {s["short_id"] for s in json.loads(proc.stdout)}

    assert first["message"].split()[1] in snapshots_in_the_container()

    other = copy_template(world.tmp / "other-repo")
    world.patch_spec(destination={"repository": str(other)})
    wait_for(lambda: repo_file.read_text() == f"{other}\n", 30, [sc])
    count = len(world.events())
    event = world.wait_events(count + 2)[count + 1]  # one run surely after the move
    assert event["reason"] == "Success", event["message"]
    assert sc.terminate() == 0  # no more runs while the two listings are compared
    listed = snapshots_in_the_container()
    assert listed == {
        s["short_id"] for s in json.loads(restic(str(other), "snapshots", "--json").stdout)
    }
    assert event["message"].split()[1] in listed
    assert first["message"].split()[1] not in listed
