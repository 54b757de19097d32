"""Workloads and probes for the scenarios on the emulator as a cluster (controllers, kubelets)."""

from __future__ import annotations

import signal

from reconciler.api.constants import CONFIG_LABEL, SIDECAR_NAME
from tests.emulator.cluster import is_ready
from tests.factories.cluster import BACKUP_API, NS, finish, restik


def workload(kind, name="www", replicas=3, label_template=False, **spec):
    labels = {"app": name}
    tmpl_labels = dict(labels)
    if label_template:
        tmpl_labels[CONFIG_LABEL] = "www"  # kustomize commonLabels does this
    obj = {
        "apiVersion": "v1" if kind == "ReplicationController" else "apps/v1",
        "kind": kind,
        "metadata": {"name": name, "namespace": NS, "labels": {**labels, CONFIG_LABEL: "www"}},
        "spec": {
            "selector": labels if kind == "ReplicationController" else {"matchLabels": labels},
            "template": {
                "metadata": {"labels": tmpl_labels},
                "spec": {
                    "containers": [{"name": "app", "image": "nginx:1.27"}],
                    "volumes": [{"name": "data", "emptyDir": {}}],
                },
            },
            **spec,
        },
    }
    if kind == "StatefulSet":
        obj["spec"]["serviceName"] = name
    if kind != "DaemonSet":
        obj["spec"]["replicas"] = replicas
    return obj


def sidecars(pod_spec) -> int:
    return sum(1 for c in pod_spec["containers"] if c["name"] == SIDECAR_NAME)


def pods_of(emu, app="www"):
    return [
        p
        for p in emu.list("v1", "pods", NS)
        if (p["metadata"].get("labels") or {}).get("app") == app
    ]


def ready_status(emu):
    status = emu.get(BACKUP_API, "Backup", "www", NS).get("status") or {}
    ready = next((c for c in status.get("conditions") or [] if c["type"] == "Ready"), None)
    return status, ready


def backed_up(emu, replicas):
    """Every pod runs the sidecar and the Backup says Ready."""
    pods = [p for p in pods_of(emu) if not p["metadata"].get("deletionTimestamp")]
    if len(pods) != replicas or not all(sidecars(p["spec"]) == 1 and is_ready(p) for p in pods):
        return False
    _, ready = ready_status(emu)
    return ready is not None and ready["status"] == "True"


def run_restik(kubeconfig):
    return restik("run", "--interval", "2s", "--kubeconfig", str(kubeconfig))


def stop(proc):
    proc.send_signal(signal.SIGTERM)
    _, err = finish(proc)
    assert proc.returncode == 0, err
    return err
