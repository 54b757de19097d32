"""The sidecar's restic layer: pure rendering and classification, then real restic runs."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from sidecar import backend, restic
from sidecar.job import Job
from sidecar.outcome import format_bytes
from sidecar.repository import Lock, is_stale, parse_lock
from sidecar.restic import Context, Failure
from sidecar.runner import Runner, redact, secret_values
from tests.factories import (
    PASSWORD,
    RESTIC,
    base_env,
    copy_template,
    free_port,
    make_backup,
    needs_restic,
    server,
    tree_bytes,
    write_tree,
)

CTX = Context(host="www", cache_dir="/restik/cache")

# --- pure: rendering ---------------------------------------------------------------------


def test_render_backup_local_volume():
    b = make_backup("/var/www", "/unused", tags=["prod", "web"], excludes=["*.tmp", "-x"])
    assert restic.render_backup(b, CTX) == [
        "restic",
        "--repo=/unused",
        "--cache-dir=/restik/cache",
        "backup",
        "--json",
        "--host=www",
        "--tag=prod",
        "--tag=web",
        "--exclude=*.tmp",
        "--exclude=-x",
        "--",
        "/var/www",
    ]


CLAIM = {"name": "r", "persistentVolumeClaim": {"claimName": "c"}}


@pytest.mark.parametrize(
    ("destination", "expected"),
    [
        ({"repository": "s3:http://minio:9000/bucket/www"}, "s3:http://minio:9000/bucket/www"),
        ({"repository": "rest:http://rest:8000/www"}, "rest:http://rest:8000/www"),
        ({"repository": "/mnt/repo"}, "/mnt/repo"),
        ({"repository": "local:/x"}, "local:/x"),
        ({"volume": CLAIM, "path": "/repo"}, "/restik/repo/repo"),
        ({"volume": CLAIM, "path": "/a/b/"}, "/restik/repo/a/b"),
        ({"volume": CLAIM, "path": "/"}, "/restik/repo"),
    ],
)
def test_repository_of(destination, expected):
    from reconciler.api.backup import parse_backup
    from tests.factories import backup_object

    raw = backup_object("/data", "/x")
    raw["spec"]["destination"] = {"repositorySecretName": "s", **destination}
    assert restic.repository_of(parse_backup(raw)) == expected


@pytest.mark.parametrize(
    ("kind", "workload", "pod", "host", "lease"),
    [
        ("Deployment", "www", "www-5d9c-abcde", "www", True),
        ("ReplicaSet", "www", "www-abcde", "www", True),
        ("ReplicationController", "www", "www-abcde", "www", True),
        ("StatefulSet", "db", "db-0", "db-0", False),
        ("DaemonSet", "agent", "agent-x1", "node-a", False),
        (None, None, "laptop", "laptop", False),
    ],
)
def test_host_and_lease(kind, workload, pod, host, lease):
    assert restic.host_for(kind, workload, pod, "node-a") == host
    assert restic.needs_lease(kind) is lease


def test_daemonset_host_without_a_node_name_is_the_pod():
    assert restic.host_for("DaemonSet", "agent", "agent-x1", None) == "agent-x1"
    assert restic.host_for("DaemonSet", "agent", "agent-x1", "") == "agent-x1"


@pytest.mark.parametrize(
    ("policy", "expected"),
    [
        (None, None),
        ({}, None),
        ({"keepLastSnapshots": 0, "prune": True}, None),
        ({"keepLastSnapshots": 3}, ["--host=www", "--keep-last=3"]),
        (
            {
                "keepLastSnapshots": 7,
                "keepHourlySnapshots": 0,
                "keepDailySnapshots": 14,
                "keepWeeklySnapshots": 4,
                "keepMonthlySnapshots": 6,
                "keepYearlySnapshots": 1,
                "keepTags": ["keep"],
                "prune": True,
            },
            [
                "--host=www",
                "--keep-last=7",
                "--keep-daily=14",
                "--keep-weekly=4",
                "--keep-monthly=6",
                "--keep-yearly=1",
                "--keep-tag=keep",
                "--prune",
            ],
        ),
        (
            {"keepLastSnapshots": 1, "retainHostname": "other", "retainTags": ["a", "b"]},
            ["--host=other", "--tag=a", "--tag=b", "--keep-last=1"],
        ),
    ],
)
def test_render_forget(policy, expected):
    spec = {} if policy is None else {"retentionPolicy": policy}
    b = make_backup("/data", "/repo", **spec)
    args = restic.render_forget(b, CTX)
    if expected is None:
        assert args is None
    else:
        assert args == ["restic", "--repo=/repo", "--cache-dir=/restik/cache", "forget", *expected]


def test_locking_commands_wait_for_locks_where_restic_can():
    b = make_backup("/data", "/repo", retentionPolicy={"keepLastSnapshots": 1})
    native = Context(host="www", cache_dir="/c", retry_lock=600, native_retry_lock=True)
    old = Context(host="www", cache_dir="/c", retry_lock=600, native_retry_lock=False)
    # in slices of 20 s: between two, restik removes a dead restic's lock
    assert "--retry-lock=20s" in restic.render_backup(b, native)
    assert "--retry-lock=20s" in restic.render_forget(b, native)
    args = restic.render_backup(b, native)
    assert args.index("--retry-lock=20s") < args.index("backup")  # a global option
    short = Context(host="www", cache_dir="/c", retry_lock=5, native_retry_lock=True)
    assert "--retry-lock=5s" in restic.render_backup(b, short)
    for ctx in (native, old):  # commands without a lock never wait
        assert not any(a.startswith("--retry-lock") for a in restic.render_unlock(b, ctx))
        assert not any(a.startswith("--retry-lock") for a in restic.render_snapshots(b, ctx))
    assert not any(a.startswith("--retry-lock") for a in restic.render_backup(b, old))


@pytest.mark.parametrize(
    ("text", "version", "native"),
    [
        ("restic 0.14.0 compiled with go1.19.8 on linux/amd64\n", (0, 14, 0), False),
        ("restic 0.16.0 compiled with go1.20.6 on linux/amd64\n", (0, 16, 0), True),
        ("restic 0.18.1 compiled with go1.24.4 on linux/arm64\n", (0, 18, 1), True),
        ("restic 1.0.0 compiled with go1.30 on linux/amd64\n", (1, 0, 0), True),
        ("something else", None, False),
    ],
)
def test_restic_version_decides_retry_lock(text, version, native):
    assert restic.parse_version(text) == version
    assert restic.has_retry_lock(version) is native


@needs_restic
def test_detect_version_of_the_installed_restic():
    version = restic.detect_version(RESTIC)
    assert version is not None and version >= (0, 14, 0)
    assert restic.detect_version("/nonexistent/restic") is None


def test_forget_for_several_hosts():
    b = make_backup("/data", "/repo", retentionPolicy={"keepLastSnapshots": 2})
    args = restic.render_forget(b, CTX, ["db-1", "db-0", "db-1"])
    assert args[3:] == ["forget", "--host=db-0", "--host=db-1", "--keep-last=2"]
    other = make_backup("/data", "/repo", retentionPolicy={"keepLastSnapshots": 2,
                                                           "retainHostname": "x"})  # fmt: skip
    assert restic.render_forget(other, CTX, ["db-0"])[3:5] == ["forget", "--host=x"]
    assert restic.render_source_snapshots(b, CTX)[-1] == "--path=/data"


def test_workload_hosts():
    import json

    snaps = json.dumps(
        [{"hostname": h} for h in ("db-0", "db-1", "db-12", "db-x", "dbx-0", "db-1-0", "node-a")]
    )
    assert restic.workload_hosts(snaps, "StatefulSet", "db", "db-2") == [
        "db-0",
        "db-1",
        "db-12",
        "db-2",
    ]
    assert restic.workload_hosts(snaps, "DaemonSet", "agent", "node-b")[-2:] == [
        "node-a",
        "node-b",
    ]
    assert len(restic.workload_hosts(snaps, "DaemonSet", "agent", "node-b")) == 8
    assert restic.workload_hosts(snaps, "Deployment", "www", "www") == ["www"]
    assert restic.workload_hosts("not json", "StatefulSet", "db", "db-0") == ["db-0"]
    assert restic.workload_hosts("{}", "DaemonSet", "a", "n") == ["n"]


def test_lock_pause_grows_is_capped_and_jittered():
    from sidecar.repository import MAX_LOCK_PAUSE, lock_pause

    pauses = [lock_pause(n) for n in range(1, 30)]
    assert all(0 < p <= MAX_LOCK_PAUSE * 1.5 for p in pauses)
    assert lock_pause(1) <= 0.75
    assert len({round(lock_pause(5), 6) for _ in range(20)}) > 1


def test_render_other_commands():
    b = make_backup("/data", "/repo")
    g = ["restic", "--repo=/repo", "--cache-dir=/restik/cache"]
    assert restic.render_init(b, CTX) == [*g, "init"]
    assert restic.render_unlock(b, CTX) == [*g, "unlock"]
    assert restic.render_unlock(b, CTX, remove_all=True) == [*g, "unlock", "--remove-all"]
    assert restic.render_list_locks(b, CTX) == [*g, "--no-lock", "list", "locks"]
    assert restic.render_cat_lock(b, CTX, "ab") == [*g, "--no-lock", "cat", "lock", "ab"]
    assert restic.render_snapshots(b, CTX) == [*g, "--no-lock", "snapshots", "--json"]
    assert restic.render_cat_config(b, CTX) == [*g, "--no-lock", "cat", "config"]


def test_rendered_arguments_never_hold_the_password():
    b = make_backup("/data", "/repo", tags=["t"], retentionPolicy={"keepLastSnapshots": 1})
    for args in (
        restic.render_backup(b, CTX),
        restic.render_forget(b, CTX),
        restic.render_init(b, CTX),
        restic.render_unlock(b, CTX, remove_all=True),
    ):
        assert not any("password" in a.lower() or PASSWORD in a for a in args)


# --- pure: output --------------------------------------------------------------------------

SUMMARY = (
    '{"message_type":"status","percent_done":0,"total_files":1,"total_bytes":6}\n'
    '{"message_type":"summary","files_new":2,"files_changed":1,"files_unmodified":3,'
    '"dirs_new":1,"dirs_changed":0,"dirs_unmodified":0,"data_blobs":2,"tree_blobs":2,'
    '"data_added":103451,"total_files_processed":6,"total_bytes_processed":102406,'
    '"total_duration":0.216617215,"snapshot_id":"903c7ae4aabbccdd"}\n'
)


def test_parse_summary():
    s = restic.parse_summary(SUMMARY)
    assert s == restic.Summary(
        snapshot_id="903c7ae4",
        files_new=2,
        files_changed=1,
        files_unmodified=3,
        data_added=103451,
        total_files_processed=6,
        total_bytes_processed=102406,
        total_duration=0.216617215,
    )
    assert restic.parse_summary("") is None
    assert restic.parse_summary('{"message_type":"status"}\nnot json\n') is None


# What restic 0.18 prints besides its JSON messages, and what a killed restic leaves.
NOT_MESSAGES = [
    "",
    "   ",
    "/data/nonexist does not exist, skipping",  # a warning on stderr, also with --json
    "\x1b[2Ksignal interrupt received, cleaning up",
    "Fatal: wrong password or no key found",  # restic < 0.17: plain text even with --json
    '{"message_type":"status","percent_done":0.4,"total_fi',  # cut short by SIGKILL
    '{"message_type":"status"} trailing',
    "[1, 2]",  # JSON, but not a message
    '"summary"',
    "{not json}",
    "null",
]


@pytest.mark.parametrize("line", NOT_MESSAGES)
def test_a_line_that_is_no_json_message_is_none(line):
    assert restic.json_line(line) is None


def test_json_lines_are_messages_with_their_surrounding_blanks():
    assert restic.json_line('  {"message_type":"summary","files_new":1}\n') == {
        "message_type": "summary",
        "files_new": 1,
    }
    text = "\n".join([*NOT_MESSAGES, '{"message_type":"status"}', '{"message_type":"summary"}'])
    assert [m["message_type"] for m in restic.json_messages(text)] == ["status", "summary"]
    assert list(restic.json_messages("")) == []


def test_error_text_of_both_shapes_of_restics_error_message():
    assert restic.error_text({"error": {"message": "no space"}, "item": "/a"}) == "no space"
    assert restic.error_text({"error": "no space"}) == "no space"
    assert restic.error_text({"message_type": "error"}) is None


def test_a_summary_cut_short_is_not_taken_for_the_run_summary():
    cut = SUMMARY.rstrip("\n")[:-20]
    assert restic.parse_summary(cut) is None
    assert restic.parse_summary(SUMMARY + cut).snapshot_id == "903c7ae4"


# What restic 0.18 prints when its REST backend is down and restik interrupts it (--json).
RETRYING_STDERR = (
    'Stat(<config/>) returned error, retrying after 590.49ms: Head "http://:***@h:1/www/'
    'config": dial tcp 127.0.0.1:1: connect: connection refused\n'
    'Stat(<config/>) returned error, retrying after 1.48s: Head "http://:***@h:1/www/config":'
    " dial tcp 127.0.0.1:1: connect: connection reset by peer\n"
    "\x1b[2Ksignal interrupt received, cleaning up\n"
    '{"message_type":"exit_error","code":1,"message":"Fatal: unable to open config file: '
    'context canceled\\nIs there a repository at the following location?\\nrest:http://h:1/www/"}'
    "\n"
)


S3_BUCKET_MISSING_STDERR = (
    "Stat(<config/>) returned error, retrying after 720.1ms: Stat: The specified bucket does "
    "not exist\n"
    "\x1b[2Ksignal interrupt received, cleaning up\n"
    '{"message_type":"exit_error","code":1,"message":"Fatal: unable to open config file: '
    'context canceled\\nIs there a repository at the following location?\\ns3:http://h/b/r"}\n'
)


@pytest.mark.parametrize(
    ("code", "stderr", "kind"),
    [
        # restic 0.14, seen on this machine
        (
            1,
            "Fatal: unable to open config file: stat /r/config: no such file or directory\n"
            "Is there a repository at the following location?\n/r\n",
            Failure.NO_REPOSITORY,
        ),
        (
            1,
            "Fatal: unable to open config file: Stat: The specified bucket does not exist\n"
            "Is there a repository at the following location?\ns3:http://h/b\n",
            Failure.NO_REPOSITORY,
        ),
        (
            1,
            "Fatal: unable to open config file: <config/> does not exist\n"
            "Is there a repository at the following location?\nrest:http://h/www/\n",
            Failure.NO_REPOSITORY,
        ),
        # ... but the same hint after a network error is NOT a missing repository
        (
            1,
            'Fatal: unable to open config file: client.Head: Head "http://h/www/config": '
            "dial tcp 127.0.0.1:1: connect: connection refused\n"
            "Is there a repository at the following location?\nrest:http://h/www/\n",
            Failure.OTHER,
        ),
        (
            1,
            "Fatal: unable to open config file: stat /r/config: permission denied\n"
            "Is there a repository at the following location?\n/r\n",
            Failure.OTHER,
        ),
        (1, "Fatal: wrong password or no key found\n", Failure.WRONG_PASSWORD),
        (
            1,
            "unable to create lock in backend: repository is already locked exclusively by "
            "PID 1 on vm by root (UID 0, GID 0)\n",
            Failure.LOCKED,
        ),
        (1, "Fatal: unable to save snapshot: disk full\n", Failure.OTHER),
        # restic 0.17+ exit codes
        (
            10,
            "Fatal: repository does not exist: unable to open config file\n",
            Failure.NO_REPOSITORY,
        ),
        (11, "Fatal: unable to create lock in backend\n", Failure.LOCKED),
        (12, "Fatal: wrong password\n", Failure.WRONG_PASSWORD),
        (10, "", Failure.NO_REPOSITORY),
        # restic 0.18 retrying a missing S3 bucket, interrupted by restik (--json)...
        (1, S3_BUCKET_MISSING_STDERR, Failure.NO_REPOSITORY),
        # ... and a refused connection, interrupted the same way
        (1, RETRYING_STDERR, Failure.OTHER),
        (11, "", Failure.LOCKED),
    ],
)
def test_classify(code, stderr, kind):
    assert restic.classify(code, stderr) is kind


def test_first_error_line():
    assert restic.first_error_line("x\nFatal: wrong password or no key found\n") == (
        "wrong password or no key found"
    )
    assert restic.first_error_line("unable to create lock in backend: locked\nmore\n") == (
        "unable to create lock in backend: locked"
    )
    assert restic.first_error_line("", 3) == "restic exited with code 3"
    # restic >= 0.17 with --json: errors are JSON lines on stderr
    json_exit = (
        '{"message_type":"exit_error","code":12,'
        '"message":"Fatal: wrong password or no key found"}\n'
    )
    assert restic.first_error_line(json_exit, 12) == "wrong password or no key found"
    json_lock = (
        '{"message_type":"exit_error","code":11,"message":"unable to create lock in backend: x"}'
    )
    assert restic.first_error_line(json_lock) == "unable to create lock in backend: x"
    json_error = (
        '{"message_type":"error","error":{"message":"open /d/x: permission denied"},'
        '"during":"archival","item":"/d/x"}\n'
    )
    assert restic.first_error_line(json_error, 3) == "error: open /d/x: permission denied"
    assert restic.first_error_line("{not json\n") == "{not json"


def test_first_error_line_of_an_interrupted_retry_names_the_backend_error():
    """ "context canceled" says nothing: the last error restic retried is the cause; a JSON
    message's further lines ("Is there a repository ...") are not part of it; restik's own
    note (why it interrupted restic) follows."""
    note = f"{restic.RESTIK_NOTE}the repository did not answer for 5s"
    assert restic.first_error_line(RETRYING_STDERR + note + "\n", 1) == (
        'unable to open config file: Head "http://:***@h:1/www/config": dial tcp '
        "127.0.0.1:1: connect: connection reset by peer; the repository did not answer for 5s"
    )
    assert restic.first_error_line(f"{restic.RESTIK_NOTE}restic did not finish", 1) == (
        "restic did not finish"
    )
    assert backend.last_backend_error("Fatal: x\n") is None


def test_backend_watch_counts_from_the_first_failure_until_a_success():
    watch = backend.BackendWatch()
    watch.feed("scan finished in 0.1s\n", 1.0)
    assert watch.failing_for(5.0) == 0.0
    first, second = RETRYING_STDERR.splitlines()[:2]
    watch.feed(first, 10.0)
    watch.feed(second, 12.0)
    assert watch.failing_for(15.0) == 5.0  # since the first failure, not the latest
    assert watch.last_error.endswith("connection reset by peer")
    watch.feed("Save(<data/0a1b2c3d>) operation successful after 3 retries\n", 16.0)
    assert watch.failing_for(100.0) == 0.0
    watch.feed(first, 101.0)
    assert watch.failing_for(102.0) == 1.0
    # restic gave up on that request (0.17+ says so; 0.14 falls silent): not failing now
    watch.feed("Load(<lock/4f2e>) failed: <lock/4f2e> does not exist\n", 103.0)
    assert watch.failing_for(104.0) == 0.0
    watch.feed(first, 200.0)
    assert watch.failing_for(200.0 + backend.RETRY_SILENCE) == backend.RETRY_SILENCE
    assert watch.failing_for(200.0 + backend.RETRY_SILENCE + 1) == 0.0  # fell silent
    watch.feed(second, 500.0)  # a new failure counts from its own start
    assert watch.failing_for(510.0) == 10.0
    assert not watch.bucket_missing
    watch.feed(S3_BUCKET_MISSING_STDERR.splitlines()[0], 103.0)
    assert watch.bucket_missing  # init creates it: no point in waiting


NOW = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)


def lock(minutes_old: float, host: str = "pod-a", pid: int = 42) -> Lock:
    return Lock("id", NOW - timedelta(minutes=minutes_old), host, pid, True)


@pytest.mark.parametrize(
    ("lk", "alive", "stale"),
    [
        (lock(31), True, True),  # older than the threshold, whoever holds it
        (lock(1), True, False),  # fresh and its process runs
        (lock(1), False, True),  # this host, process gone
        (lock(1, host="pod-b"), False, False),  # another host: only age counts
        (lock(31, host="pod-b"), True, True),
        (Lock("id", None, "pod-a", 1, False), True, True),  # unreadable time
    ],
)
def test_is_stale(lk, alive, stale):
    got = is_stale(
        lk,
        now=NOW,
        stale_after=timedelta(minutes=30),
        hostname="pod-a",
        process_alive=lambda p: alive,
    )
    assert got is stale


def test_parse_lock():
    text = (
        '{"time": "2026-11-25T00:51:21.364045386Z", "exclusive": true, "hostname": "vm",'
        ' "username": "root", "pid": 18556}'
    )
    lk = parse_lock("abc", text)
    assert lk == Lock(
        "abc", datetime(2026, 11, 25, 0, 51, 21, 364045, tzinfo=UTC), "vm", 18556, True
    )
    assert parse_lock("x", "garbage") is None


def test_redaction():
    env = {"RESTIC_PASSWORD": PASSWORD, "AWS_SECRET_ACCESS_KEY": "abcdef", "HOME": "/root"}
    secrets = secret_values(env)
    assert set(secrets) == {PASSWORD, "abcdef"}
    assert redact(f"x {PASSWORD} y abcdef", secrets) == "x [REDACTED] y [REDACTED]"
    assert format_bytes(512) == "512 B"
    assert format_bytes(103451) == "101.0 KiB"


@pytest.mark.parametrize(
    "env, missing",
    [
        ({"RESTIC_PASSWORD": PASSWORD}, False),
        ({"RESTIC_PASSWORD_FILE": "/etc/restic/pw"}, False),
        ({"RESTIC_PASSWORD_COMMAND": "cat /pw"}, False),
        ({}, True),
        ({"RESTIC_PASSWORD": ""}, True),  # the key is there but empty: restic refuses it
        ({"AWS_ACCESS_KEY_ID": "x"}, True),  # the Secret's other keys came, not `password`
    ],
)
def test_missing_password_names_the_secret_and_key(env, missing):
    from sidecar.outcome import missing_password

    problem = missing_password(make_backup("/data", "/repo"), env)
    if not missing:
        assert problem is None
        return
    assert "Secret default/www-restic" in problem
    assert "spec.destination.repositorySecretName" in problem
    assert '"password"' in problem and "restart the pod" in problem


def test_a_missing_password_fails_the_run_without_starting_restic(tmp_path):
    from sidecar.outcome import SECRET_MISSING

    runner = Runner(base_env(None, TMPDIR=str(tmp_path)))
    ctx = Context(host="www", cache_dir=str(tmp_path), restic="/nonexistent/restic")
    out = Job(make_backup("/data", str(tmp_path / "repo")), ctx, runner).run()
    # "/nonexistent/restic" would raise FileNotFoundError if anything tried to start it
    assert (out.success, out.reason, out.failure) == (False, SECRET_MISSING, None)
    assert out.condition_reason == SECRET_MISSING
    assert not (tmp_path / "repo").exists()


# --- real restic ---------------------------------------------------------------------------


@pytest.fixture
def source(tmp_path) -> Path:
    return write_tree(
        tmp_path / "src",
        {
            "index.html": b"<h1>hello</h1>\n",
            "data/blob.bin": os.urandom(200_000),
            "data/skip.tmp": b"temporary",
            "empty": b"",
        },
    )


def restore(repo: str, target: Path, env=None) -> dict[str, bytes]:
    from tests.factories import restic as run_restic

    run_restic(repo, "restore", "latest", "--target", str(target), env=env)
    return target


def snapshots(repo: str, env=None) -> list[dict]:
    import json

    from tests.factories import restic as run_restic

    return json.loads(run_restic(repo, "snapshots", "--json", env=env).stdout)


@needs_restic
@pytest.mark.slow
def test_local_init_on_first_run_backup_forget_restore(tmp_path, source, job_for):
    repo = str(tmp_path / "repo")  # does not exist yet
    b = make_backup(
        str(source),
        repo,
        tags=["prod"],
        excludes=["*.tmp"],
        retentionPolicy={"keepLastSnapshots": 2, "prune": True},
    )
    first = job_for(b).run()
    assert first.success, first.message
    assert first.initialised
    assert first.summary.files_new == 3
    assert first.message.startswith(f"snapshot {first.summary.snapshot_id} saved: 3 new")
    for _ in range(2):
        (source / "index.html").write_bytes(os.urandom(64))
        out = job_for(b).run()
        assert out.success and not out.initialised, out.message
    snaps = snapshots(repo)
    assert len(snaps) == 2  # retention applied
    assert {s["hostname"] for s in snaps} == {"www"}
    assert all(s["tags"] == ["prod"] for s in snaps)
    target = restore(repo, tmp_path / "restored")
    restored = tree_bytes(target / str(source).lstrip("/"))
    expected = tree_bytes(source)
    del expected["data/skip.tmp"]
    assert restored == expected  # byte-identical, excludes honoured


@needs_restic
@pytest.mark.slow
def test_wrong_password_is_classified_and_never_reinitialises(tmp_path, source, job_for):
    repo = copy_template(tmp_path / "repo")
    before = tree_bytes(repo)
    out = job_for(make_backup(str(source), str(repo)), password="wrong-password").run()
    assert not out.success
    assert out.failure is Failure.WRONG_PASSWORD
    assert not out.initialised
    assert out.message == "wrong password or no key found"
    assert tree_bytes(repo) == before  # no init, no new key, nothing written
    assert "wrong-password" not in out.message and PASSWORD not in out.message


@needs_restic
@pytest.mark.slow
def test_unreachable_repository_is_not_initialised(tmp_path, source, job_for):
    """restic 0.14 gives up on a refused connection after a few retries; 0.17+ retries for
    15 minutes, so restik interrupts it after --backend-timeout and says why."""
    port = free_port()  # nothing listens there
    backup = make_backup(str(source), f"rest:http://127.0.0.1:{port}/www")
    started = time.monotonic()
    out = job_for(backup, backend_timeout=3).run()
    assert time.monotonic() - started < 60
    assert not out.success and not out.initialised
    assert out.failure is Failure.OTHER
    assert "connection refused" in out.message and f"127.0.0.1:{port}" in out.message
    assert out.message.startswith("unable to open config file"), out.message


def _frozen_locker(repo: Path, cmd_prefix: list[str] = ()) -> subprocess.Popen:
    """A `restic check` holding its exclusive lock, frozen with SIGSTOP once the lock file is
    complete (so a half-written lock is never seen)."""
    locks = repo / "locks"
    proc = subprocess.Popen(
        [*cmd_prefix, RESTIC, f"--repo={repo}", "--no-cache", "check", "--read-data"],
        env=base_env(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 30
    try:
        while True:
            assert time.monotonic() < deadline and proc.poll() is None, "restic check never locked"
            if any(locks.iterdir()):
                proc.send_signal(signal.SIGSTOP)
                if _lock_readable(repo):
                    return proc
                proc.send_signal(signal.SIGCONT)
            time.sleep(0.005)
    except BaseException:
        proc.kill()
        proc.wait()
        raise


def _stale_lock(repo: Path, cmd_prefix: list[str] = ()) -> None:
    """Leave an exclusive lock behind: a `restic check` SIGKILLed while it holds it."""
    proc = _frozen_locker(repo, cmd_prefix)
    proc.kill()
    proc.wait()
    assert any((repo / "locks").iterdir())


@needs_restic
@pytest.mark.slow
def test_a_run_waits_for_a_live_exclusive_lock_and_gives_up_after_lock_wait(
    tmp_path, source, caplog
):
    """Another pod's prune holds the exclusive lock: the backup waits (restic >= 0.16:
    --retry-lock; older: restik's jittered retries) and succeeds once it is released; with
    a shorter --lock-wait than the lock is held, the run is Failed, RepositoryLocked."""
    import logging
    import threading

    repo = copy_template(tmp_path / "repo")
    native = restic.has_retry_lock(restic.detect_version(RESTIC))
    b = make_backup(str(source), str(repo))

    def job(wait: float) -> Job:
        runner = Runner(base_env(TMPDIR=str(tmp_path)), stop_timeout=20, command_timeout=300,
                        backend_timeout=20)  # fmt: skip
        ctx = Context(host="db-1", cache_dir=str(tmp_path / "cache"), restic=RESTIC,
                      retry_lock=wait, native_retry_lock=native)  # fmt: skip
        return Job(b, ctx, runner)

    locker = _frozen_locker(repo)
    try:
        short = job(1.0).run()
        assert (short.success, short.failure) == (False, Failure.LOCKED), short.message
        assert short.condition_reason == "RepositoryLocked"
        assert not any((repo / "snapshots").iterdir())  # nothing saved under the lock
        released = threading.Timer(3.0, locker.send_signal, (signal.SIGCONT,))
        released.start()
        started = time.monotonic()
        with caplog.at_level(logging.INFO, logger="sidecar.repository"):
            out = job(120.0).run()
        waited = time.monotonic() - started
        released.join()
    finally:
        locker.send_signal(signal.SIGCONT)
        locker.wait(60)
    assert out.success, out.message
    assert waited >= 2.5  # it really waited for the lock
    assert len(snapshots(str(repo))) == 1
    if not native:
        assert "locked by another run; trying again" in caplog.text


def _lock_readable(repo: Path) -> bool:
    for lock in (repo / "locks").iterdir():
        shown = subprocess.run(
            [RESTIC, f"--repo={repo}", "--no-cache", "--no-lock", "cat", "lock", lock.name],
            env=base_env(),
            capture_output=True,
            text=True,
            stdin=subprocess.DEVNULL,
            timeout=60,
        )
        if shown.returncode == 0 and '"exclusive": true' in shown.stdout:
            return True
    return False


@needs_restic
@pytest.mark.slow
def test_stale_lock_of_dead_process_is_removed_and_run_retried(tmp_path, source, job_for):
    repo = copy_template(tmp_path / "repo")
    _stale_lock(repo)
    b = make_backup(str(source), str(repo), retentionPolicy={"keepLastSnapshots": 1})
    out = job_for(b).run()
    assert out.success, out.message
    assert not any((repo / "locks").iterdir())
    assert len(snapshots(str(repo))) == 1


@needs_restic
@pytest.mark.slow
def test_lock_of_another_host_kept_until_threshold(tmp_path, source, job_for):
    if os.geteuid() != 0 or shutil.which("unshare") is None:
        pytest.skip("needs root and unshare to fake another host's lock")
    repo = copy_template(tmp_path / "repo")
    _stale_lock(repo, ["unshare", "--uts", "sh", "-c", 'hostname elsewhere && exec "$@"', "-"])
    b = make_backup(str(source), str(repo))
    out = job_for(b).run()  # 30 min threshold: a fresh lock of another host is respected
    assert not out.success and out.failure is Failure.LOCKED
    assert "locked" in out.message
    out = job_for(b, stale_after=timedelta(seconds=0)).run()  # past the threshold: removed
    assert out.success, out.message


@needs_restic
@pytest.mark.slow
def test_interrupted_backup_leaves_a_consistent_repository(tmp_path, job_for):
    repo = copy_template(tmp_path / "repo")
    src = tmp_path / "big"
    src.mkdir()
    for i in range(6):
        (src / f"f{i}").write_bytes(os.urandom(32 * 1024 * 1024))
    job = job_for(make_backup(str(src), str(repo)))
    result = {}
    t = threading.Thread(target=lambda: result.setdefault("out", job.run()))
    t.start()
    deadline = time.monotonic() + 30
    while not any((repo / "locks").iterdir()):  # restic is running and holds its lock
        assert time.monotonic() < deadline
        time.sleep(0.01)
    time.sleep(0.3)
    job.runner.stop()
    t.join(60)
    out = result["out"]
    assert not out.success and out.interrupted
    assert out.message.startswith("interrupted by shutdown")
    assert not any((repo / "locks").iterdir())  # restic removed its lock on SIGINT
    from tests.factories import restic as run_restic

    run_restic(str(repo), "check")


@pytest.fixture
def s3_server(tmp_path):
    if shutil.which("moto_server") is None:
        pytest.skip("moto_server is not installed")
    port = free_port()
    with server(["moto_server", "-H", "127.0.0.1", "-p", str(port)], port, tmp_path / "moto.log"):
        yield f"http://127.0.0.1:{port}"


@pytest.fixture
def rest_server(tmp_path):
    if shutil.which("rclone") is None:
        pytest.skip("rclone is not installed")
    port = free_port()
    root = tmp_path / "rest"
    root.mkdir()
    cmd = ["rclone", "serve", "restic", "--addr", f"127.0.0.1:{port}", str(root)]
    with server(cmd, port, tmp_path / "rclone.log"):
        yield f"http://127.0.0.1:{port}"


S3_ENV = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing-secret"}


@needs_restic
@pytest.mark.slow
@pytest.mark.parametrize("backend", ["s3", "rest"])
def test_remote_repository_init_backup_restore(backend, request, tmp_path, source, job_for):
    if backend == "s3":
        repo = f"s3:{request.getfixturevalue('s3_server')}/bucket/www"
        env = S3_ENV
    else:
        repo = f"rest:{request.getfixturevalue('rest_server')}/www"
        env = {}
    b = make_backup(str(source), repo, retentionPolicy={"keepLastSnapshots": 1, "prune": True})
    first = job_for(b, **env).run()
    assert first.success and first.initialised, first.message
    (source / "index.html").write_bytes(b"changed\n")
    second = job_for(b, **env).run()
    assert second.success and not second.initialised, second.message
    assert second.summary.files_changed == 1
    renv = base_env(**env)
    assert len(snapshots(repo, env=renv)) == 1
    target = restore(repo, tmp_path / "restored", env=renv)
    assert tree_bytes(target / str(source).lstrip("/")) == tree_bytes(source)
    wrong = job_for(b, password="nope-nope", **env).run()
    assert wrong.failure is Failure.WRONG_PASSWORD and not wrong.initialised


@needs_restic
def test_runner_passes_password_only_through_environment(tmp_path):
    runner = Runner(base_env(), command_timeout=60)
    res = runner.run([RESTIC, "version"])
    assert res.ok
    assert not any(PASSWORD in a for a in res.args)
