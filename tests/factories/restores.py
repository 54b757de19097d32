"""The Restore executor's test site (tests/test_restore_run.py, tests/test_restore_latest.py):
the emulator with both CRDs, a claim, a Backup of a local directory into a real repository,
and the executor run against them."""

from __future__ import annotations

import json
import shutil

from reconciler.kube.client import Kube
from reconciler.resources import crd_manifest, restore_crd_manifest
from sidecar.restore import Executor
from sidecar.restore_options import RestoreSettings
from tests.factories import PASSWORD, RESTIC, backup_object, base_env, copy_template, restic

NS = "web"
API = "backup.appscode.com/v1beta1"


def restore_raw(name="r1", *, target=None, **spec) -> dict:
    return {
        "apiVersion": API,
        "kind": "Restore",
        "metadata": {"name": name, "namespace": NS},
        "spec": {
            "backup": "www",
            "target": target or {"pvc": {"claimName": "copy"}},
            **spec,
        },
    }


def restore_site(emulator, tmp_path):
    """The emulator with both CRDs, a namespace, a claim, a Backup of /…/data into a local
    repository with snapshots of two hosts, and a way to run the executor."""
    emulator.create(crd_manifest())
    emulator.create(restore_crd_manifest())
    emulator.create({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NS}})
    emulator.create({"apiVersion": "v1", "kind": "PersistentVolumeClaim",
                     "metadata": {"name": "copy", "namespace": NS},
                     "spec": {"accessModes": ["ReadWriteOnce"],
                              "resources": {"requests": {"storage": "1Gi"}}}})  # fmt: skip
    kubeconfig = emulator.write_kubeconfig(tmp_path / "kubeconfig")
    src = tmp_path / "data"
    repo = copy_template(tmp_path / "repo")

    class Site:
        def __init__(self):
            self.emu, self.src, self.repo, self.tmp = emulator, src, repo, tmp_path

        def backup_object(self):
            return emulator.create(backup_object(str(src), str(repo), name="www", namespace=NS))

        def snapshot(self, host: str, files: dict[str, bytes], when: str) -> str:
            """Replace the source's contents and back them up as ``host`` at ``when``."""
            if src.exists():
                shutil.rmtree(src)
            src.mkdir()
            for rel, data in files.items():
                path = src / rel
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_bytes(data)
            restic(str(repo), "backup", "--host", host, "--time", when, str(src))
            out = restic(str(repo), "snapshots", "--json", "--host", host).stdout
            return sorted(json.loads(out), key=lambda s: s["time"])[-1]["id"]

        def restore(self, **spec):
            raw = restore_raw(**spec)
            return emulator.create(raw)

        def executor(self, *, target=None, password=PASSWORD, restic_bin=RESTIC, name="r1",
                     workload=None, pod=None, **env) -> Executor:  # fmt: skip
            settings = RestoreSettings(
                restore=name, namespace=NS, target=str(target) if target else None,
                workload=workload, host=None, kubeconfig=str(kubeconfig), restic=restic_bin,
                cache_dir=str(tmp_path / "cache"), progress_interval=0.0, wait_interval=0.2,
                lease_duration=10, log_level="debug", log_format="text",
            )  # fmt: skip
            full = base_env(password, **env)
            if pod:
                full["POD_NAME"] = pod
            return Executor(settings, Kube.connect(str(kubeconfig)), env=full)

        def get(self, name="r1"):
            return emulator.get(API, "restores", name, NS)

        def events(self, name="r1"):
            return [
                (e["reason"], e["type"], e["message"])
                for e in emulator.list("v1", "events", NS)
                if e["involvedObject"]["kind"] == "Restore" and e["involvedObject"]["name"] == name
            ]

    return Site()
