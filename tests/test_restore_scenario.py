"""The issue's "done means", tried as a new user would: the emulator as a cluster (workload
controllers, kubelets) with restik's controller and real restic.

The emulator runs no containers, so this test plays the kubelet for restik's two
containers: a pod's data volume is a directory per pod, its backups are restik's own backup
Job run as that pod's host, and where a pod (or the restore Job) carries `restik
restore-run`, the test runs exactly the arguments of that container as a process, with the
pod's environment and its volume's directory as the target."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from reconciler.api.backup import parse_backup
from reconciler.api.constants import CONFIG_LABEL, RESTORE_CONTAINER, RESTORED_ANNOTATION
from reconciler.controller.cycle import Controller
from reconciler.controller.options import Settings
from reconciler.kube.client import Kube
from reconciler.kube.events import rfc3339
from reconciler.resources import crd_manifest, restore_crd_manifest
from sidecar.job import Job
from sidecar.restic import Context
from sidecar.runner import Runner
from tests.emulator import Emulator
from tests.factories import PASSWORD, REPO, RESTIC, base_env, copy_template, needs_restic

pytestmark = [pytest.mark.slow, needs_restic]
NS = "data"
API = "backup.appscode.com/v1beta1"


def pod_files(ordinal: int) -> dict[str, tuple[bytes, int, int]]:
    """Each pod's own data: path -> (bytes, uid, mode); directories too (bytes None)."""
    return {
        "PG_VERSION": (b"16\n", 999, 0o600),
        f"base/{ordinal}/table": (os.urandom(50_000 + ordinal), 999, 0o600),
        "sub/shared.conf": (f"ordinal = {ordinal}\n".encode(), 1234, 0o640),
        "sub/run.sh": (b"#!/bin/sh\n", 0, 0o755),
    }


def write_files(root: Path, files: dict) -> None:
    if root.exists():
        shutil.rmtree(root)
    root.mkdir(parents=True)
    for rel, (data, uid, mode) in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        os.chown(path, uid, uid)
        os.chmod(path, mode)
    os.chown(root / "sub", 1234, 1234)
    os.chmod(root / "sub", 0o750)


def snapshot_of(root: Path) -> dict:
    """Every file and directory below root: bytes (files), owner, group and mode."""
    out = {}
    for path in sorted(root.rglob("*")):
        st = path.lstat()
        data = path.read_bytes() if path.is_file() else None
        out[str(path.relative_to(root))] = (data, st.st_uid, st.st_gid, st.st_mode)
    return out


class Scene:
    def __init__(self, emu: Emulator, tmp: Path):
        self.emu, self.tmp = emu, tmp
        self.kubeconfig = emu.write_kubeconfig(tmp / "kubeconfig")
        self.kube = Kube.connect(str(self.kubeconfig))
        self.controller = Controller(self.kube, Settings(sidecar_image="restik:test"))
        self.live = tmp / "live"  # the Backup's path: each pod's volume in turn
        self.repo = copy_template(tmp / "repo")
        self.ran: set[str] = set()  # pod (or Job) uids whose restore-run ran

    def backup_raw(self) -> dict:
        return {
            "apiVersion": API,
            "kind": "Backup",
            "metadata": {"name": "db", "namespace": NS},
            "spec": {
                "schedule": "@daily",
                "backupSource": {"volumeName": "data", "path": str(self.live)},
                "destination": {"repositorySecretName": "db-restic", "repository": str(self.repo)},
            },
        }

    def back_up(self, host: str, files: dict) -> None:
        """restik's own backup run (sidecar/job.py) for ``host``, its data at the path."""
        write_files(self.live, files)
        cache = self.tmp / "cache"
        cache.mkdir(exist_ok=True)
        runner = Runner(base_env(PASSWORD, TMPDIR=str(self.tmp)), stop_timeout=20)
        ctx = Context(host=host, cache_dir=str(cache), restic=RESTIC)
        outcome = Job(parse_backup(self.backup_raw()), ctx, runner).run()
        assert outcome.success, outcome.message

    def cycle(self, times: int = 1) -> None:
        for _ in range(times):
            self.controller.cycle()
            self.emu.settle(30)

    def run_executors(self, volume_of) -> list[int]:
        """Play the kubelet: run each new pod's (and Job's) restore-run as a process."""
        codes = []
        for obj, name, node in self._executors():
            uid = obj["metadata"]["uid"]
            if uid in self.ran:
                continue
            self.ran.add(uid)
            if obj["kind"] == "Job":
                containers = obj["spec"]["template"]["spec"]["containers"]
            else:
                inits = obj["spec"].get("initContainers") or []
                containers = [c for c in inits if c["name"] == RESTORE_CONTAINER]
            [container] = containers
            args = list(container["args"])
            target = volume_of(name)
            args[args.index("--target") + 1] = str(target)
            env = base_env(
                PASSWORD,
                POD_NAME=name,
                POD_NAMESPACE=NS,
                NODE_NAME=node,
                RESTIC_CACHE_DIR=str(self.tmp / f"cache-{name}"),
                PYTHONPATH=str(REPO),
            )
            proc = subprocess.run(
                [sys.executable, "-m", "reconciler.cli", *args, "--kubeconfig",
                 str(self.kubeconfig), "--restic", RESTIC, "--progress-interval", "1s"],
                env=env, capture_output=True, text=True, timeout=300, cwd=REPO,
            )  # fmt: skip
            assert PASSWORD not in proc.stdout + proc.stderr
            codes.append(proc.returncode)
            assert proc.returncode == 0, proc.stderr[-3000:]
        return codes

    def _executors(self):
        for pod in self.emu.list("v1", "pods", NS):
            inits = pod["spec"].get("initContainers") or []
            if any(c["name"] == RESTORE_CONTAINER for c in inits):
                yield pod, pod["metadata"]["name"], pod["spec"].get("nodeName", "")
        for job in self.emu.list("batch/v1", "jobs", NS):
            yield job, job["metadata"]["name"], "node-1"

    def restore(self, name: str) -> dict:
        return self.emu.get(API, "restores", name, NS)

    def kubectl_apply(self, manifest: str) -> str:
        proc = subprocess.run(
            ["kubectl", "--kubeconfig", str(self.kubeconfig), "apply", "--validate=false",
             "-f", "-"],
            input=manifest, capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        assert proc.returncode == 0, proc.stderr
        return proc.stdout

    def restik(self, *args: str) -> str:
        proc = subprocess.run(
            [sys.executable, "-m", "reconciler.cli", *args, "--kubeconfig", str(self.kubeconfig)],
            capture_output=True, text=True, timeout=60, cwd=REPO,
        )  # fmt: skip
        assert proc.returncode == 0, proc.stderr
        return proc.stdout


@pytest.fixture
def scene(tmp_path):
    with Emulator(cluster=True, ready_delay=0.05) as emu:
        emu.create(crd_manifest())
        emu.create(restore_crd_manifest())
        emu.create({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NS}})
        emu.create({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "db-restic",
                    "namespace": NS}, "stringData": {"password": PASSWORD}})  # fmt: skip
        yield Scene(emu, tmp_path)


def statefulset() -> dict:
    labels = {"app": "db"}
    return {
        "apiVersion": "apps/v1",
        "kind": "StatefulSet",
        "metadata": {"name": "db", "namespace": NS, "labels": {**labels, CONFIG_LABEL: "db"}},
        "spec": {
            "replicas": 3,
            "serviceName": "db",
            "selector": {"matchLabels": labels},
            "template": {
                "metadata": {"labels": labels},
                "spec": {
                    "containers": [{"name": "pg", "image": "postgres:16", "volumeMounts": [
                        {"name": "data", "mountPath": "/var/lib/pg"}]}],
                },
            },
            "volumeClaimTemplates": [{"metadata": {"name": "data"}, "spec": {
                "accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}}}],
        },
    }  # fmt: skip


def test_a_statefulset_gets_each_pods_data_back_and_a_claim_its_past(scene):
    emu, tmp = scene.emu, scene.tmp
    emu.create(scene.backup_raw())
    emu.create(statefulset())
    scene.cycle(3)  # the sidecar goes in; the StatefulSet rolls its pods
    volumes = {f"db-{i}": tmp / "volumes" / f"db-{i}" for i in range(3)}
    data = {i: pod_files(i) for i in range(3)}
    for i in range(3):
        scene.back_up(f"db-{i}", data[i])
        write_files(volumes[f"db-{i}"], data[i])
    originals = {pod: snapshot_of(path) for pod, path in volumes.items()}
    assert originals["db-0"] != originals["db-1"]
    shutil.rmtree(volumes["db-1"])  # the disaster
    volumes["db-1"].mkdir()

    # commit a Restore (what `restik restore` prints) and let the controller carry it out
    manifest = scene.restik("restore", "db", "-n", NS, "--to", "sts/db", "--name", "db-back")
    scene.kubectl_apply(manifest)
    scene.cycle()
    template = emu.get("apps/v1", "statefulsets", "db", NS)["spec"]["template"]
    assert template["spec"]["initContainers"][0]["name"] == RESTORE_CONTAINER
    assert scene.restore("db-back")["status"]["phase"] == "Pending"
    for _ in range(10):  # the rollout: each new pod restores before it starts
        scene.run_executors(lambda pod: volumes[pod])
        scene.cycle()
        if scene.restore("db-back")["status"]["phase"] == "Succeeded":
            break
    status = scene.restore("db-back")["status"]
    assert status["phase"] == "Succeeded", status
    assert status["snapshot"] == "3 hosts"
    assert [(h["host"], h["sourceHost"], h["phase"]) for h in status["hosts"]] == [
        (f"db-{i}", f"db-{i}", "Succeeded") for i in range(3)
    ]
    for h in status["hosts"]:
        assert h["filesRestored"] >= 4 and h["bytesRestored"] > 50_000 and h["duration"]
    for pod, path in volumes.items():
        assert snapshot_of(path) == originals[pod], pod  # bytes, owners, modes
    scene.cycle(3)  # finished: the init container goes (one rollout out)
    template = emu.get("apps/v1", "statefulsets", "db", NS)["spec"]["template"]
    assert not template["spec"].get("initContainers")
    assert [c["name"] for c in template["spec"]["containers"]] == ["pg", "restik"]
    assert not any(
        c["name"] == RESTORE_CONTAINER
        for p in emu.list("v1", "pods", NS)
        for c in p["spec"].get("initContainers") or []
    )
    # re-applying the committed Restore changes nothing
    emu.clear_requests()
    assert "unchanged" in scene.kubectl_apply(manifest)
    scene.cycle()
    assert [(r.method, r.path) for r in emu.writes()] == []
    assert scene.run_executors(lambda pod: volumes[pod]) == []

    # the same data into a fresh claim through a Job: db-0's past, only sub/
    past = datetime.now(UTC).replace(microsecond=0) + timedelta(seconds=1)
    time.sleep(max(0.0, (past - datetime.now(UTC)).total_seconds()) + 1.1)
    newer = dict(data[0])
    newer["sub/shared.conf"] = (b"ordinal = changed later\n", 1234, 0o640)
    scene.back_up("db-0", newer)
    emu.create({"apiVersion": "v1", "kind": "PersistentVolumeClaim",
                "metadata": {"name": "db-copy", "namespace": NS},
                "spec": {"accessModes": ["ReadWriteOnce"],
                         "resources": {"requests": {"storage": "1Gi"}}}})  # fmt: skip
    manifest = scene.restik(
        "restore", "db", "-n", NS, "--to", "pvc/db-copy", "--name", "copy",
        "--as-of", rfc3339(past), "--include", "sub", "--host", "db-copy=db-0",
    )  # fmt: skip
    scene.kubectl_apply(manifest)
    scene.cycle()
    [job] = emu.list("batch/v1", "jobs", NS)
    claim_dir = tmp / "volumes" / "db-copy"
    scene.run_executors(lambda name: claim_dir)
    status = scene.restore("copy")["status"]
    assert status["phase"] == "Succeeded", status
    restored = snapshot_of(claim_dir)
    expected = {k: v for k, v in originals["db-0"].items() if k.startswith("sub")}
    assert restored == expected  # the older sub/, owners and modes kept
    claim = emu.get("v1", "persistentvolumeclaims", "db-copy", NS)
    note = json.loads(claim["metadata"]["annotations"][RESTORED_ANNOTATION])
    assert note["restore"] == "copy" and note["snapshot"] == status["snapshot"]
    emu.clear_requests()
    scene.cycle()
    assert [(r.method, r.path) for r in emu.writes()] == []
    assert len(emu.list("batch/v1", "jobs", NS)) == 1
    assert job["metadata"]["name"] == "restik-restore-copy"
