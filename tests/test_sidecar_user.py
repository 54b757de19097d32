"""The sidecar's user against real files, with real restic: a sidecar rendered for a
PostgreSQL-like app (data directory mode 0700 of uid 999) backs it up; the old fixed
65532 cannot read it. restic runs as the rendered runAsUser/runAsGroup with every
capability dropped and no_new_privs, as the container runtime would start it."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest

from reconciler.api.backup import parse_backup
from reconciler.api.constants import SIDECAR_NAME
from reconciler.controller.plan import plan
from reconciler.controller.render import Renderer
from tests.factories import PASSWORD, RESTIC, backup, copy_template, needs_restic, workload

SETPRIV = shutil.which("setpriv")
APP_UID = 999

if os.geteuid() != 0 or SETPRIV is None:
    # Switching users needs root (and util-linux's setpriv). CI runs as root: there a
    # missing precondition is a failure, never a silent skip.
    why = "needs root and setpriv to run restic as another user"
    if os.environ.get("CI"):
        pytest.fail(f"{why} (CI is set)", pytrace=False)
    pytestmark = pytest.mark.skip(reason=why)


def sidecar_ids(app_security_context: dict | None) -> tuple[int, int]:
    """(runAsUser, runAsGroup) of the sidecar the planner renders for a PostgreSQL-like
    workload whose container mounts the data volume with ``app_security_context``."""
    obj = workload("StatefulSet", name="pg")
    app = obj["spec"]["template"]["spec"]["containers"][0]
    if app_security_context is not None:
        app["securityContext"] = app_security_context
    [change] = plan([parse_backup(backup())], [obj], Renderer()).changes
    (sidecar,) = [
        c for c in change.after["spec"]["template"]["spec"]["containers"]
        if c["name"] == SIDECAR_NAME
    ]  # fmt: skip
    sc = sidecar["securityContext"]
    assert sc["capabilities"] == {"drop": ["ALL"]} and sc["allowPrivilegeEscalation"] is False
    return sc["runAsUser"], sc["runAsGroup"]


def restic_as(uid: int, gid: int, repo: Path, *args: str) -> subprocess.CompletedProcess:
    """restic as ``uid``:``gid`` with no supplementary groups, no capabilities (not even in
    the bounding set) and no_new_privs: what the rendered securityContext gives."""
    cmd = [
        SETPRIV,
        f"--reuid={uid}",
        f"--regid={gid}",
        "--clear-groups",
        "--inh-caps=-all",
        "--bounding-set=-all",
        "--no-new-privs",
        RESTIC,
        f"--repo={repo}",
        "--no-cache",
        *args,
    ]
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": "/nonexistent"}
    env["RESTIC_PASSWORD"] = PASSWORD
    return subprocess.run(
        cmd, env=env, capture_output=True, text=True, stdin=subprocess.DEVNULL, timeout=120
    )


@pytest.fixture
def world():
    # Not pytest's tmp_path: its base directory is 0700 root, which no other uid can enter.
    root = Path(tempfile.mkdtemp(prefix="restik-user-"))
    root.chmod(0o755)
    data = root / "pgdata"
    (data / "base").mkdir(parents=True)
    (data / "PG_VERSION").write_text("17\n")
    (data / "base" / "1").write_bytes(b"\x00table rows" * 100)
    for path in (data, data / "base"):
        os.chown(path, APP_UID, APP_UID)
        path.chmod(0o700)
    for path in (data / "PG_VERSION", data / "base" / "1"):
        os.chown(path, APP_UID, APP_UID)
        path.chmod(0o600)
    yield root, data
    shutil.rmtree(root, ignore_errors=True)


def repository_for(root: Path, uid: int, gid: int) -> Path:
    repo = copy_template(root / f"repo-{uid}")
    for dirpath, _, filenames in os.walk(repo):
        os.chown(dirpath, uid, gid)
        for name in filenames:
            os.chown(os.path.join(dirpath, name), uid, gid)
    return repo


@needs_restic
def test_sidecar_as_the_apps_user_backs_up_its_private_files(world):
    root, data = world
    uid, gid = sidecar_ids({"runAsUser": APP_UID, "runAsGroup": APP_UID})
    assert (uid, gid) == (APP_UID, APP_UID)
    repo = repository_for(root, uid, gid)
    proc = restic_as(uid, gid, repo, "backup", "--host=pg", str(data))
    assert proc.returncode == 0, proc.stderr
    listing = restic_as(uid, gid, repo, "ls", "latest")
    assert listing.returncode == 0, listing.stderr
    assert f"{data}/base/1" in listing.stdout.split()
    assert f"{data}/PG_VERSION" in listing.stdout.split()


@needs_restic
def test_sidecar_with_the_fixed_default_user_cannot_read_them(world):
    """The control: what the sidecar did before (65532) fails on the same directory, so the
    test above proves the user matters, not just that restic works."""
    root, data = world
    uid, gid = sidecar_ids(None)  # nothing known about the app: the image's user
    assert (uid, gid) == (65532, 65532)
    repo = repository_for(root, uid, gid)
    proc = restic_as(uid, gid, repo, "backup", "--host=pg", str(data))
    assert proc.returncode != 0
    assert "permission denied" in proc.stderr
