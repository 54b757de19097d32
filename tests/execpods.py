"""Pods to exec into on the emulator: created with their containers running on a node, the
state a kubelet reports, so pods/exec accepts them (tests/emulator/podexec.py)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from reconciler.kube.client import Kube
from sidecar.podexec import PodExec
from tests.emulator import Emulator


def running_pod(emu: Emulator, namespace: str, name: str, *containers: str,
                running: bool = True, node: str | None = "node-1") -> dict[str, Any]:  # fmt: skip
    """Create ``namespace`` (if missing) and a pod whose containers run (or wait)."""
    if emu.get("v1", "namespaces", namespace) is None:
        emu.create({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": namespace}})
    spec: dict[str, Any] = {"containers": [{"name": c, "image": f"{c}:1"} for c in containers]}
    if node:
        spec["nodeName"] = node
    state = {"running": {"startedAt": "2026-01-01T00:00:00Z"}} if running else {
        "waiting": {"reason": "ContainerCreating"}}  # fmt: skip
    status = {
        "phase": "Running" if running else "Pending",
        "containerStatuses": [{"name": c, "ready": running, "state": state} for c in containers],
    }
    meta = {"name": name, "namespace": namespace}
    pod = {"apiVersion": "v1", "kind": "Pod", "metadata": meta, "spec": spec, "status": status}
    return emu.create(pod)


def exec_client(emu: Emulator, tmp_path: Path) -> PodExec:
    """The sidecar's exec client, configured like its Kube client (here: a kubeconfig)."""
    return PodExec.from_kube(Kube.connect(str(emu.write_kubeconfig(tmp_path / "kubeconfig"))))
