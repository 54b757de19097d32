"""The container image: the Dockerfile builds, and restik and restic run in it as non-root.

Slow (a cold build takes minutes: the base image is bootstrapped with debootstrap), so it
runs only with RESTIK_TEST_IMAGE=1:

    RESTIK_TEST_IMAGE=1 pytest -m image tests/test_image.py
"""

import json
import os
import subprocess
from pathlib import Path

import pytest

from reconciler import __version__
from tests.factories.cluster import NS, backup, containers, get, workload

ROOT = Path(__file__).resolve().parent.parent
BUILD_IMAGE = Path(
    os.environ.get("RESTIK_BUILD_IMAGE", ROOT.parent / "shared" / "tools" / "build-image.sh")
)
TAG = os.environ.get("RESTIK_TEST_IMAGE_TAG", "localhost/restik:test")
UID = "65532"

pytestmark = [
    pytest.mark.image,
    pytest.mark.skipif(
        os.environ.get("RESTIK_TEST_IMAGE") != "1", reason="set RESTIK_TEST_IMAGE=1 to build"
    ),
]


def build_image(*args: str, timeout: float = 120) -> str:
    """Run build-image.sh with args; return the smoke command's stdout."""
    assert BUILD_IMAGE.is_file(), f"{BUILD_IMAGE} missing (set RESTIK_BUILD_IMAGE)"
    proc = subprocess.run(
        ["bash", str(BUILD_IMAGE), "-t", TAG, *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    assert proc.returncode == 0, f"build-image.sh {' '.join(args)} failed:\n{proc.stderr[-4000:]}"
    return proc.stdout


@pytest.fixture(scope="module")
def image() -> str:
    """Build the image once (cold: minutes) and smoke-run `restik --version` in it."""
    out = build_image(".", "--", "restik", "--version", timeout=1800)
    assert __version__ in out
    return TAG


def test_restik_version(image):
    # the entrypoint is restik: a leading `restik` is optional
    assert __version__ in build_image("--no-build", "--", "--version")


def test_restic_runs(image):
    out = build_image("--no-build", "--entrypoint", "restic", "--", "version")
    assert out.startswith("restic ")


def test_runs_as_non_root(image):
    assert build_image("--no-build", "--entrypoint", "id", "--", "-u").strip() == UID
    assert build_image("--no-build", "--entrypoint", "id", "--", "-g").strip() == UID


def test_image_config(image):
    proc = subprocess.run(
        ["podman", "image", "inspect", image], capture_output=True, text=True, check=True
    )
    (info,) = json.loads(proc.stdout)
    config = info["Config"]
    # numeric, so that Kubernetes' runAsNonRoot can verify it
    assert config["User"] == f"{UID}:{UID}"
    assert config["Entrypoint"][-1].startswith("restik")
    assert config["Cmd"] == ["--help"]
    labels = config["Labels"]
    for key in ("title", "description", "source", "licenses", "version"):
        assert labels[f"org.opencontainers.image.{key}"], key
    assert labels["org.opencontainers.image.version"] == __version__
    env = dict(e.split("=", 1) for e in config["Env"])
    assert env["PYTHONDONTWRITEBYTECODE"] == "1"
    assert env["PYTHONUNBUFFERED"] == "1"


def test_no_caches_left(image):
    script = (
        'test -z "$(ls -A /var/lib/apt/lists)" && test ! -e /src && test -x /opt/restik/bin/restik'
        " && test -z \"$(find /opt/restik -name 'setuptools' -maxdepth 4)\""
    )
    build_image("--no-build", "--entrypoint", "sh", "--", "-c", script)


def test_controller_in_the_image_reconciles_against_an_api_server(image, emulator, tmp_path):
    """`restik run --once` from the image (host network) against the emulator on loopback:
    the packaged CRD and templates are found, and the sidecar is injected."""

    emulator.create({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NS}})
    emulator.create(workload())
    kubeconfig = emulator.write_kubeconfig(tmp_path / "kubeconfig").read_text()
    script = 'printf "%s" "$0" > /tmp/kc && restik run --once --kubeconfig /tmp/kc'
    build_image("--no-build", "--entrypoint", "sh", "--", "-c", script, kubeconfig)
    assert emulator.get(
        "apiextensions.k8s.io/v1", "customresourcedefinitions", "backups.backup.appscode.com"
    )
    emulator.create(backup())
    build_image("--no-build", "--entrypoint", "sh", "--", "-c", script, kubeconfig)
    assert containers(get(emulator, "Deployment")) == ["app", "restik"]
