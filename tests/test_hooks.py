"""Backup hooks (sidecar/hooks.py) run through the emulator's pods/exec: timeouts, onError,
and the post hook that runs whatever happened before it."""

from __future__ import annotations

import time
from dataclasses import dataclass

import pytest

from sidecar.hooks import CONTINUE, FAIL, Hook, describe, run_hook, run_with_hooks
from tests.emulator import Emulator
from tests.execpods import exec_client, running_pod


@dataclass(frozen=True)
class Step:
    ok: bool
    reason: str = ""


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


def test_a_hanging_hook_is_stopped_at_its_timeout_and_the_post_hook_still_runs(client, tmp_path):
    ran = []
    started = time.monotonic()
    run = run_with_hooks(
        client, "db", "pg-0", lambda: ran.append("main") or Step(True),
        pre=hook("preBackup", "echo freezing; sleep 60", timeout=1),
        post=hook("postBackup", f"touch {tmp_path}/unfrozen"),
    )  # fmt: skip
    assert time.monotonic() - started < 5
    assert not run.ok and run.reason == "preBackup hook failed: timed out after 1s"
    assert run.pre is not None and run.pre.timed_out and run.pre.output == "freezing"
    assert ran == [] and run.main is None  # onError: Fail keeps the backup from running
    assert (tmp_path / "unfrozen").exists() and run.post is not None and run.post.ok


def test_the_post_hook_runs_after_a_failed_backup(client, tmp_path):
    run = run_with_hooks(
        client, "db", "pg-0", lambda: Step(False, "restic backup failed: wrong password"),
        pre=hook("preBackup", "true"), post=hook("postBackup", f"touch {tmp_path}/unfrozen"),
    )  # fmt: skip
    assert (tmp_path / "unfrozen").exists()
    assert not run.ok and run.reason == "restic backup failed: wrong password"


def test_the_post_hook_runs_when_the_backup_raises(client, tmp_path):
    def explode():
        raise RuntimeError("sidecar bug")

    with pytest.raises(RuntimeError, match="sidecar bug"):
        run_with_hooks(client, "db", "pg-0", explode,
                       post=hook("postBackup", f"touch {tmp_path}/unfrozen"))  # fmt: skip
    assert (tmp_path / "unfrozen").exists()


def test_a_failing_post_hook_fails_the_run_with_its_reason_and_output(client):
    script = "echo thawing; echo 'fsfreeze: /data: unfreeze failed' >&2; exit 4"
    run = run_with_hooks(client, "db", "pg-0", lambda: Step(True),
                         post=hook("postBackup", script))  # fmt: skip
    assert not run.ok
    assert run.reason == (
        "postBackup hook failed: exited with code 4: fsfreeze: /data: unfreeze failed")  # fmt: skip
    assert run.post is not None and run.post.output == "thawing\nfsfreeze: /data: unfreeze failed"
    assert run.main == Step(True)
    both = run_with_hooks(client, "db", "pg-0", lambda: Step(False, "restic backup failed: x"),
                          post=hook("postBackup", "exit 4"))  # fmt: skip
    assert both.reason == "restic backup failed: x; postBackup hook failed: exited with code 4"


def test_hooks_with_on_error_continue_are_warnings(client):
    ran = []
    run = run_with_hooks(
        client, "db", "pg-0", lambda: ran.append("main") or Step(True),
        pre=hook("preBackup", "exit 1", on_error=CONTINUE),
        post=hook("postBackup", "sleep 30", timeout=0.5, on_error=CONTINUE),
    )  # fmt: skip
    assert run.ok and ran == ["main"]
    assert run.warnings == ("preBackup hook failed: exited with code 1",
                            "postBackup hook failed: timed out after 0.5s")  # fmt: skip
    assert describe(run, "snapshot abc saved") == (
        "snapshot abc saved (preBackup hook failed: exited with code 1; "
        "postBackup hook failed: timed out after 0.5s)")  # fmt: skip


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
