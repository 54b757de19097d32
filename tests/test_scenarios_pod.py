"""`restik run` as a process against the emulator as a cluster, for what the rendered pod
template must survive there (issue 12 items 4 and 15): Pod Security `restricted` with a
ResourceQuota on limits admits every injected pod, and a missing Secret keeps no pod from
starting."""

from __future__ import annotations

import pytest

from reconciler.resources import crd_manifest
from tests.emulator import Emulator
from tests.emulator.cluster import is_ready
from tests.factories.cluster import NS, backup
from tests.factories.scenario import backed_up, pods_of, run_restik, sidecars, stop, workload

pytestmark = pytest.mark.slow

ENFORCE = "pod-security.kubernetes.io/enforce"
RESTRICTED_APP = {
    "runAsNonRoot": True,
    "runAsUser": 1000,
    "runAsGroup": 1000,
    "allowPrivilegeEscalation": False,
    "capabilities": {"drop": ["ALL"]},
    "seccompProfile": {"type": "RuntimeDefault"},
}


def cluster(labels: dict, secret: bool = True) -> Emulator:
    emu = Emulator(cluster=True, ready_delay=0.2)
    emu.start()
    emu.create(crd_manifest())
    emu.create(
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NS, "labels": labels}}
    )
    if secret:
        emu.create(
            {
                "apiVersion": "v1",
                "kind": "Secret",
                "metadata": {"name": "www-restic", "namespace": NS},
                "stringData": {"password": "not-a-secret"},
            }
        )
    return emu


def app(obj: dict, security: dict | None = None, limits: dict | None = None) -> dict:
    container = obj["spec"]["template"]["spec"]["containers"][0]
    container["volumeMounts"] = [{"name": "data", "mountPath": "/data"}]
    if security is not None:
        container["securityContext"] = security
    if limits is not None:
        container["resources"] = {"limits": limits}
    return obj


def test_restricted_namespace_with_a_limits_quota_runs_every_injected_pod(tmp_path):
    emu = cluster({ENFORCE: "restricted"})
    try:
        emu.create(
            {
                "apiVersion": "v1",
                "kind": "ResourceQuota",
                "metadata": {"name": "limits", "namespace": NS},
                "spec": {"hard": {"limits.cpu": "20", "limits.memory": "20Gi"}},
            }
        )
        emu.create(backup())
        limits = {"cpu": "500m", "memory": "256Mi"}
        emu.create(app(workload("Deployment"), RESTRICTED_APP, limits))
        emu.wait_for(lambda: len([p for p in pods_of(emu) if is_ready(p)]) == 3)
        proc = run_restik(emu.write_kubeconfig(tmp_path / "kubeconfig"))
        try:
            emu.wait_for(lambda: backed_up(emu, 3), timeout=40)
        finally:
            stop(proc)
        pods = pods_of(emu)
        assert all(sidecars(p["spec"]) == 1 and is_ready(p) for p in pods)
        for pod in pods:
            (sidecar,) = [c for c in pod["spec"]["containers"] if c["name"] == "restik"]
            sc = sidecar["securityContext"]
            assert (sc["runAsUser"], sc["runAsGroup"]) == (1000, 1000)  # the app's user
        # nothing was refused on the way
        refused = [
            e
            for e in emu.list("v1", "events", NS)
            if e.get("reason") in ("FailedCreate", "FailedCreatePodSandBox")
        ]
        assert refused == []
    finally:
        emu.stop()


def test_a_missing_secret_keeps_no_pod_from_starting(tmp_path):
    """The kubelet holds a pod whose container needs a missing Secret in
    CreateContainerConfigError; the sidecar's references are optional, so the application's
    pods start (and stay in its Service) and the sidecar reports the missing Secret."""
    emu = cluster({}, secret=False)
    try:
        emu.create(backup())
        emu.create(app(workload("Deployment")))
        emu.wait_for(lambda: len([p for p in pods_of(emu) if is_ready(p)]) == 3)
        proc = run_restik(emu.write_kubeconfig(tmp_path / "kubeconfig"))
        try:
            emu.wait_for(lambda: backed_up(emu, 3), timeout=40)
        finally:
            stop(proc)
        pods = pods_of(emu)
        assert all(sidecars(p["spec"]) == 1 and is_ready(p) for p in pods)
        waiting = [
            s["state"]["waiting"]["reason"]
            for p in pods
            for s in (p.get("status") or {}).get("containerStatuses") or []
            if "waiting" in s.get("state", {})
        ]
        assert "CreateContainerConfigError" not in waiting
    finally:
        emu.stop()
