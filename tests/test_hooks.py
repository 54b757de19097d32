"""Backup hooks (sidecar/hooks.py) in the run's pipeline (sidecar/job.py), run through the
emulator's pods/exec: timeouts, onError, and the post hook that runs whatever happened
before it."""

from __future__ import annotations

import dataclasses
import time

import pytest

from reconciler.api.backup import parse_backup
from sidecar.hooks import CONTINUE, FAIL, Hook, run_hook
from sidecar.job import CHECKS, Job, Pod, RunContext, Step, conclude, post_hook, pre_hook, run_steps
from sidecar.restic import Context, Summary
from sidecar.runner import Runner
from tests.emulator import Emulator
from tests.execpods import exec_client, running_pod
from tests.factories import backup

SAVED = Summary("abc12345", files_new=1, data_added=10)


@pytest.fixture
def emu():
    with Emulator() as emulator:
        running_pod(emulator, "db", "pg-0", "postgres", "restik")
        yield emulator


@pytest.fixture
def client(emu, tmp_path):
    return exec_client(emu, tmp_path)


def hook(name, script, *, timeout=10.0, on_error=FAIL, container="postgres"):
    return Hook(name, ("sh", "-c", script), container, timeout, on_error)


def spec(script, *, timeout="10s", on_error=FAIL):
    return {"command": ["sh", "-c", script], "timeout": timeout, "onError": on_error}


def saved(job, ctx):
    return dataclasses.replace(ctx, summary=SAVED)


def failing(reason):
    return lambda job, ctx: ctx.fail(reason)


def run_hooked(emu, client, main, **hooks):
    """pre hook → ``main`` (the backup step) → post hook, as a Job runs them; the Outcome.
    The hooks run in the first container of pod db/pg-0 (the Backup backs up a command)."""
    raw = backup(namespace="db", hooks=hooks)
    raw["spec"]["backupSource"] = {"command": {"command": ["true"], "filename": "x"}}
    pod = emu.get("v1", "pods", "pg-0", "db")
    job = Job(parse_backup(raw), Context(host="pg-0", cache_dir="/nonexistent"),
              Runner({"RESTIC_PASSWORD": "secret-password"}),
              pod=Pod("db", "pg-0", pod["spec"], client))  # fmt: skip
    steps = (Step("preBackup", pre_hook), Step("backup", main),
             Step("postBackup", post_hook, always=True))  # fmt: skip
    ctx = run_steps(job, RunContext(started=time.monotonic(), repo=None), CHECKS)
    assert ctx.failed is None and ctx.containers.get("preBackup", "postgres") == "postgres"
    return conclude(run_steps(job, ctx, steps))


def test_a_hanging_hook_is_stopped_at_its_timeout_and_the_post_hook_still_runs(
    emu, client, tmp_path
):
    ran = []
    started = time.monotonic()
    out = run_hooked(
        emu, client, lambda job, ctx: ran.append("main") or saved(job, ctx),
        preBackup=spec("echo freezing; sleep 60", timeout="1s"),
        postBackup=spec(f"touch {tmp_path}/unfrozen"),
    )  # fmt: skip
    assert time.monotonic() - started < 5
    assert not out.success and out.reason == "PreBackupHookFailed"
    assert out.message == "preBackup hook failed: timed out after 1s (output: freezing)"
    assert ran == [] and out.summary is None  # onError: Fail keeps the backup from running
    assert (tmp_path / "unfrozen").exists()


def test_the_post_hook_runs_after_a_failed_backup(emu, client, tmp_path):
    out = run_hooked(
        emu, client, failing("restic backup failed: wrong password"),
        preBackup=spec("true"), postBackup=spec(f"touch {tmp_path}/unfrozen"),
    )  # fmt: skip
    assert (tmp_path / "unfrozen").exists()
    assert not out.success and out.message == "restic backup failed: wrong password"


def test_the_post_hook_runs_when_the_backup_raises(emu, client, tmp_path):
    def explode(job, ctx):
        raise RuntimeError("sidecar bug")

    with pytest.raises(RuntimeError, match="sidecar bug"):
        run_hooked(emu, client, explode, postBackup=spec(f"touch {tmp_path}/unfrozen"))
    assert (tmp_path / "unfrozen").exists()


def test_a_failing_post_hook_fails_the_run_with_its_reason_and_output(emu, client):
    script = "echo thawing; echo 'fsfreeze: /data: unfreeze failed' >&2; exit 4"
    out = run_hooked(emu, client, saved, postBackup=spec(script))
    assert not out.success and out.reason == "PostBackupHookFailed"
    assert out.message == (
        "postBackup hook failed: exited with code 4: fsfreeze: /data: unfreeze failed "
        "(snapshot abc12345 saved)"
    )
    assert out.summary == SAVED  # the snapshot is there, and reported
    both = run_hooked(emu, client, failing("restic backup failed: x"),
                      postBackup=spec("echo thawing; exit 4"))  # fmt: skip
    assert both.message == (
        "restic backup failed: x; postBackup hook failed: exited with code 4 (output: thawing)"
    )


def test_hooks_with_on_error_continue_are_warnings(emu, client):
    ran = []
    out = run_hooked(
        emu, client, lambda job, ctx: ran.append("main") or saved(job, ctx),
        preBackup=spec("exit 1", on_error=CONTINUE),
        postBackup=spec("sleep 30", timeout="0.5s", on_error=CONTINUE),
    )  # fmt: skip
    assert out.success and ran == ["main"]
    assert out.message.startswith("snapshot abc12345 saved: 1 new, 0 changed")
    assert out.message.endswith(
        " (preBackup hook failed: exited with code 1; postBackup hook failed: timed out after 0.5s)"
    )


def test_hook_output_that_names_a_secret_is_redacted(emu, client):
    out = run_hooked(emu, client, saved, postBackup=spec("echo secret-password; exit 1"))
    assert out.message == (
        "postBackup hook failed: exited with code 1 (output: [REDACTED]) (snapshot abc12345 saved)"
    )


def test_a_hook_in_a_missing_container_is_a_failure_not_an_exception(client):
    result = run_hook(client, "db", "pg-0", hook("preBackup", "true", container="mysql"))
    assert not result.ok and result.fails_run
    assert result.reason == ("preBackup hook could not run in pg-0/mysql: 400 BadRequest: "
                             "container mysql is not valid for pod pg-0")  # fmt: skip


def test_hook_output_is_bounded(client):
    result = run_hook(client, "db", "pg-0", hook("preBackup", "seq 1 100000"), output_limit=100)
    assert result.ok and result.output.endswith("\n99999\n100000")
    assert len(result.output.encode()) <= 100 + len("…".encode())


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"command": ()}, "preBackup: command must not be empty"),
        ({"on_error": "Ignore"}, "preBackup: onError must be one of Fail, Continue"),
        ({"timeout": 0}, "preBackup: timeout must be positive"),
    ],
)
def test_hook_settings_are_checked(kwargs, message):
    settings = {"name": "preBackup", "command": ("true",), "container": "c", **kwargs}
    with pytest.raises(ValueError) as caught:
        Hook(**settings)
    assert str(caught.value) == message
