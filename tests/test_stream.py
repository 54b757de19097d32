"""Dumps streamed through pods/exec into real restic and back (sidecar/stream.py), with a
real PostgreSQL (Debian's package) in "the database's container": the emulator runs the
exec'd command locally, as the cluster's user and with its connection settings."""

from __future__ import annotations

import json
import os
import subprocess
import time

import pytest

from sidecar.stream import dump_into_restic, forget_snapshot, restore_from_restic
from tests.emulator import Emulator
from tests.execpods import exec_client, running_pod
from tests.postgres import Postgres, Writer, bindir, free_port

pytestmark = [pytest.mark.slow, pytest.mark.restic]

PASSWORD = "correct horse battery staple"


@pytest.fixture
def repo(tmp_path):
    """A fresh local restic repository: (restic and its global options, environment)."""
    env = {**os.environ, "RESTIC_PASSWORD": PASSWORD, "TMPDIR": str(tmp_path)}
    args = ["restic", f"--repo={tmp_path / 'repo'}", f"--cache-dir={tmp_path / 'cache'}"]
    subprocess.run([*args, "init"], env=env, check=True, capture_output=True, timeout=60)
    return args, env


def snapshots(repo) -> list[dict]:
    args, env = repo
    done = subprocess.run(
        [*args, "--no-lock", "snapshots", "--json"],
        env=env,
        check=True,
        capture_output=True,
        text=True,
        timeout=60,
    )
    return json.loads(done.stdout or "[]")


def locks(repo) -> str:
    args, env = repo
    return subprocess.run(
        [*args, "--no-lock", "list", "locks"],
        env=env,
        check=True,
        capture_output=True,
        text=True,
        timeout=60,
    ).stdout


@pytest.fixture
def emu():
    with Emulator() as emulator:
        running_pod(emulator, "db", "pg-0", "postgres", "restik")
        running_pod(emulator, "db", "pg-restored-0", "postgres", "restik")
        yield emulator


@pytest.fixture
def client(emu, tmp_path):
    return exec_client(emu, tmp_path)


@pytest.fixture
def postgres():
    """Start throwaway PostgreSQL clusters on 127.0.0.1; all stopped after the test."""
    found = bindir()
    if found is None:
        pytest.fail("PostgreSQL is not installed (Debian: apt-get install postgresql)")
    started: list[Postgres] = []

    def start() -> Postgres:
        started.append(Postgres(found))
        return started[-1].start()

    try:
        yield start
    finally:
        for cluster in started:
            cluster.stop()


def as_container(emu, pod: str, cluster: Postgres) -> None:
    """pod/postgres is "the database's container": its user, its connection settings."""
    emu.exec_env[("db", pod, "postgres")] = {
        "env": cluster.env,
        "cwd": str(cluster.dir),
        "user": cluster.user,
        "group": cluster.user,
    }


def test_a_dump_taken_while_rows_are_written_restores_every_committed_row(
    emu, client, repo, postgres
):
    source, target = postgres(), postgres()
    as_container(emu, "pg-0", source)
    as_container(emu, "pg-restored-0", target)
    source.psql("CREATE DATABASE shop")
    source.psql(
        "CREATE TABLE orders (id bigint PRIMARY KEY, note text);"
        "CREATE TABLE lines (order_id bigint REFERENCES orders, n int, PRIMARY KEY (order_id, n));"
        "INSERT INTO orders SELECT g, repeat(md5(g::text), 4) FROM generate_series(1, 30000) g;"
        "INSERT INTO lines SELECT g, n FROM generate_series(1, 30000) g, generate_series(1, 3) n;",
        "shop",
    )
    args, env = repo
    with Writer(source) as writer:
        deadline = time.monotonic() + 30
        while len(writer.committed) < 5 and time.monotonic() < deadline:
            time.sleep(0.01)
        before = list(writer.committed)  # committed before the dump started
        dumped = dump_into_restic(
            client,
            "db",
            "pg-0",
            "postgres",
            ["pg_dumpall"],
            args,
            "pg_dumpall.sql",
            backup_options=["--host=pg-0"],
            env=env,
            timeout=120,
        )
        during = len(writer.committed) - len(before)
    assert writer.error is None, writer.error
    assert dumped.ok, dumped.reason
    assert dumped.command is not None and dumped.command.ok and dumped.restic_code == 0
    [snapshot] = snapshots(repo)
    assert snapshot["paths"] == ["/pg_dumpall.sql"] and snapshot["hostname"] == "pg-0"
    assert dumped.summary is not None and snapshot["short_id"] == dumped.summary.snapshot_id
    assert len(before) >= 5 and during > 0, "rows must be written while the dump runs"

    restored = restore_from_restic(
        client,
        "db",
        "pg-restored-0",
        "postgres",
        ["psql", "-X", "-q", "-d", "postgres"],
        args,
        dumped.summary.snapshot_id,
        "pg_dumpall.sql",
        env=env,
        timeout=120,
    )
    assert restored.ok, restored.reason
    ids = [int(i) for i in target.psql("SELECT id FROM orders ORDER BY id", "shop").split()]
    live = [i for i in ids if i > 1_000_000]
    assert ids[: len(ids) - len(live)] == list(range(1, 30001))
    # every row committed before the dump is there; the rest is a prefix of the commits
    # (one snapshot of the database: what committed before it, nothing after)
    assert set(before) <= set(live) and live == writer.committed[: len(live)]
    counts = target.psql("SELECT count(*), count(DISTINCT order_id) FROM lines", "shop")
    assert counts == f"{3 * len(ids)}|{len(ids)}"  # no order without its lines


@pytest.mark.parametrize(
    ("command", "reason"),
    [
        (["false"], "the dump command failed: exited with code 1"),
        (
            ["pg_dumpal"],
            "the dump command failed: Internal error occurred: error executing "
            "command in container: failed to exec in container: failed to start exec: OCI "
            "runtime exec failed: exec failed: unable to start container process: exec: "
            '"pg_dumpal": executable file not found in $PATH: unknown',
        ),
        (
            ["sh", "-c", "head -c 3000000 /dev/urandom; kill -9 $$"],
            "the dump command failed: exited with code 137",
        ),
        (
            [
                "sh",
                "-c",
                "head -c 2000000 /dev/urandom; echo 'pg_dump: error: query failed' >&2; exit 1",
            ],
            "the dump command failed: exited with code 1: pg_dump: error: query failed",
        ),
    ],
)
def test_a_failing_dump_fails_and_leaves_no_snapshot(client, repo, command, reason):
    args, env = repo
    result = dump_into_restic(
        client, "db", "pg-0", "postgres", command, args, "dump.sql", env=env, timeout=60
    )
    assert not result.ok and result.reason == reason
    assert result.summary is None and result.forgotten is None  # restic never finished one
    assert snapshots(repo) == [] and locks(repo) == ""


def test_a_dump_that_cannot_reach_its_database_fails_with_the_reason(emu, client, repo):
    pg = bindir()
    assert pg is not None, "PostgreSQL is not installed (Debian: apt-get install postgresql)"
    settings = {"PATH": f"{pg}:/usr/bin:/bin", "PGHOST": "127.0.0.1", "PGPORT": str(free_port())}
    emu.exec_env[("db", "pg-0", "postgres")] = {"env": settings}
    args, env = repo
    result = dump_into_restic(
        client,
        "db",
        "pg-0",
        "postgres",
        ["pg_dumpall"],
        args,
        "pg_dumpall.sql",
        env=env,
        timeout=60,
    )
    assert not result.ok
    assert result.reason.startswith("the dump command failed: exited with code 1: pg_dumpall: ")
    assert "Connection refused" in result.reason
    assert snapshots(repo) == []


def test_a_hanging_dump_times_out_and_leaves_no_snapshot(client, repo):
    args, env = repo
    started = time.monotonic()
    result = dump_into_restic(
        client,
        "db",
        "pg-0",
        "postgres",
        ["sh", "-c", "head -c 100000 /dev/urandom; sleep 60"],
        args,
        "dump.sql",
        env=env,
        timeout=1.5,
    )
    assert time.monotonic() - started < 30
    assert not result.ok and result.reason == "the dump command failed: timed out after 1.5s"
    assert snapshots(repo) == [] and locks(repo) == ""


def test_a_restic_that_does_not_finish_in_time_fails_the_run(client, tmp_path):
    # a stand-in for restic stuck on its backend: it reads the whole dump, then hangs
    stuck = ["sh", "-c", "cat >/dev/null; exec sleep 60"]
    started = time.monotonic()
    result = dump_into_restic(client, "db", "pg-0", "postgres", ["echo", "SELECT 1;"], stuck,
                              "dump.sql", timeout=1)  # fmt: skip
    assert time.monotonic() - started < 10
    assert result.command is not None and result.command.ok
    assert (
        not result.ok
        and result.reason == "restic backup did not finish within the run's timeout of 1s"
    )


def test_a_failing_restic_fails_the_run_and_stops_the_dump(client, repo):
    args, env = repo
    started = time.monotonic()
    result = dump_into_restic(
        client,
        "db",
        "pg-0",
        "postgres",
        ["yes"],
        args,
        "dump.sql",
        env={**env, "RESTIC_PASSWORD": "not-the-password"},
        timeout=60,
    )
    assert time.monotonic() - started < 30  # restic died: the endless dump was cut off
    assert not result.ok and result.reason.startswith("restic backup failed: ")
    assert "wrong password" in result.reason
    assert result.command is not None and result.command.error.startswith(
        "could not pass the output on: "
    )
    assert snapshots(repo) == []


def test_restore_of_a_missing_snapshot_fails_without_feeding_the_command(client, repo, tmp_path):
    args, env = repo
    out = tmp_path / "restored.sql"
    result = restore_from_restic(
        client,
        "db",
        "pg-0",
        "postgres",
        ["sh", "-c", f"cat > {out}"],
        args,
        "deadbeef",
        "pg_dumpall.sql",
        env=env,
        timeout=60,
    )
    assert not result.ok and result.reason.startswith("restic dump failed: ")
    assert "deadbeef" in result.reason
    assert not out.exists() or out.read_bytes() == b""


def test_a_failing_restore_command_fails_the_restore(client, repo):
    args, env = repo
    dumped = dump_into_restic(
        client,
        "db",
        "pg-0",
        "postgres",
        ["echo", "SELECT 1;"],
        args,
        "dump.sql",
        env=env,
        timeout=60,
    )
    assert dumped.ok and dumped.summary is not None
    script = "cat >/dev/null; echo 'psql: error: connection refused' >&2; exit 2"
    result = restore_from_restic(
        client,
        "db",
        "pg-0",
        "postgres",
        ["sh", "-c", script],
        args,
        dumped.summary.snapshot_id,
        "dump.sql",
        env=env,
        timeout=60,
    )
    assert not result.ok
    assert result.reason == (
        "the restore command failed: exited with code 2: psql: error: connection refused"
    )
    roundtrip = restore_from_restic(
        client,
        "db",
        "pg-0",
        "postgres",
        ["cat"],
        args,
        dumped.summary.snapshot_id,
        "dump.sql",
        env=env,
    )
    assert roundtrip.ok and roundtrip.command is not None
    assert roundtrip.command.stdout == b"SELECT 1;\n"


def test_a_restore_command_that_exits_before_reading_is_the_reason_not_restic(client, repo):
    """psql to a database that does not exist exits before it reads its input; restic,
    stopped then, must not be reported as the failure ("context canceled")."""
    args, env = repo
    dumped = dump_into_restic(
        client, "db", "pg-0", "postgres", ["echo", "SELECT 1;"], args, "dump.sql",
        env=env, timeout=60,
    )  # fmt: skip
    assert dumped.ok and dumped.summary is not None
    script = "echo 'psql: error: database \"x\" does not exist' >&2; exit 2"
    for _ in range(3):  # restic is stopped at a different point each time
        result = restore_from_restic(
            client, "db", "pg-0", "postgres", ["sh", "-c", script], args,
            dumped.summary.snapshot_id, "dump.sql", env=env, timeout=60,
        )  # fmt: skip
        assert result.reason == (
            'the restore command failed: exited with code 2: psql: error: database "x" '
            "does not exist"
        )
    # more than the pipes hold: restic is still writing when `true` has ended
    big = dump_into_restic(
        client, "db", "pg-0", "postgres", ["head", "-c", "4000000", "/dev/urandom"], args,
        "big.bin", env=env, timeout=60,
    )  # fmt: skip
    assert big.ok and big.summary is not None
    result = restore_from_restic(
        client, "db", "pg-0", "postgres", ["true"], args, big.summary.snapshot_id,
        "big.bin", env=env, timeout=60,
    )  # fmt: skip
    assert result.reason == "the restore command ended (exit code 0) before it read the whole dump"


def test_forget_snapshot_takes_a_snapshot_back(client, repo):
    args, env = repo
    dumped = dump_into_restic(
        client, "db", "pg-0", "postgres", ["echo", "partial"], args, "dump.sql", env=env, timeout=60
    )
    assert dumped.ok and dumped.summary is not None and len(snapshots(repo)) == 1
    assert forget_snapshot(args, dumped.summary.snapshot_id, env) == ""
    assert snapshots(repo) == []
    assert "no matching ID found" in forget_snapshot(args, "deadbeef", env)
