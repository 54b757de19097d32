"""GitOps: build-time injection matches the controller, so Argo CD / Flux see no drift."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from reconciler.api.constants import HASH_ANNOTATION, WORKLOAD_KINDS
from reconciler.controller.cycle import Controller
from reconciler.controller.options import Settings
from reconciler.kube.client import Kube
from reconciler.resources import crd_manifests
from tests.factories import load_all, run_cli

ROOT = Path(__file__).resolve().parent.parent
GITOPS = ROOT / "examples" / "gitops"
RENDERED = GITOPS / "rendered" / "shop.yaml"


def kustomize(path: Path) -> str:
    proc = subprocess.run(
        ["kubectl", "kustomize", str(path)], capture_output=True, text=True, check=True
    )
    return proc.stdout


def test_rendered_manifests_in_git_are_current():
    """What the pipe form builds today is byte-for-byte what git holds."""
    code, out, err = run_cli(["inject", "-f", "-"], kustomize(GITOPS / "app"))
    assert code == 0, err
    assert out == RENDERED.read_text()
    code, out, _ = run_cli(["diff", "-f", str(GITOPS / "rendered")])
    assert (code, out) == (0, "")


def test_build_time_kustomization_uses_the_krm_function_config():
    text = (GITOPS / "build-time" / "restik.yaml").read_text()
    fn = load_all(text)[0]
    assert "exec" in fn["metadata"]["annotations"]["config.kubernetes.io/function"]
    assert os.access(GITOPS / "build-time" / "restik-inject", os.X_OK)
    # what kustomize would hand the function: a ResourceList of the app's objects
    items = load_all(kustomize(GITOPS / "app"))
    rl = {
        "apiVersion": "config.kubernetes.io/v1",
        "kind": "ResourceList",
        "items": items,
        "functionConfig": fn,
    }
    code, out, err = run_cli(["inject"], json.dumps(rl))
    assert code == 0, err
    result = load_all(out)[0]
    assert result["kind"] == "ResourceList"
    rendered = {(o["kind"], o["metadata"]["name"]): o for o in load_all(RENDERED.read_text())}
    for item in result["items"]:
        assert item == rendered[(item["kind"], item["metadata"]["name"])]


def test_stale_hash_in_git_is_reported_by_diff(tmp_path):
    stale = RENDERED.read_text().replace(f"{HASH_ANNOTATION}: ", f"{HASH_ANNOTATION}: 0000", 1)
    (tmp_path / "shop.yaml").write_text(stale)
    code, out, _ = run_cli(["diff", "-f", str(tmp_path)])
    assert code == 1
    assert "-        backup.appscode.com/config-hash: 0000" in out


def test_controller_makes_no_patch_on_build_time_injected_workloads(emulator, kubeconfig):
    for crd in crd_manifests():  # as the install applies them
        emulator.create(crd)
    emulator.create({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "shop"}})
    objects = load_all(RENDERED.read_text())
    for obj in objects:
        emulator.create(obj)
    controller = Controller(Kube.connect(str(kubeconfig)), Settings())
    controller.cycle()
    workload_plurals = {plural for _, plural in WORKLOAD_KINDS.values()}
    patched = [r for r in emulator.writes() if r.resource in workload_plurals]
    assert patched == []
    # the first cycle only writes what the controller owns outside git: status, the sidecars'
    # Roles and RoleBindings, an Event (the shop's workloads run as the default ServiceAccount)
    assert {r.resource for r in emulator.writes()} <= {"backups", "roles", "rolebindings", "events"}
    emulator.clear_requests()
    controller.cycle()
    assert emulator.writes() == []


@pytest.mark.parametrize("image", ["restik:other"])
def test_a_different_image_is_drift(image):
    """The image is in the hash: build-time and controller images must agree."""
    code, _, _ = run_cli(["diff", "--image", image, "-f", str(GITOPS / "rendered")])
    assert code == 1


def standalone_kustomize() -> str:
    """The standalone kustomize (.ci/install-trixie kustomize installs it); required in CI."""
    path = shutil.which("kustomize")
    if path is None:
        if os.environ.get("CI"):
            pytest.fail("standalone kustomize is missing: run .ci/install-trixie kustomize")
        pytest.skip("standalone kustomize is not installed (.ci/install-trixie kustomize)")
    return path


def kustomize_build_with_exec(path: Path) -> subprocess.CompletedProcess:
    """`kustomize build --enable-exec PATH` with this Python's `restik` first on PATH."""
    bin_dir = Path(sys.executable).parent
    env = {**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}"}
    build = [standalone_kustomize(), "build", "--enable-alpha-plugins", "--enable-exec"]
    return subprocess.run([*build, str(path)], capture_output=True, text=True, env=env, timeout=120)


@pytest.mark.slow
def test_kustomize_build_runs_the_krm_function_end_to_end(tmp_path):
    """Real `kustomize build --enable-exec` runs `restik inject`; the output is in sync."""
    proc = kustomize_build_with_exec(GITOPS / "build-time")
    assert proc.returncode == 0, proc.stderr
    built = load_all(proc.stdout)
    rendered = {(o["kind"], o["metadata"]["name"]): o for o in load_all(RENDERED.read_text())}
    assert {(o["kind"], o["metadata"]["name"]) for o in built} == set(rendered)
    for obj in built:
        assert obj == rendered[(obj["kind"], obj["metadata"]["name"])]
    assert any(HASH_ANNOTATION in json.dumps(o) for o in built)
    out = tmp_path / "built.yaml"
    out.write_text(proc.stdout)
    code, diff, err = run_cli(["diff", "-f", str(out)])
    assert (code, diff) == (0, ""), err


BROKEN_APP = """\
apiVersion: apps/v1
kind: Deployment
metadata: {name: web, namespace: shop, labels: {backup.appscode.com/config: www}}
spec:
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec:
      containers: [{name: web, image: nginx}]
      volumes: [{name: data, emptyDir: {}}]
---
apiVersion: backup.appscode.com/v1beta1
kind: Backup
metadata: {name: www, namespace: shop}
spec:
  schedule: "61 * * * *"
  backupSource: {volumeName: data, path: /data}
  destination: {repositorySecretName: www-restic, repository: "s3:http://minio/b"}
"""


def test_krm_function_failure_fails_the_build(tmp_path):
    """An invalid Backup makes the function fail, so kustomize build fails: nothing half-built."""
    app = tmp_path / "app"
    app.mkdir()
    (app / "app.yaml").write_text(BROKEN_APP)
    (app / "kustomization.yaml").write_text("resources:\n- app.yaml\n")
    shutil.copytree(GITOPS / "build-time", tmp_path / "build-time")
    proc = kustomize_build_with_exec(tmp_path / "build-time")
    assert proc.returncode != 0
    assert proc.stdout == ""
    assert "spec.schedule" in proc.stderr
