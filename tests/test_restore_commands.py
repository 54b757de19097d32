"""`restik snapshots` (the user's kubeconfig, the Backup's Secret, real restic) and
`restik backup-now` (a trigger annotation the sidecar serves at once, --wait to its Event)."""

from __future__ import annotations

import base64
import io
import json
import re
from datetime import UTC, datetime

import pytest

from reconciler.cli import build_parser
from reconciler.restores import backup_now, snapshots
from sidecar.follow import pending_trigger
from sidecar.report import served_trigger_patch
from tests.factories import (
    PASSWORD,
    RESTIC,
    WATCH_NS,
    backup_object,
    needs_restic,
    restic,
    statefulset_pod,
)


def cli(argv: list[str], module) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    code = module.run(build_parser().parse_args(argv), out=out, err=err)
    return code, out.getvalue(), err.getvalue()


def secret(name="www-restic", namespace=WATCH_NS, **data) -> dict:
    encoded = {k: base64.b64encode(v.encode()).decode() for k, v in data.items()}
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": name, "namespace": namespace},
        "data": encoded,
    }


# ---------------------------------------------------------------- pure


def test_a_trigger_is_pending_until_a_run_of_this_host_recorded_it():
    raw = {"metadata": {"annotations": {"backup.appscode.com/backup-now": "t1"}}}
    assert pending_trigger(raw, None, "db-0") == "t1"
    assert pending_trigger(raw, "t1", "db-0") is None  # taken up already by this sidecar
    served = {"triggers": {"db-0": {"trigger": "t1", "run": 4, "result": "Success"}}}
    assert pending_trigger({**raw, "status": served}, None, "db-0") is None  # e.g. restarted
    # another pod of the StatefulSet served it: this one still runs (status.lastTrigger, the
    # last request any host served, no longer stops it)
    assert pending_trigger({**raw, "status": {**served, "lastTrigger": "t1"}}, None, "db-1") == "t1"
    old = {"triggers": {"db-0": {"trigger": "t0", "run": 2, "result": "Success"}}}
    assert pending_trigger({**raw, "status": old}, None, "db-0") == "t1"
    assert pending_trigger({"metadata": {}}, None, "db-0") is None


def test_each_host_records_the_request_it_served_dropping_older_requests():
    now = datetime(2026, 11, 30, 1, 0, tzinfo=UTC)
    status = {
        "triggers": {
            "db-0": {"trigger": "t1", "run": 7, "result": "Success"},
            "db-1": {"trigger": "t0", "run": 5, "result": "Failed"},
            "db-9": {"trigger": "t0", "run": 2, "result": "Success"},  # scaled down
        }
    }
    patch = served_trigger_patch(status, "db-1", "t1", 8, False, now, "42")
    assert patch == {
        "metadata": {"resourceVersion": "42"},
        "status": {
            "lastTrigger": "t1",
            "lastTriggerRun": 8,
            "triggers": {
                "db-9": None,  # a merge patch's null removes the older request's entry
                "db-1": {"trigger": "t1", "run": 8, "result": "Failed",
                         "time": "2026-11-30T01:00:00Z"},
            },
        },
    }  # fmt: skip
    db1 = patch["status"]["triggers"]["db-1"]
    after = {"triggers": {"db-0": status["triggers"]["db-0"], "db-1": db1}}
    assert backup_now.served_by(after, "t1") == after["triggers"]
    assert backup_now.served_by(after, "t0") == {}


def test_the_hosts_a_request_waits_for_are_named_as_the_sidecars_name_them():
    def wl(kind, name, replicas=None, **spec):
        obj = {"kind": kind, "metadata": {"name": name}, "spec": dict(spec)}
        if replicas is not None:
            obj["spec"]["replicas"] = replicas
        return obj

    owned = wl("ReplicaSet", "www-5d9c", 2)
    owned["metadata"]["ownerReferences"] = [{"kind": "Deployment", "name": "www",
                                             "controller": True}]  # fmt: skip
    pod = {"metadata": {"ownerReferences": [{"kind": "DaemonSet", "name": "logs"}]},
           "spec": {"nodeName": "node-a"}}  # fmt: skip
    other = {"metadata": {"ownerReferences": [{"kind": "DaemonSet", "name": "x"}]},
             "spec": {"nodeName": "node-z"}}  # fmt: skip
    workloads = [
        wl("StatefulSet", "db", 3),
        wl("StatefulSet", "kv", 2, ordinals={"start": 5}),
        wl("Deployment", "www", 4),  # one replica (the Lease holder) backs up as "www"
        owned,
        wl("DaemonSet", "logs"),
        wl("DaemonSet", "idle"),
        wl("Deployment", "off", 0),
    ]
    hosts, notes = backup_now.workload_hosts(workloads, [pod, {**pod}, other])
    assert hosts == ["db-0", "db-1", "db-2", "kv-5", "kv-6", "node-a", "www"]
    assert notes == ["DaemonSet/idle has no scheduled pods", "Deployment/off has 0 replicas"]


def test_the_snapshots_table():
    from sidecar.restore import parse_snapshots

    snaps = parse_snapshots(
        json.dumps(
            [
                {"id": "a" * 64, "time": "2026-01-01T10:00:00Z", "hostname": "db-0",
                 "tags": ["prod", "daily"], "summary": {"total_bytes_processed": 2048}},
                {"id": "b" * 64, "time": "2026-01-02T10:00:00Z", "hostname": "db-1"},
            ]
        )
    )  # fmt: skip
    assert snapshots.render_table(snaps) == (
        "ID         TIME                   HOST   TAGS         SIZE\n"
        "aaaaaaaa   2026-01-01T10:00:00Z   db-0   prod,daily   2.0 KiB\n"
        "bbbbbbbb   2026-01-02T10:00:00Z   db-1   -            -\n"
    )


# ---------------------------------------------------------------- restik snapshots


@pytest.fixture
def repo_site(emulator, kubeconfig, tmp_path):
    from reconciler.resources import crd_manifest

    emulator.create(crd_manifest())
    src = tmp_path / "data"
    src.mkdir()
    (src / "a.txt").write_text("a")
    from tests.factories import copy_template

    repo = copy_template(tmp_path / "repo")
    for host, tag in (("db-0", "prod"), ("db-1", "prod"), ("db-0", "manual")):
        restic(str(repo), "backup", "--host", host, "--tag", tag, str(src))
    restic(str(repo), "backup", "--host", "db-0", str(tmp_path))  # another path: not listed
    emulator.create(backup_object(str(src), str(repo)))
    return emulator, str(kubeconfig)


@needs_restic
@pytest.mark.slow
def test_snapshots_lists_the_backups_path_with_the_secrets_password(repo_site):
    emulator, kubeconfig = repo_site
    emulator.create(secret(password=PASSWORD, AWS_ACCESS_KEY_ID="unused"))
    args = ["snapshots", "www", "-n", WATCH_NS, "--kubeconfig", kubeconfig, "--restic", RESTIC]
    code, out, err = cli(args, snapshots)
    assert (code, err) == (0, "")
    lines = out.splitlines()
    assert lines[0].split() == ["ID", "TIME", "HOST", "TAGS", "SIZE"]
    assert [line.split()[2:4] for line in lines[1:]] == [
        ["db-0", "prod"],
        ["db-1", "prod"],
        ["db-0", "manual"],
    ]
    code, out, _ = cli([*args, "--host", "db-1", "--json"], snapshots)
    items = json.loads(out)
    assert code == 0 and [(i["host"], i["tags"]) for i in items] == [("db-1", ["prod"])]
    assert len(items[0]["id"]) == 64 and items[0]["size"] > 0
    code, _, err = cli([*args, "--host", "nobody"], snapshots)
    assert (
        code == 0
        and err
        == "No snapshots of host nobody of "
        + str(
            emulator.get("backup.appscode.com/v1beta1", "backups", "www", WATCH_NS)["spec"][
                "backupSource"
            ]["path"]
        )
        + " in the repository.\n"
    )


@needs_restic
@pytest.mark.slow
def test_snapshots_errors_name_the_cause_never_the_password(repo_site):
    emulator, kubeconfig = repo_site
    args = ["snapshots", "www", "-n", WATCH_NS, "--kubeconfig", kubeconfig, "--restic", RESTIC]
    assert cli(args, snapshots)[0:3:2] == (
        2,
        "restik snapshots: Secret default/www-restic not found "
        "(spec.destination.repositorySecretName)\n",
    )
    emulator.create(secret(password="wrong-" + PASSWORD))
    code, out, err = cli(args, snapshots)
    assert code == 2 and out == ""
    assert "wrong password" in err and PASSWORD not in err
    code, _, err = cli(["snapshots", "nope", "-n", WATCH_NS, "--kubeconfig", kubeconfig], snapshots)
    assert (code, err) == (2, "restik snapshots: Backup default/nope not found\n")


def test_snapshots_of_a_repository_on_a_volume_says_where_to_look(emulator, kubeconfig):
    from reconciler.resources import crd_manifest
    from tests.factories import backup

    emulator.create(crd_manifest())
    emulator.create({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "web"}})
    emulator.create(backup())  # destination.volume + path
    code, _, err = cli(
        ["snapshots", "www", "-n", "web", "--kubeconfig", str(kubeconfig)], snapshots
    )
    assert code == 2
    assert "keeps its repository on a volume (spec.destination.volume)" in err


# ---------------------------------------------------------------- restik backup-now


@needs_restic
@pytest.mark.slow
def test_backup_now_runs_at_once_and_waits_for_the_event(world):
    world.backup(schedule="@every 1h")
    sc = world.sidecar("--workload", "Deployment/www")
    kubeconfig = str(world.tmp / "kubeconfig")
    args = ["backup-now", "www", "-n", WATCH_NS, "--kubeconfig", kubeconfig, "--wait"]
    args += ["--timeout", "60s"]
    code, out, err = cli(args, backup_now)
    assert (code, err) == (0, ""), sc.log[-3000:]
    assert out.splitlines()[-1].startswith("www-1: Success: snapshot ")
    status = world.status()
    assert status["lastTriggerRun"] == 1 and status["lastTrigger"]
    code, out, _ = cli(args, backup_now)  # a second request: a second run
    assert code == 0 and out.splitlines()[-1].startswith("www-2: Success")
    assert "backup requested" in sc.log


@needs_restic
@pytest.mark.slow
def test_backup_now_exits_1_when_the_run_fails(world):
    world.backup(schedule="@every 1h")
    world.sidecar("--workload", "Deployment/www", password="wrong")
    kubeconfig = str(world.tmp / "kubeconfig")
    args = ["backup-now", "www", "-n", WATCH_NS, "--kubeconfig", kubeconfig, "--wait"]
    code, out, _ = cli([*args, "--timeout", "60s"], backup_now)
    assert code == 1 and out.splitlines()[-1].startswith("www-1: Failed: ")


def test_backup_now_without_wait_only_sets_the_annotation(emulator, kubeconfig):
    from reconciler.resources import crd_manifest

    emulator.create(crd_manifest())
    emulator.create(backup_object("/data", "/repo"))
    code, out, _ = cli(["backup-now", "www", "--kubeconfig", str(kubeconfig)], backup_now)
    assert code == 0 and "backup requested" in out
    meta = emulator.get("backup.appscode.com/v1beta1", "backups", "www", WATCH_NS)["metadata"]
    assert meta["annotations"]["backup.appscode.com/backup-now"] in out
    code, _, err = cli(["backup-now", "nope", "--kubeconfig", str(kubeconfig)], backup_now)
    assert code == 2 and "not found" in err


# ---------------------------------------------------------------- restik restore


def test_restore_prints_the_manifest_to_commit():
    from reconciler.restores import restore_cmd

    argv = ["restore", "www", "-n", "web", "--to", "sts/db", "--as-of", "2026-01-31T00:00:00Z"]
    argv += [
        "--include",
        "uploads",
        "--host",
        "db-3=db-0",
        "--name",
        "r1",
        "--kubeconfig",
        "/nonexistent",
    ]
    code, out, err = cli(argv, restore_cmd)
    assert (code, err) == (0, "")
    assert out == (
        "apiVersion: backup.appscode.com/v1beta1\nkind: Restore\nmetadata:\n  name: r1\n"
        "  namespace: web\nspec:\n  backup: www\n  target:\n    workload:\n"
        "      kind: StatefulSet\n      name: db\n  asOf: '2026-01-31T00:00:00Z'\n"
        "  hosts:\n    db-3: db-0\n  include:\n"
        "  - uploads\n"
    )
    code, out, _ = cli(
        [*argv[:6], "--to", "pvc/copy", "-o", "json", "--kubeconfig", "/x"], restore_cmd
    )
    assert code == 0 and json.loads(out)["spec"]["target"] == {"pvc": {"claimName": "copy"}}


def test_restore_command_prints_a_dump_restore():
    """--command is split as a shell would (quotes keep a word together), no shell runs."""
    from reconciler.restores import restore_cmd

    argv = ["restore", "pg", "-n", "data", "--to", "sts/pg", "--name", "r1", "--kubeconfig", "/x"]
    argv += ["--command", 'psql -X -d "my db"', "--container", "postgres"]
    argv += ["--command-timeout", "2h", "-o", "json"]
    code, out, err = cli(argv, restore_cmd)
    assert (code, err) == (0, "")
    assert json.loads(out)["spec"] == {
        "backup": "pg",
        "target": {"workload": {"kind": "StatefulSet", "name": "pg"}},
        "command": {"command": ["psql", "-X", "-d", "my db"], "container": "postgres",
                    "timeout": "2h"},
    }  # fmt: skip


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--to", "Job/x"], "--to: 'Job' is not a workload kind"),
        (["--to", "db"], "--to must be KIND/NAME or pvc/NAME, got 'db'"),
        (
            ["--to", "sts/db", "--snapshot", "9b7d03e1"],
            "spec.snapshot: a StatefulSet has a snapshot per pod",
        ),
        (["--to", "pvc/c", "--include", "/etc"], "spec.include[0]: '/etc' must be relative"),
        (["--to", "pvc/c", "--host", "x"], "--host must be TARGET=SOURCE, got 'x'"),
        (["--to", "pvc/c", "--command", "psql"], "spec.target.pvc: a Restore with spec.command"),
        (["--to", "sts/db", "--command", "psql 'x"], "--command: No closing quotation"),
        (["--to", "sts/db", "--command", ""], "spec.command.command: must not be empty"),
        (["--to", "sts/db", "--container", "pg"], "--container and --command-timeout go with"),
        (["--to", "sts/db", "--command", "psql", "--delete"], "spec.delete: does not apply"),
    ],
)
def test_restore_refuses_bad_input_with_the_field(extra, message):
    from reconciler.restores import restore_cmd

    code, out, err = cli(["restore", "www", "-n", "web", "--kubeconfig", "/x", *extra], restore_cmd)
    assert code == 2 and out == "" and message in err


def test_restore_apply_wait_follows_to_the_end(emulator, kubeconfig):
    import threading
    import time

    from reconciler.resources import restore_crd_manifest
    from reconciler.restores import restore_cmd

    emulator.create(restore_crd_manifest())
    api = "backup.appscode.com/v1beta1"

    def executor():  # stands in for the controller and restore-run
        for _ in range(100):
            raw = emulator.get(api, "restores", "r1", "default")
            if raw:
                break
            time.sleep(0.05)
        raw["status"] = {
            "phase": "Running",
            "hosts": [{"host": "copy", "phase": "Running", "percent": 40.0}],
        }
        raw = emulator.update(raw, "status")
        time.sleep(1.5)
        raw["status"] = {"phase": "Succeeded", "message": "host copy: 3 files"}
        emulator.update(raw, "status")

    worker = threading.Thread(target=executor)
    worker.start()
    argv = ["restore", "www", "--to", "pvc/copy", "--name", "r1", "--apply", "--wait"]
    code, out, err = cli([*argv, "--kubeconfig", str(kubeconfig)], restore_cmd)
    worker.join(10)
    assert code == 0
    assert out == "Restore default/r1 created\nSucceeded: host copy: 3 files\n"
    assert "Running: copy Running 40%" in err


def _statefulset(name: str, replicas: int) -> dict:
    labels = {"app": name}
    return {
        "apiVersion": "apps/v1",
        "kind": "StatefulSet",
        "metadata": {"name": name, "namespace": WATCH_NS,
                     "labels": {"backup.appscode.com/config": "www"}},
        "spec": {
            "replicas": replicas,
            "serviceName": name,
            "selector": {"matchLabels": labels},
            "template": {"metadata": {"labels": labels},
                         "spec": {"containers": [{"name": "app", "image": "x"}]}},
        },
    }  # fmt: skip


@needs_restic
@pytest.mark.slow
def test_backup_now_wait_waits_for_every_pod_of_a_statefulset(world):
    world.backup(schedule="@every 1h")
    world.emu.create(_statefulset("db", 3))
    for name in ("db-0", "db-1", "db-2"):
        world.emu.create(statefulset_pod(name))
    kubeconfig = str(world.tmp / "kubeconfig")
    args = ["backup-now", "www", "-n", WATCH_NS, "--kubeconfig", kubeconfig, "--wait"]
    # two of three sidecars: the request is not served until the third pod's is
    sidecars = [world.sidecar("--lock-wait", "60s", pod=name) for name in ("db-0", "db-1")]
    code, out, err = cli([*args, "--timeout", "20s"], backup_now)
    assert code == 2, out + err
    assert "waiting for 3 host(s): db-0, db-1, db-2" in out
    assert "no run from host(s) db-2 of Backup default/www answered" in err
    served = world.status()["triggers"]
    assert sorted(served) == ["db-0", "db-1"], served  # both ran, each recorded its own
    sidecars.append(world.sidecar("--lock-wait", "60s", pod="db-2"))
    code, out, err = cli([*args, "--timeout", "90s"], backup_now)
    assert (code, err) == (0, ""), out + "".join(sc.log[-2000:] for sc in sidecars)
    lines = out.splitlines()[-3:]
    assert [line.rsplit(" ", 1)[-1] for line in lines] == ["db-0)", "db-1)", "db-2)"]
    assert all(re.match(r"www-\d+: Success: snapshot ", line) for line in lines), lines
    triggers = world.status()["triggers"]
    assert sorted(triggers) == ["db-0", "db-1", "db-2"]
    assert len({t["trigger"] for t in triggers.values()}) == 1  # the older request's gone
    for sc in sidecars:
        assert sc.terminate() == 0


@needs_restic
@pytest.mark.slow
def test_backup_now_wait_exits_1_naming_the_pods_whose_run_failed(world):
    world.backup(schedule="@every 1h")
    world.emu.create(_statefulset("db", 2))
    for name in ("db-0", "db-1"):
        world.emu.create(statefulset_pod(name))
    world.sidecar("--lock-wait", "60s", pod="db-0")
    world.sidecar("--lock-wait", "60s", pod="db-1", password="not-the-password")
    kubeconfig = str(world.tmp / "kubeconfig")
    args = ["backup-now", "www", "-n", WATCH_NS, "--kubeconfig", kubeconfig, "--wait"]
    code, out, err = cli([*args, "--timeout", "90s"], backup_now)
    assert code == 1, out + err
    assert err.strip() == "restik backup-now: the run failed on host(s) db-1"
    lines = out.splitlines()[-2:]
    assert re.match(r"www-\d+: Success: snapshot .* \(host db-0\)$", lines[0]), lines
    assert re.match(
        r"www-\d+: Failed: .*wrong password or no key found \(host db-1\)$", lines[1]
    ), lines
    assert PASSWORD not in out + err
