"""Helpers for the sidecar tests: repositories, test servers, Backup objects (no tests here)."""

from __future__ import annotations

import atexit
import contextlib
import functools
import os
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

from reconciler.api.backup import parse_backup

PASSWORD = "s3cr3t-Pa55w0rd-for-tests"  # grep-able: must never leak into args/logs/Events
# $RESTIK_TEST_RESTIC: test with another restic binary (e.g. the image's 0.18).
RESTIC = os.environ.get("RESTIK_TEST_RESTIC") or shutil.which("restic")

needs_restic = pytest.mark.skipif(RESTIC is None, reason="restic is not installed")


def base_env(password: str | None = PASSWORD, **extra: str) -> dict[str, str]:
    """A sidecar's environment; ``password=None``: no RESTIC_PASSWORD (a missing Secret)."""
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": os.environ.get("HOME", "/root"),
    }
    if password is not None:
        env["RESTIC_PASSWORD"] = password
    env.update(extra)
    return env


def restic(repo: str, *args: str, env: dict | None = None, check: bool = True, cache=None):
    """Run restic directly (the test's own view of the repository)."""
    cmd = [RESTIC, f"--repo={repo}", "--no-cache" if cache is None else f"--cache-dir={cache}"]
    proc = subprocess.run(
        [*cmd, *args],
        env=env or base_env(),
        capture_output=True,
        text=True,
        stdin=subprocess.DEVNULL,
        timeout=120,
    )
    if check and proc.returncode != 0:
        raise AssertionError(f"restic {args} failed ({proc.returncode}): {proc.stderr}")
    return proc


@functools.cache
def _template_repo() -> Path:
    """One initialised repository per test session (restic init costs ~3 s of KDF)."""
    root = Path(tempfile.mkdtemp(prefix="restik-template-"))
    atexit.register(shutil.rmtree, root, True)
    restic(str(root / "repo"), "init")
    return root / "repo"


def copy_template(dest: Path) -> Path:
    shutil.copytree(_template_repo(), dest)
    return dest


def make_backup(
    source: str,
    repository: str,
    *,
    name: str = "www",
    namespace: str = "default",
    schedule: str = "@every 2s",
    **spec,
):
    raw = backup_object(source, repository, name=name, namespace=namespace, schedule=schedule)
    raw["spec"].update(spec)
    return parse_backup(raw)


def backup_object(
    source: str,
    repository: str,
    *,
    name: str = "www",
    namespace: str = "default",
    schedule: str = "@every 2s",
    secret: str = "www-restic",
) -> dict:
    return {
        "apiVersion": "backup.appscode.com/v1beta1",
        "kind": "Backup",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {
            "schedule": schedule,
            "backupSource": {"volumeName": "data", "path": source},
            "destination": {"repositorySecretName": secret, "repository": repository},
        },
    }


def write_tree(root: Path, files: dict[str, bytes]) -> Path:
    for rel, data in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    return root


def tree_bytes(root: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()
    }


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port: int, proc: subprocess.Popen, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode}")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.2):
            return
        time.sleep(0.1)
    raise RuntimeError(f"nothing listening on 127.0.0.1:{port} after {timeout}s")


@contextlib.contextmanager
def server(cmd: list[str], port: int, log: Path):
    """A test server on 127.0.0.1, always stopped at the end."""
    with open(log, "wb") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        try:
            wait_port(port, proc)
            yield proc
        finally:
            proc.terminate()
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
