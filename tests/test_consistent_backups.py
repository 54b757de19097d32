"""Application-consistent backups end to end: hooks and a dump command (spec.hooks,
spec.backupSource.command) run by the sidecar's Job through pods/exec against the emulator,
with a real PostgreSQL in "the database's container" and real restic. The emulator runs
an exec'd command as a local process, as the kubelet would in the container."""

from __future__ import annotations

import json
import subprocess
import time

import pytest

from reconciler.api.backup import parse_backup
from sidecar.job import Job, Pod
from sidecar.restic import Context
from sidecar.runner import Runner
from sidecar.stream import restore_from_restic
from tests.execpods import exec_client, running_pod
from tests.factories import PASSWORD, RESTIC, WATCH_NS, backup_object, base_env, needs_restic
from tests.postgres import Postgres, Writer, bindir, started

pytestmark = [pytest.mark.slow, pytest.mark.restic, needs_restic]

DUMP = {"command": ["pg_dumpall"], "filename": "pg_dumpall.sql"}


@pytest.fixture
def postgres():
    yield from started()


@pytest.fixture
def pg_pod(emulator):
    """Pod default/pg-0 of StatefulSet pg: the database's container and restik's."""
    running_pod(emulator, WATCH_NS, "pg-0", "postgres", "restik")
    return emulator.get("v1", "pods", "pg-0", WATCH_NS)


def dump_backup(repo, *, command=DUMP, hooks=None, schedule="@every 2s") -> dict:
    raw = backup_object("/unused", str(repo), schedule=schedule)
    raw["spec"]["backupSource"] = {"command": dict(command)}
    if hooks:
        raw["spec"]["hooks"] = hooks
    return raw


def snapshots(repo) -> list[dict]:
    done = subprocess.run(
        [RESTIC, f"--repo={repo}", "--no-cache", "--no-lock", "snapshots", "--json"],
        env=base_env(), capture_output=True, text=True, check=True, timeout=60,
    )  # fmt: skip
    return json.loads(done.stdout or "[]")


def restic_args(repo, tmp_path) -> list[str]:
    return [RESTIC, f"--repo={repo}", f"--cache-dir={tmp_path / 'restore-cache'}"]


def as_container(emu, pod: str, cluster: Postgres) -> None:
    """pod/postgres is "the database's container": its user, its connection settings."""
    emu.exec_env[(WATCH_NS, pod, "postgres")] = {
        "env": cluster.env, "cwd": str(cluster.dir), "user": cluster.user, "group": cluster.user,
    }  # fmt: skip


def touch(path) -> dict:
    return {"command": ["touch", str(path)]}


# ---------------------------------------------------------------- through the sidecar


def test_the_sidecar_dumps_a_live_database_and_every_committed_row_comes_back(
    world, pg_pod, postgres, tmp_path
):
    emu = world.emu
    as_container(emu, "pg-0", postgres)
    postgres.psql("CREATE DATABASE shop")
    postgres.psql(
        "CREATE TABLE orders (id bigint PRIMARY KEY, note text);"
        "CREATE TABLE lines (order_id bigint REFERENCES orders, n int, PRIMARY KEY (order_id, n));"
        "INSERT INTO orders SELECT g, md5(g::text) FROM generate_series(1, 20000) g;"
        "INSERT INTO lines SELECT g, n FROM generate_series(1, 20000) g, generate_series(1, 3) n;",
        "shop",
    )
    hooks = {
        "preBackup": {"command": ["psql", "-Xc", "CHECKPOINT"]},
        "postBackup": touch(postgres.dir / "post-ran"),
    }  # as the container's user
    emu.create(dump_backup(world.repo, hooks=hooks))
    with Writer(postgres) as writer:
        deadline = time.monotonic() + 30
        while len(writer.committed) < 5 and time.monotonic() < deadline:
            time.sleep(0.01)
        before = list(writer.committed)
        sc = world.sidecar("--workload", "StatefulSet/pg", pod="pg-0")
        [event] = world.wait_events(1, timeout=120)
    assert writer.error is None, writer.error
    assert event["reason"] == "Success", event["message"]
    assert event["message"].startswith("snapshot ")
    assert (postgres.dir / "post-ran").exists()
    [snapshot] = [s for s in snapshots(world.repo) if s["paths"] == ["/pg_dumpall.sql"]]
    assert snapshot["hostname"] == "pg-0"
    assert world.status()["lastSnapshotID"] == snapshot["short_id"]
    assert sc.terminate() == 0
    assert PASSWORD not in sc.log

    target = Postgres(bindir()).start()
    try:
        running_pod(emu, WATCH_NS, "pg-restored-0", "postgres")
        as_container(emu, "pg-restored-0", target)
        restored = restore_from_restic(
            exec_client(emu, tmp_path), WATCH_NS, "pg-restored-0", "postgres",
            ["psql", "-X", "-q", "-d", "postgres"], restic_args(world.repo, tmp_path),
            snapshot["short_id"], "pg_dumpall.sql", env=base_env(), timeout=120,
        )  # fmt: skip
        assert restored.ok, restored.reason
        ids = [int(i) for i in target.psql("SELECT id FROM orders ORDER BY id", "shop").split()]
        lines = target.psql("SELECT count(*), count(DISTINCT order_id) FROM lines", "shop")
    finally:
        target.stop()
    live = [i for i in ids if i > 1_000_000]
    assert ids[: len(ids) - len(live)] == list(range(1, 20001))
    # every row committed before the sidecar started is there; what came later is a prefix
    # of the commits (one consistent view of the database), each order with its lines
    assert set(before) <= set(live) and live == writer.committed[: len(live)]
    assert lines == f"{3 * len(ids)}|{len(ids)}"


# ---------------------------------------------------------------- the Job's steps


@pytest.fixture
def run_job(emulator, pg_pod, tmp_path, kubeconfig):
    """Run one Job of a dump Backup in pod default/pg-0 (its commands as local processes)."""
    repo = tmp_path / "repo"
    client = exec_client(emulator, tmp_path)

    def run(**kw):
        backup = parse_backup(dump_backup(repo, **kw))
        runner = Runner(base_env(TMPDIR=str(tmp_path)), stop_timeout=20)
        ctx = Context(host="pg-0", cache_dir=str(tmp_path / "cache"), restic=RESTIC)
        pod = Pod(WATCH_NS, "pg-0", pg_pod["spec"], client)
        return Job(backup, ctx, runner, pod=pod, workload=("StatefulSet", "pg")).run()

    run.repo = repo
    return run


def test_a_failing_dump_is_a_failed_run_without_a_snapshot_and_the_post_hook_runs(
    run_job, tmp_path
):
    dump = {"command": ["sh", "-c", "head -c 100000 /dev/urandom; echo 'dump: disk on fire' >&2;"
                        " exit 3"], "filename": "db.dump"}  # fmt: skip
    out = run_job(command=dump, hooks={"postBackup": touch(tmp_path / "thawed")})
    assert not out.success and out.reason == "CommandFailed"
    assert out.message == "the dump command failed: exited with code 3: dump: disk on fire"
    assert out.initialised  # the repository was created for it, and holds nothing
    assert snapshots(run_job.repo) == []
    assert (tmp_path / "thawed").exists()


def test_a_hanging_pre_hook_times_out_fails_the_run_and_the_post_hook_runs(run_job, tmp_path):
    hooks = {"preBackup": {"command": ["sleep", "60"], "timeout": "1s"},
             "postBackup": touch(tmp_path / "thawed")}  # fmt: skip
    started = time.monotonic()
    out = run_job(hooks=hooks, command={"command": ["echo", "data"], "filename": "x"})
    assert time.monotonic() - started < 20
    assert not out.success and out.reason == "PreBackupHookFailed"
    assert out.message == "preBackup hook failed: timed out after 1s"
    assert (tmp_path / "thawed").exists()
    assert not run_job.repo.exists()  # the backup never started


def test_a_failing_post_hook_fails_the_run_with_its_reason(run_job):
    hooks = {"postBackup": {"command": ["sh", "-c", "echo 'unfreeze: busy' >&2; exit 2"]}}
    out = run_job(hooks=hooks, command={"command": ["echo", "data"], "filename": "x"})
    assert not out.success and out.reason == "PostBackupHookFailed"
    [snapshot] = snapshots(run_job.repo)  # the dump itself was fine, and is kept
    assert out.message == (
        f"postBackup hook failed: exited with code 2: unfreeze: busy "
        f"(snapshot {snapshot['short_id']} saved)"
    )


def test_a_pre_hook_with_on_error_continue_is_a_warning_and_the_backup_runs(run_job):
    hooks = {"preBackup": {"command": ["false"], "onError": "Continue"}}
    out = run_job(hooks=hooks, command={"command": ["echo", "data"], "filename": "x"})
    assert out.success, out.message
    assert out.message.endswith(" (preBackup hook failed: exited with code 1)")
    assert [s["paths"] for s in snapshots(run_job.repo)] == [["/x"]]


def test_a_command_in_a_container_the_pod_lacks_names_the_containers_it_has(run_job):
    out = run_job(command={**DUMP, "container": "mysql"})
    assert not out.success and out.reason == "NoContainer"
    assert out.message == (
        "spec.backupSource.command.container: pod pg-0 has no container 'mysql' "
        "(its containers: postgres)"
    )
    assert not run_job.repo.exists()
