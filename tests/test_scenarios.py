"""`restik run` as a process against the emulator as a cluster (workload controllers,
kubelets, the Eviction API): what a real cluster would see (issue 12)."""

from __future__ import annotations

import time

import pytest

from reconciler.api.constants import HASH_ANNOTATION
from reconciler.resources import crd_manifest
from tests.emulator import Emulator
from tests.emulator.cluster import is_ready
from tests.factories.cluster import NS, backup
from tests.factories.scenario import (
    backed_up,
    pods_of,
    ready_status,
    run_restik,
    sidecars,
    stop,
    workload,
)

pytestmark = pytest.mark.slow


@pytest.fixture
def emu():
    with Emulator(cluster=True, ready_delay=0.2) as emulator:
        emulator.create(crd_manifest())
        emulator.create({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NS}})
        emulator.create(
            {
                "apiVersion": "v1",
                "kind": "Secret",
                "metadata": {"name": "www-restic", "namespace": NS},
                "stringData": {"password": "not-a-secret"},
            }
        )
        yield emulator


@pytest.fixture
def kubeconfig(emu, tmp_path):
    return emu.write_kubeconfig(tmp_path / "kubeconfig")


def ready_counts(emu, start, app="www"):
    """The number of Ready, not terminating pods of ``app`` after every pod change since
    ``start`` (a snapshot: resourceVersion, pods)."""
    since, initial = start
    live = {p["metadata"]["name"]: p for p in initial}
    out = []
    for kind, pod in emu.history("v1", "Pod", since, NS):
        if (pod["metadata"].get("labels") or {}).get("app") != app:
            continue
        if kind == "DELETED":
            live.pop(pod["metadata"]["name"], None)
        else:
            live[pod["metadata"]["name"]] = pod
        out.append(
            sum(
                1
                for p in live.values()
                if is_ready(p) and not p["metadata"].get("deletionTimestamp")
            )
        )
    return out


def restik_requests(emu):
    return [r for r in emu.requests if r.user_agent.startswith("restik")]


def test_a_deployment_with_the_label_on_its_template_gets_one_sidecar_and_one_replicaset(
    emu, kubeconfig
):
    """Item 1: the Deployment's ReplicaSets inherit the opt-in label; restik must patch the
    Deployment only, or each patched ReplicaSet makes the Deployment start another."""
    emu.create(backup())
    emu.create(workload("Deployment", label_template=True))
    emu.wait_for(lambda: len([p for p in pods_of(emu) if is_ready(p)]) == 3)
    proc = run_restik(kubeconfig)
    try:
        emu.wait_for(lambda: backed_up(emu, 3), timeout=40)
        time.sleep(3)  # a few more cycles: nothing else may happen
    finally:
        stop(proc)
    dep = emu.get("apps/v1", "Deployment", "www", NS)
    assert sidecars(dep["spec"]["template"]["spec"]) == 1
    replicasets = emu.list("apps/v1", "replicasets", NS)
    assert len(replicasets) == 2  # the original, scaled down, and the one with the sidecar
    live = [rs for rs in replicasets if rs["spec"]["replicas"] > 0]
    assert len(live) == 1
    assert sidecars(live[0]["spec"]["template"]["spec"]) == 1
    assert all(sidecars(p["spec"]) == 1 for p in pods_of(emu))
    mine = restik_requests(emu)
    writes = ("create", "update", "patch", "delete")
    assert [r for r in mine if r.resource in ("replicasets", "pods") and r.verb in writes] == []
    assert [r for r in mine if r.method == "PATCH" and r.resource == "deployments"] != []
    status, ready = ready_status(emu)
    assert status["workloads"] == ["Deployment/www"]
    assert [(e["workload"], e["current"]) for e in status["rollout"]] == [("Deployment/www", True)]
    assert "label the Deployment, not its ReplicaSet" in ready["message"]
    events = [e for e in emu.list("v1", "events", NS) if e.get("reason") == "OwnedWorkload"]
    assert events and all(e["type"] == "Warning" for e in events)


@pytest.mark.parametrize(
    ("kind", "spec", "replicas"),
    [
        ("ReplicaSet", {}, 3),
        ("ReplicationController", {}, 3),
        ("StatefulSet", {"updateStrategy": {"type": "OnDelete"}}, 3),
        ("DaemonSet", {"updateStrategy": {"type": "OnDelete"}}, 2),  # two emulated nodes
    ],
)
def test_restarts_keep_all_but_one_pod_ready(emu, kubeconfig, kind, spec, replicas):
    """Items 2 and 3: kinds that do not roll by themselves are restarted by restik, one
    eviction at a time, never below replicas - 1 Ready pods, checked at every pod change."""
    emu.create(backup())
    emu.create(workload(kind, replicas=replicas, **spec))
    emu.wait_for(lambda: len([p for p in pods_of(emu) if is_ready(p)]) == replicas)
    emu.settle()
    start = (emu.resource_version, pods_of(emu))  # settled: nothing changes in between
    proc = run_restik(kubeconfig)
    try:
        emu.wait_for(lambda: backed_up(emu, replicas), timeout=60)
    finally:
        stop(proc)
    counts = ready_counts(emu, start)
    assert counts, "no pod changed"
    assert min(counts) >= replicas - 1, counts
    mine = restik_requests(emu)
    evictions = [r for r in mine if r.subresource == "eviction"]
    assert len(evictions) == replicas
    assert all(r.status == 201 for r in evictions)
    assert [r for r in mine if r.method == "DELETE"] == []
    if kind == "StatefulSet":  # highest ordinal first, as the StatefulSet controller rolls
        assert [r.name for r in evictions] == [f"www-{i}" for i in reversed(range(replicas))]
    status, _ = ready_status(emu)
    [entry] = status["rollout"]
    assert entry["current"] is True and entry["updated"] == replicas


def test_a_disruption_budget_holds_restik_back(emu, kubeconfig):
    """Item 2: a PodDisruptionBudget that allows no disruption answers 429; restik waits
    (no error) and goes on when the budget allows it."""
    emu.create(backup())
    emu.create(workload("ReplicaSet", replicas=2))
    budget = emu.create(
        {
            "apiVersion": "policy/v1",
            "kind": "PodDisruptionBudget",
            "metadata": {"name": "www", "namespace": NS},
            "spec": {"minAvailable": 2, "selector": {"matchLabels": {"app": "www"}}},
        }
    )
    emu.wait_for(lambda: len([p for p in pods_of(emu) if is_ready(p)]) == 2)
    proc = run_restik(kubeconfig)
    try:
        emu.wait_for(
            lambda: any(r.subresource == "eviction" and r.status == 429 for r in emu.requests),
            timeout=30,
        )
        time.sleep(1)
        assert all(sidecars(p["spec"]) == 0 for p in pods_of(emu))
        budget = emu.get("policy/v1", "PodDisruptionBudget", "www", NS)
        budget["spec"] = {"maxUnavailable": 1, "selector": budget["spec"]["selector"]}
        emu.update(budget)
        emu.wait_for(lambda: backed_up(emu, 2), timeout=60)
    finally:
        err = stop(proc)
    assert "PodDisruptionBudget" in err
    assert "errors=0" in err and "Traceback" not in err


def test_paused_deployment_and_partitioned_statefulset_are_pending(emu, kubeconfig):
    """Item 3: the template gets the sidecar but the pods do not: Ready says so."""
    emu.create(backup())
    emu.create(workload("Deployment"))
    part = {"type": "RollingUpdate", "rollingUpdate": {"partition": 2}}
    emu.create(workload("StatefulSet", name="db", updateStrategy=part))
    emu.wait_for(lambda: len([p for p in emu.list("v1", "pods", NS) if is_ready(p)]) == 6)
    dep = emu.get("apps/v1", "Deployment", "www", NS)
    dep["spec"]["paused"] = True
    emu.update(dep)
    proc = run_restik(kubeconfig)
    try:

        def pending():
            status, ready = ready_status(emu)
            if not ready or ready["reason"] != "Pending":
                return None
            if len(status.get("rollout") or []) != 2:
                return None
            return status, ready

        status, ready = emu.wait_for(pending, timeout=40)
    finally:
        stop(proc)
    assert ready["status"] == "False"
    assert "Deployment/www: paused" in ready["message"]
    assert "StatefulSet/db: partition 2" in ready["message"]
    by_name = {e["workload"]: e for e in status["rollout"]}
    assert by_name["Deployment/www"]["state"] == "Pending"
    assert by_name["StatefulSet/db"]["state"] == "Pending"
    assert by_name["StatefulSet/db"]["updated"] == 1
    dep = emu.get("apps/v1", "Deployment", "www", NS)
    assert HASH_ANNOTATION in dep["spec"]["template"]["metadata"]["annotations"]
