"""The wheel: templates are package data and are found from an installed copy."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import zipfile

import pytest

from tests.factories import EXAMPLES, REPO

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("wheel")
    # Build from a copy so setuptools' build/ and *.egg-info never land in the working tree.
    src = tmp / "src"
    shutil.copytree(
        REPO,
        src,
        ignore=shutil.ignore_patterns(
            ".git", "build", "dist", "*.egg-info", "__pycache__", ".hypothesis", ".*_cache", ".venv"
        ),
    )
    build = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-w",
         str(tmp), "."],
        capture_output=True, text=True, timeout=300, cwd=src,
    )  # fmt: skip
    assert build.returncode == 0, build.stderr[-3000:]
    [wheel] = tmp.glob("restik-*.whl")
    site = tmp / "site"
    install = subprocess.run(
        [sys.executable, "-m", "pip", "install", "--no-deps", "--target", str(site), str(wheel)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert install.returncode == 0, install.stderr[-3000:]
    outside = tmp / "elsewhere"
    outside.mkdir()
    return wheel, site, outside


def run_installed(site, cwd, *args):
    env = {**os.environ, "PYTHONPATH": str(site)}
    env.pop("RESTIK_SIDECAR_IMAGE", None)
    return subprocess.run(
        [sys.executable, *args], capture_output=True, text=True, cwd=cwd, env=env, timeout=60
    )


def test_wheel_contains_the_templates(installed):
    wheel, _, _ = installed
    names = zipfile.ZipFile(wheel).namelist()
    assert "reconciler/templates/sidecar.yaml.j2" in names
    assert "reconciler/templates/volumes.yaml.j2" in names
    assert "reconciler/cli.py" in names


def test_installed_copy_finds_its_own_templates(installed):
    _, site, outside = installed
    proc = run_installed(
        site,
        outside,
        "-c",
        "import reconciler; from reconciler.controller.render import templates_dir; "
        "print(reconciler.__file__); print(templates_dir())",
    )
    assert proc.returncode == 0, proc.stderr
    module_file, templates = proc.stdout.split()
    assert module_file.startswith(str(site))
    assert templates.startswith(str(site)), templates


def test_installed_copy_runs_diff_on_the_examples(installed):
    _, site, outside = installed
    proc = run_installed(site, outside, "-m", "reconciler.cli", "diff", "-f", str(EXAMPLES))
    assert proc.returncode == 1, proc.stderr
    assert "+      - name: restik" in proc.stdout
    assert "Traceback" not in proc.stderr


def test_installed_copy_ships_the_crd(installed):
    """`restik run` creates the CRD from the installed package, not from a source tree."""
    wheel, site, outside = installed
    assert "reconciler/kustomize/crd.yaml" in zipfile.ZipFile(wheel).namelist()
    proc = run_installed(
        site,
        outside,
        "-c",
        "from reconciler.resources import crd_manifest, resource_dir; "
        "print(resource_dir('reconciler.kustomize', 'kustomize', 'crd.yaml')); "
        "print(crd_manifest()['metadata']['name'])",
    )
    assert proc.returncode == 0, proc.stderr
    where, name = proc.stdout.split()
    assert where.startswith(str(site)), where
    assert name == "backups.backup.appscode.com"
