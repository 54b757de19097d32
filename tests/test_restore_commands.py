"""`restik snapshots` (the user's kubeconfig, the Backup's Secret, real restic) and
`restik backup-now` (a trigger annotation the sidecar serves at once, --wait to its Event)."""

from __future__ import annotations

import base64
import io
import json

import pytest

from reconciler.cli import build_parser
from reconciler.restores import backup_now, snapshots
from sidecar.follow import pending_trigger, trigger_status
from tests.factories import PASSWORD, RESTIC, WATCH_NS, backup_object, needs_restic, restic


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


def test_a_trigger_is_pending_until_a_run_recorded_it():
    raw = {"metadata": {"annotations": {"backup.appscode.com/backup-now": "t1"}}}
    assert pending_trigger(raw, None) == "t1"
    assert pending_trigger(raw, "t1") is None  # taken up already by this sidecar
    assert pending_trigger({**raw, "status": {"lastTrigger": "t1"}}, None) is None
    assert pending_trigger({"metadata": {}}, None) is None
    assert trigger_status("t1", "www-12") == {"status": {"lastTrigger": "t1", "lastTriggerRun": 12}}
    assert backup_now.served_run({"lastTrigger": "t1", "lastTriggerRun": 12}, "t1") == 12
    assert backup_now.served_run({"lastTrigger": "t0", "lastTriggerRun": 11}, "t1") is None


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
