"""Objects and processes for the tests that run restik against the API emulator: a Backup
and workloads in namespace "web", the requests restik made, `restik` as a process."""

from __future__ import annotations

import copy
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from reconciler.api.constants import CONFIG_LABEL

NS = "web"


BACKUP_API = "backup.appscode.com/v1beta1"


LISTS = [
    ("GET", "/apis/backup.appscode.com/v1beta1/backups"),
    ("GET", "/apis/apps/v1/deployments"),
    ("GET", "/apis/apps/v1/statefulsets"),
    ("GET", "/apis/apps/v1/daemonsets"),
    ("GET", "/apis/apps/v1/replicasets"),
    ("GET", "/api/v1/replicationcontrollers"),
    ("GET", "/apis/rbac.authorization.k8s.io/v1/rolebindings"),
    ("GET", "/apis/rbac.authorization.k8s.io/v1/roles"),
    ("GET", "/apis/backup.appscode.com/v1beta1/restores"),  # after the writes (Restores)
]


def backup(name="www", path="/var/www", volume="data", **spec):
    body = {
        "schedule": "@hourly",
        "backupSource": {"volumeName": volume, "path": path},
        "destination": {"repositorySecretName": "www-restic", "repository": "s3:http://s3/b"},
    }
    body.update(spec)
    return {
        "apiVersion": BACKUP_API,
        "kind": "Backup",
        "metadata": {"name": name, "namespace": NS},
        "spec": body,
    }


def workload(kind="Deployment", name="www", label="www", sa=None):
    api = "v1" if kind == "ReplicationController" else "apps/v1"
    pod_spec = {
        "containers": [{"name": "app", "image": "nginx"}],
        "volumes": [{"name": "data", "emptyDir": {}}],
    }
    if sa:
        pod_spec["serviceAccountName"] = sa
    labels = {"app": name}
    if label:
        labels[CONFIG_LABEL] = label
    selector = {"app": name} if kind == "ReplicationController" else {"matchLabels": {"app": name}}
    spec = {
        "selector": selector,
        "template": {"metadata": {"labels": {"app": name}}, "spec": pod_spec},
    }
    if kind == "StatefulSet":
        spec["serviceName"] = name
    return {
        "apiVersion": api,
        "kind": kind,
        "metadata": {"name": name, "namespace": NS, "labels": labels},
        "spec": spec,
    }


def owned_pod(owner: dict, name: str, ready: bool = True) -> dict:
    """A pod as ``owner`` (a ReplicaSet) would create it from its current template, Running
    and (by default) Ready, as a kubelet would report it."""
    meta = owner["metadata"]
    annotations = (owner["spec"]["template"]["metadata"]).get("annotations")
    condition = {"type": "Ready", "status": "True" if ready else "False"}
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": name,
            "namespace": meta["namespace"],
            "labels": dict(owner["spec"]["template"]["metadata"]["labels"]),
            "ownerReferences": [
                {
                    "apiVersion": "apps/v1",
                    "kind": "ReplicaSet",
                    "name": meta["name"],
                    "uid": meta["uid"],
                    "controller": True,
                }
            ],
            **({"annotations": dict(annotations)} if annotations else {}),
        },
        "spec": copy.deepcopy(owner["spec"]["template"]["spec"]),
        "status": {"phase": "Running", "conditions": [condition]},
    }


def rolled_out(emu, kind, name="www", replicas=1):
    """The status a workload controller writes once every pod runs the current template (the
    emulator without cluster=True has no controllers)."""
    obj = get(emu, kind, name)
    generation = obj["metadata"].get("generation", 1)
    if kind == "DaemonSet":
        counts = ("desiredNumberScheduled", "currentNumberScheduled", "updatedNumberScheduled",
                  "numberReady", "numberAvailable")  # fmt: skip
    else:
        counts = ("replicas", "updatedReplicas", "readyReplicas", "availableReplicas")
    obj["status"] = {"observedGeneration": generation, **dict.fromkeys(counts, replicas)}
    emu.update(obj, subresource="status")


def calls(emu):
    return [(r.method, r.path) for r in emu.requests]


def writes(emu):
    return [(r.method, r.path) for r in emu.writes()]


def get(emu, kind, name="www"):
    api = {"ReplicationController": "v1", "Backup": BACKUP_API}.get(kind, "apps/v1")
    return emu.get(api, kind, name, NS)


def containers(obj):
    return [c["name"] for c in obj["spec"]["template"]["spec"]["containers"]]


ROOT = str(Path(__file__).resolve().parents[2])


def restik(*args, env=None):
    """Start `restik ARGS`; output goes to files, so a chatty process never blocks on a pipe."""
    full_env = {**os.environ, "PYTHONPATH": ROOT}
    full_env.pop("POD_NAMESPACE", None)
    full_env.update(env or {})
    out, err = tempfile.TemporaryFile("w+"), tempfile.TemporaryFile("w+")
    proc = subprocess.Popen(
        [sys.executable, "-m", "reconciler.cli", *args],
        cwd=ROOT,
        env=full_env,
        stdout=out,
        stderr=err,
        text=True,
    )
    proc.output = (out, err)
    return proc


def finish(proc, timeout=60):
    """Wait for ``proc``; (stdout, stderr) as text."""
    proc.wait(timeout=timeout)
    texts = []
    for f in proc.output:
        f.seek(0)
        texts.append(f.read())
        f.close()
    return tuple(texts)


def wait_for(predicate, timeout=10.0, step=0.05):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(step)
    raise AssertionError("condition not met in time")
