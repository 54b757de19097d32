"""The emulator as a cluster (Emulator(cluster=True)): workload controllers, kubelets,
admission, the Eviction API, the bounded watch cache and the Table format, over real HTTP."""

from __future__ import annotations

import copy
import json
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests

from tests.emulator import Emulator
from tests.emulator.cluster import is_ready

ROOT = Path(__file__).resolve().parent.parent
OPT_IN = "backup.appscode.com/config"
HASH = "backup.appscode.com/config-hash"


@pytest.fixture
def emu():
    with Emulator(cluster=True) as emulator:
        yield emulator


def get(emu, path, **params):
    resp = requests.get(emu.url + path, params=params, timeout=5)
    resp.raise_for_status()
    return resp.json()


def template(app, image="nginx:1.25", **spec):
    return {
        "metadata": {"labels": {"app": app}},
        "spec": {"containers": [{"name": "app", "image": image}], **spec},
    }


def workload(kind, name="www", replicas=3, ns="default", **spec):
    obj = {
        "apiVersion": "v1" if kind == "ReplicationController" else "apps/v1",
        "kind": kind,
        "metadata": {"name": name, "namespace": ns},
        "spec": {"template": template(name), **spec},
    }
    if kind == "ReplicationController":
        obj["spec"]["selector"] = {"app": name}
    else:
        obj["spec"]["selector"] = {"matchLabels": {"app": name}}
    if kind != "DaemonSet":
        obj["spec"]["replicas"] = replicas
    return obj


def pods(emu, ns="default", **labels):
    selector = ",".join(f"{k}={v}" for k, v in labels.items())
    return get(emu, f"/api/v1/namespaces/{ns}/pods", labelSelector=selector)["items"]


def set_image(emu, kind, name, image, ns="default"):
    api = "v1" if kind == "ReplicationController" else "apps/v1"
    patch = {"spec": {"template": {"spec": {"containers": [{"name": "app", "image": image}]}}}}
    emu.patch(api, kind, name, patch, ns, content_type="application/strategic-merge-patch+json")


def snapshot(emu, selector):
    """(resourceVersion, pods matching selector): where pod_timeline starts."""
    rv = emu.resource_version
    return rv, [p for p in emu.list("v1", "Pod") if _selected(p, selector)]


def _selected(pod, selector):
    labels = pod["metadata"].get("labels") or {}
    return all(labels.get(k) == v for k, v in selector.items())


def pod_timeline(emu, start, selector):
    """Replays the pod changes after a snapshot: one (pods, ready pods) pair per change of
    the pods matching selector (a dict of labels), each pod as (name, image)."""
    since_rv, initial = start
    live = {p["metadata"]["name"]: p for p in initial}
    out = []
    for kind, pod in emu.history("v1", "Pod", since_rv):
        if not _selected(pod, selector):
            continue
        if kind == "DELETED":
            live.pop(pod["metadata"]["name"], None)
        else:
            live[pod["metadata"]["name"]] = pod
        out.append(
            (
                {(n, p["spec"]["containers"][0]["image"]) for n, p in live.items()},
                {(n, p["spec"]["containers"][0]["image"]) for n, p in live.items() if is_ready(p)},
            )
        )
    return out


def images(emu, app):
    return sorted(p["spec"]["containers"][0]["image"] for p in pods(emu, app=app))


# -- Deployments ---------------------------------------------------------------------------------


def test_deployment_makes_a_replicaset_that_copies_the_template_labels(emu):
    dep = workload("Deployment", replicas=2)
    dep["spec"]["template"]["metadata"]["labels"][OPT_IN] = "www"  # e.g. kustomize commonLabels
    dep["spec"]["template"]["metadata"]["annotations"] = {HASH: "abc"}
    emu.create(dep)
    emu.settle()
    uid = emu.get("apps/v1", "Deployment", "www")["metadata"]["uid"]
    [rs] = get(emu, "/apis/apps/v1/namespaces/default/replicasets")["items"]
    pod_hash = rs["metadata"]["labels"]["pod-template-hash"]
    assert rs["metadata"]["name"] == f"www-{pod_hash}"
    assert rs["metadata"]["labels"] == {"app": "www", OPT_IN: "www", "pod-template-hash": pod_hash}
    assert rs["spec"]["selector"]["matchLabels"] == {"app": "www", "pod-template-hash": pod_hash}
    assert rs["spec"]["template"]["metadata"]["labels"]["pod-template-hash"] == pod_hash
    assert rs["metadata"]["ownerReferences"] == [
        {"apiVersion": "apps/v1", "kind": "Deployment", "name": "www", "uid": uid,
         "controller": True, "blockOwnerDeletion": True}
    ]  # fmt: skip
    assert rs["metadata"]["annotations"]["deployment.kubernetes.io/revision"] == "1"
    assert rs["status"] == {"replicas": 2, "fullyLabeledReplicas": 2, "readyReplicas": 2,
                            "availableReplicas": 2, "observedGeneration": 1}  # fmt: skip
    running = pods(emu, app="www")
    assert len(running) == 2
    for pod in running:
        assert pod["metadata"]["name"].startswith(f"www-{pod_hash}-")
        assert len(pod["metadata"]["name"]) == len(f"www-{pod_hash}-") + 5
        assert pod["metadata"]["ownerReferences"][0]["uid"] == rs["metadata"]["uid"]
        assert pod["metadata"]["labels"][OPT_IN] == "www"
        assert pod["metadata"]["annotations"] == {HASH: "abc"}
        assert pod["spec"]["nodeName"] in ("node-1", "node-2")
        assert pod["status"]["phase"] == "Running"
    dep = get(emu, "/apis/apps/v1/namespaces/default/deployments/www")
    status = dep["status"]
    assert dep["metadata"]["annotations"]["deployment.kubernetes.io/revision"] == "1"
    assert {k: status[k] for k in ("observedGeneration", "replicas", "updatedReplicas",
            "readyReplicas", "availableReplicas")} == {"observedGeneration": 1, "replicas": 2,
            "updatedReplicas": 2, "readyReplicas": 2, "availableReplicas": 2}  # fmt: skip
    assert "unavailableReplicas" not in status  # omitempty, as the real status
    conds = {c["type"]: c["reason"] for c in status["conditions"]}
    assert conds == {
        "Available": "MinimumReplicasAvailable",
        "Progressing": "NewReplicaSetAvailable",
    }


@pytest.mark.parametrize(
    ("replicas", "surge", "unavailable", "max_pods", "min_ready"),
    [(4, None, None, 5, 3), (4, 0, 1, 4, 3), (3, 2, 0, 5, 3), (5, "40%", "40%", 7, 3)],
)
def test_rolling_update_honours_max_surge_and_max_unavailable(
    emu, replicas, surge, unavailable, max_pods, min_ready
):
    rolling = {
        k: v for k, v in (("maxSurge", surge), ("maxUnavailable", unavailable)) if v is not None
    }
    strategy = {"type": "RollingUpdate", "rollingUpdate": rolling}
    emu.create(workload("Deployment", replicas=replicas, strategy=strategy))
    emu.settle()
    since = snapshot(emu, {"app": "www"})
    set_image(emu, "Deployment", "www", "nginx:2")
    emu.settle()
    assert images(emu, "www") == ["nginx:2"] * replicas
    timeline = pod_timeline(emu, since, {"app": "www"})
    most = max(len(all_pods) for all_pods, _ in timeline)
    assert replicas <= most <= max_pods  # maxSurge
    assert min(len(ready) for _, ready in timeline) >= min_ready  # maxUnavailable
    if unavailable == 0:
        assert most > replicas  # could only go on by surging
    rss = {rs["metadata"]["name"]: rs for rs in emu.list("apps/v1", "ReplicaSet")}
    assert sorted(rs["spec"]["replicas"] for rs in rss.values()) == [0, replicas]
    status = emu.get("apps/v1", "Deployment", "www")["status"]
    assert (status["observedGeneration"], status["updatedReplicas"]) == (2, replicas)


def test_recreate_stops_every_old_pod_before_starting_new_ones(emu):
    emu.create(workload("Deployment", replicas=3, strategy={"type": "Recreate"}))
    emu.settle()
    since = snapshot(emu, {"app": "www"})
    set_image(emu, "Deployment", "www", "nginx:2")
    emu.settle()
    assert images(emu, "www") == ["nginx:2"] * 3
    for all_pods, _ in pod_timeline(emu, since, {"app": "www"}):
        assert len({image for _, image in all_pods}) <= 1  # never old and new together


def test_paused_deployment_does_not_roll_until_resumed(emu):
    emu.create(workload("Deployment", replicas=2))
    emu.settle()
    emu.patch("apps/v1", "Deployment", "www", {"spec": {"paused": True}})
    set_image(emu, "Deployment", "www", "nginx:2")
    emu.settle()
    assert images(emu, "www") == ["nginx:1.25"] * 2
    assert len(emu.list("apps/v1", "ReplicaSet")) == 1
    status = emu.get("apps/v1", "Deployment", "www")["status"]
    assert status["observedGeneration"] == 3 and "updatedReplicas" not in status
    progressing = next(c for c in status["conditions"] if c["type"] == "Progressing")
    assert (progressing["status"], progressing["reason"]) == ("Unknown", "DeploymentPaused")
    emu.patch("apps/v1", "Deployment", "www", {"spec": {"replicas": 3}})  # scaling still works
    emu.settle()
    assert images(emu, "www") == ["nginx:1.25"] * 3
    emu.patch("apps/v1", "Deployment", "www", {"spec": {"paused": False}})
    emu.settle()
    assert images(emu, "www") == ["nginx:2"] * 3
    assert emu.get("apps/v1", "Deployment", "www")["status"]["updatedReplicas"] == 3


def test_old_replicasets_are_kept_up_to_the_revision_history_limit(emu):
    emu.create(workload("Deployment", replicas=1, revisionHistoryLimit=1))
    for image in ("nginx:2", "nginx:3", "nginx:4"):
        emu.settle()
        set_image(emu, "Deployment", "www", image)
    emu.settle()
    rss = emu.list("apps/v1", "ReplicaSet")
    revisions = sorted(
        (int(rs["metadata"]["annotations"]["deployment.kubernetes.io/revision"]),
         rs["spec"]["replicas"]) for rs in rss
    )  # fmt: skip
    assert revisions == [(3, 0), (4, 1)]
    dep = emu.get("apps/v1", "Deployment", "www")
    assert dep["metadata"]["annotations"]["deployment.kubernetes.io/revision"] == "4"


def test_deleting_a_deployment_collects_its_replicasets_and_pods(emu):
    emu.create(workload("Deployment", replicas=2))
    emu.settle()
    assert requests.delete(emu.url + "/apis/apps/v1/namespaces/default/deployments/www",
                           timeout=5).status_code == 200  # fmt: skip
    emu.settle()
    assert emu.list("apps/v1", "ReplicaSet") == [] and pods(emu) == []


# -- ReplicaSets and ReplicationControllers --------------------------------------------------------


@pytest.mark.parametrize("kind", ["ReplicaSet", "ReplicationController"])
def test_replicas_are_kept_and_a_template_change_leaves_running_pods_alone(emu, kind):
    obj = workload(kind, replicas=3)
    obj["spec"]["template"]["metadata"]["annotations"] = {HASH: "one"}
    emu.create(obj)
    emu.settle()
    api = "v1" if kind == "ReplicationController" else "apps/v1"
    owner = emu.get(api, kind, "www")
    first = {p["metadata"]["name"] for p in pods(emu, app="www")}
    assert len(first) == 3
    for pod in pods(emu, app="www"):
        ref = pod["metadata"]["ownerReferences"][0]
        assert (ref["kind"], ref["uid"], ref["controller"]) == (
            kind,
            owner["metadata"]["uid"],
            True,
        )
        assert pod["metadata"]["annotations"] == {HASH: "one"}
    status = owner["status"]
    assert status == {"replicas": 3, "fullyLabeledReplicas": 3, "readyReplicas": 3,
                      "availableReplicas": 3, "observedGeneration": 1}  # fmt: skip
    emu.patch(
        api, kind, "www", {"spec": {"template": {"metadata": {"annotations": {HASH: "two"}}}}}
    )
    emu.settle()
    assert {p["metadata"]["name"] for p in pods(emu, app="www")} == first  # as in real life
    assert emu.get(api, kind, "www")["status"]["observedGeneration"] == 2
    victim = sorted(first)[0]
    emu.delete("v1", "Pod", victim)
    emu.settle()
    now_running = pods(emu, app="www")
    names = {p["metadata"]["name"] for p in now_running}
    assert len(names) == 3 and victim not in names
    [fresh] = [p for p in now_running if p["metadata"]["name"] not in first]
    assert fresh["metadata"]["annotations"] == {HASH: "two"}  # the new template
    assert is_ready(fresh)
    emu.patch(api, kind, "www", {"spec": {"replicas": 1}})
    emu.settle()
    assert len(pods(emu, app="www")) == 1
    assert emu.get(api, kind, "www")["status"]["replicas"] == 1


def test_a_pod_relabeled_out_of_the_selector_is_released_and_replaced(emu):
    emu.create(workload("ReplicaSet", replicas=1))
    emu.settle()
    [pod] = pods(emu, app="www")
    emu.patch("v1", "Pod", pod["metadata"]["name"], {"metadata": {"labels": {"app": "debug"}}})
    emu.settle()
    released = emu.get("v1", "Pod", pod["metadata"]["name"])
    assert "ownerReferences" not in released["metadata"]
    assert len(pods(emu, app="www")) == 1


# -- kubelet -------------------------------------------------------------------------------------


def test_pods_become_ready_after_the_ready_delay():
    with Emulator(cluster=True, ready_delay=0.3) as emu:
        since = emu.resource_version
        started = time.monotonic()
        emu.create({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"},
                    "spec": {"containers": [{"name": "c", "image": "busybox:1"}]}})  # fmt: skip
        emu.wait_for(lambda: is_ready(emu.get("v1", "Pod", "p")))
        assert time.monotonic() - started >= 0.3
        states = [
            [s["state"] for s in (pod.get("status") or {}).get("containerStatuses") or []]
            for _, pod in emu.history("v1", "Pod", since)
        ]
        waiting = [{"waiting": {"reason": "ContainerCreating"}}]
        assert states[:2] == [[], waiting]  # created, bound to a node, then started
        status = get(emu, "/api/v1/namespaces/default/pods/p")["status"]
        assert status["phase"] == "Running"
        assert status["containerStatuses"][0]["ready"] is True
        assert "running" in status["containerStatuses"][0]["state"]
        assert {c["type"]: c["status"] for c in status["conditions"]} == {
            "PodReadyToStartContainers": "True", "Initialized": "True", "Ready": "True",
            "ContainersReady": "True", "PodScheduled": "True"}  # fmt: skip


def test_a_broken_image_never_becomes_ready():
    with Emulator(cluster=True, broken_images={"restik:broken"}) as emu:
        emu.create(
            workload(
                "Deployment",
                replicas=2,
                strategy={
                    "type": "RollingUpdate",
                    "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0},
                },
            )
        )
        emu.settle()
        set_image(emu, "Deployment", "www", "restik:broken")
        emu.settle()
        running = pods(emu, app="www")
        broken = [p for p in running if p["spec"]["containers"][0]["image"] == "restik:broken"]
        assert len(running) == 3 and len(broken) == 1  # the rollout is stuck, as it would be
        state = broken[0]["status"]["containerStatuses"][0]
        assert state["ready"] is False and state["state"]["waiting"]["reason"] == "CrashLoopBackOff"
        assert not is_ready(broken[0])
        status = emu.get("apps/v1", "Deployment", "www")["status"]
        assert (status["availableReplicas"], status["unavailableReplicas"]) == (2, 1)


def _secret_pod(name, env=None, env_from=None):
    container = {"name": "app", "image": "nginx:1"}
    if env:
        container["env"] = env
    if env_from:
        container["envFrom"] = env_from
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name},
            "spec": {"containers": [container]}}  # fmt: skip


def _waiting(emu, name):
    def check():
        statuses = (emu.get("v1", "Pod", name).get("status") or {}).get("containerStatuses")
        if not statuses or "ContainerCreating" in json.dumps(statuses):
            return None
        return statuses[0]["state"].get("waiting") or "running"

    return emu.wait_for(check)


def test_a_missing_secret_or_key_is_create_container_config_error(emu):
    ref = {"name": "PASSWORD", "valueFrom": {"secretKeyRef": {"name": "repo", "key": "password"}}}
    emu.create(_secret_pod("no-secret", env=[ref]))
    emu.create(_secret_pod("no-secret-from", env_from=[{"secretRef": {"name": "repo"}}]))
    optional = copy.deepcopy(ref)
    optional["valueFrom"]["secretKeyRef"]["optional"] = True
    emu.create(
        _secret_pod(
            "optional", env=[optional], env_from=[{"secretRef": {"name": "repo", "optional": True}}]
        )
    )
    assert _waiting(emu, "no-secret") == {"reason": "CreateContainerConfigError",
                                          "message": 'secret "repo" not found'}  # fmt: skip
    assert _waiting(emu, "no-secret-from")["reason"] == "CreateContainerConfigError"
    assert _waiting(emu, "optional") == "running"
    pod = get(emu, "/api/v1/namespaces/default/pods/no-secret")
    assert pod["status"]["phase"] == "Pending" and not is_ready(pod)
    emu.create({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "repo"},
                "stringData": {"other": "x"}})  # fmt: skip
    emu.wait_for(lambda: is_ready(emu.get("v1", "Pod", "no-secret-from")))
    assert _waiting(emu, "no-secret") == {
        "reason": "CreateContainerConfigError",
        "message": "couldn't find key password in Secret default/repo"}  # fmt: skip
    emu.patch("v1", "Secret", "repo", {"stringData": {"password": "s3cr3t"}})
    emu.wait_for(lambda: is_ready(emu.get("v1", "Pod", "no-secret")))


# -- the Eviction API ------------------------------------------------------------------------------


def evict(emu, name, ns="default"):
    body = {"apiVersion": "policy/v1", "kind": "Eviction",
            "metadata": {"name": name, "namespace": ns}}  # fmt: skip
    return requests.post(f"{emu.url}/api/v1/namespaces/{ns}/pods/{name}/eviction", json=body,
                         timeout=5)  # fmt: skip


def pdb(name="www", app="www", **spec):
    return {"apiVersion": "policy/v1", "kind": "PodDisruptionBudget",
            "metadata": {"name": name, "namespace": "default"},
            "spec": {"selector": {"matchLabels": {"app": app}}, **spec}}  # fmt: skip


def test_eviction_deletes_the_pod_and_the_replicaset_replaces_it(emu):
    emu.create(workload("ReplicaSet", replicas=2))
    emu.settle()
    victim = pods(emu, app="www")[0]["metadata"]["name"]
    resp = evict(emu, victim)
    assert resp.status_code == 201
    assert resp.json() == {"kind": "Status", "apiVersion": "v1", "metadata": {},
                           "status": "Success", "code": 201}  # fmt: skip
    assert emu.get("v1", "Pod", victim) is None
    emu.settle()
    assert len(pods(emu, app="www")) == 2
    missing = evict(emu, "nope")
    assert (missing.status_code, missing.json()["reason"]) == (404, "NotFound")
    discovery = {r["name"]: r for r in get(emu, "/api/v1")["resources"]}
    assert discovery["pods/eviction"]["verbs"] == ["create"]
    assert discovery["pods/eviction"]["group"] == "policy"
    wrong = requests.post(f"{emu.url}/api/v1/namespaces/default/pods/{victim}/eviction",
                          json={"apiVersion": "policy/v1", "kind": "Eviction",
                                "metadata": {"name": "other"}}, timeout=5)  # fmt: skip
    assert wrong.status_code == 400


@pytest.mark.parametrize(
    ("spec", "allowed"),
    [({"minAvailable": 2}, 1), ({"minAvailable": "100%"}, 0), ({"maxUnavailable": 1}, 1),
     ({"maxUnavailable": "50%"}, 2), ({"maxUnavailable": 0}, 0)],
)  # fmt: skip
def test_eviction_honours_the_disruption_budget(emu, spec, allowed):
    emu.create(workload("Deployment", replicas=3))
    emu.create(pdb(**spec))
    emu.settle()
    status = emu.get("policy/v1", "PodDisruptionBudget", "www")["status"]
    assert (status["currentHealthy"], status["expectedPods"], status["disruptionsAllowed"]) == (
        3, 3, allowed)  # fmt: skip
    names = [p["metadata"]["name"] for p in pods(emu, app="www")]
    emu.cluster.ready_delay = 60  # no replacement gets Ready while the evictions go on
    codes = [evict(emu, name).status_code for name in names]
    assert codes.count(201) == allowed and codes.count(429) == 3 - allowed
    if allowed < 3:
        refused = evict(emu, names[codes.index(429)]).json()
        assert refused["reason"] == "TooManyRequests"
        assert refused["message"] == (
            "Cannot evict pod as it would violate the pod's disruption budget."
        )
        assert refused["details"]["causes"][0]["reason"] == "DisruptionBudget"
    emu.cluster.ready_delay = 0.05
    emu.settle()
    assert len([p for p in pods(emu, app="www") if is_ready(p)]) == 3


def test_a_pending_pod_can_be_evicted_whatever_the_budget():
    with Emulator(cluster=True, ready_delay=30) as emu:
        emu.create(pdb(minAvailable=1))
        emu.create({"apiVersion": "v1", "kind": "Pod",
                    "metadata": {"name": "p", "labels": {"app": "www"}},
                    "spec": {"containers": [{"name": "c", "image": "x"}]}})  # fmt: skip
        assert evict(emu, "p").status_code == 201


def test_two_budgets_on_one_pod_are_refused(emu):
    emu.create(workload("ReplicaSet", replicas=1))
    emu.create(pdb("a", maxUnavailable=1))
    emu.create(pdb("b", maxUnavailable=1))
    emu.settle()
    resp = evict(emu, pods(emu, app="www")[0]["metadata"]["name"])
    assert resp.status_code == 500 and "more than one PodDisruptionBudget" in resp.json()["message"]


def test_stop_stops_the_controller_thread():
    emu = Emulator(cluster=True).start()
    thread = emu.cluster._thread
    assert thread is not None and thread.is_alive()
    emu.stop()
    assert not thread.is_alive()


def test_off_by_default(emulator):
    emulator.create(workload("Deployment", replicas=1))
    assert emulator.cluster is None  # no thread: nothing will ever make a ReplicaSet
    assert emulator.list("apps/v1", "ReplicaSet") == []


# -- StatefulSets ------------------------------------------------------------------------------


def _events(emu, since_rv, prefix):
    """(type, pod) of the pod changes after since_rv whose pod name starts with prefix."""
    return [
        (kind, pod)
        for kind, pod in emu.history("v1", "Pod", since_rv)
        if pod["metadata"]["name"].startswith(prefix)
    ]


def _revision(pod):
    return pod["metadata"]["labels"]["controller-revision-hash"]


def test_statefulset_starts_ordinals_in_order_each_after_the_previous_is_ready(emu):
    claim = {
        "metadata": {"name": "data"},
        "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}},
    }
    sts = workload("StatefulSet", name="db", serviceName="db", volumeClaimTemplates=[claim])
    sts["spec"]["template"]["spec"]["containers"][0]["volumeMounts"] = [
        {"name": "data", "mountPath": "/data"}]  # fmt: skip
    emu.create(sts)
    emu.settle()
    running = {p["metadata"]["name"]: p for p in pods(emu, app="db")}
    assert sorted(running) == ["db-0", "db-1", "db-2"]
    status = get(emu, "/apis/apps/v1/namespaces/default/statefulsets/db")["status"]
    rev = status["updateRevision"]
    assert rev.startswith("db-") and status["currentRevision"] == rev
    assert {k: status[k] for k in ("observedGeneration", "replicas", "readyReplicas",
            "currentReplicas", "updatedReplicas")} == {"observedGeneration": 1, "replicas": 3,
            "readyReplicas": 3, "currentReplicas": 3, "updatedReplicas": 3}  # fmt: skip
    for i, (name, pod) in enumerate(sorted(running.items())):
        assert _revision(pod) == rev
        assert pod["metadata"]["labels"]["statefulset.kubernetes.io/pod-name"] == name
        assert pod["spec"]["hostname"] == name and pod["spec"]["subdomain"] == "db"
        [volume] = pod["spec"]["volumes"]
        assert volume == {"name": "data", "persistentVolumeClaim": {"claimName": f"data-db-{i}"}}
    assert sorted(c["metadata"]["name"] for c in emu.list("v1", "PersistentVolumeClaim")) == [
        "data-db-0", "data-db-1", "data-db-2"]  # fmt: skip
    live: dict[str, dict] = {}
    for kind, pod in _events(emu, 1, "db-"):
        name = pod["metadata"]["name"]
        if kind == "ADDED":
            ordinal = int(name.rsplit("-", 1)[1])
            assert all(is_ready(live[f"db-{i}"]) for i in range(ordinal))
        live[name] = pod


def test_statefulset_rolls_from_the_highest_ordinal_one_ready_pod_at_a_time(emu):
    emu.create(workload("StatefulSet", name="db", replicas=3))
    emu.settle()
    old = emu.get("apps/v1", "StatefulSet", "db")["status"]["currentRevision"]
    start = snapshot(emu, {"app": "db"})
    set_image(emu, "StatefulSet", "db", "nginx:2")
    emu.settle()
    live = {p["metadata"]["name"]: p for p in start[1]}
    deleted = []
    for kind, pod in _events(emu, start[0], "db-"):
        name = pod["metadata"]["name"]
        if kind == "DELETED":
            assert len(live) == 3 and all(is_ready(p) for p in live.values())
            deleted.append(name)
            del live[name]
        else:
            live[name] = pod
    assert deleted == ["db-2", "db-1", "db-0"]
    status = emu.get("apps/v1", "StatefulSet", "db")["status"]
    assert status["currentRevision"] == status["updateRevision"] != old
    assert (status["currentReplicas"], status["updatedReplicas"]) == (3, 3)
    assert images(emu, "db") == ["nginx:2"] * 3


def test_statefulset_partition_keeps_the_lower_ordinals(emu):
    strategy = {"type": "RollingUpdate", "rollingUpdate": {"partition": 2}}
    emu.create(workload("StatefulSet", name="db", replicas=3, updateStrategy=strategy))
    emu.settle()
    set_image(emu, "StatefulSet", "db", "nginx:2")
    emu.settle()
    by_name = {p["metadata"]["name"]: p["spec"]["containers"][0]["image"] for p in pods(emu)}
    assert by_name == {"db-0": "nginx:1.25", "db-1": "nginx:1.25", "db-2": "nginx:2"}
    status = emu.get("apps/v1", "StatefulSet", "db")["status"]
    assert status["currentRevision"] != status["updateRevision"]
    assert (status["currentReplicas"], status["updatedReplicas"]) == (2, 1)
    emu.delete("v1", "Pod", "db-0")  # below the partition: recreated at the current revision
    emu.settle()
    assert emu.get("v1", "Pod", "db-0")["spec"]["containers"][0]["image"] == "nginx:1.25"


def test_statefulset_on_delete_replaces_pods_only_when_deleted(emu):
    emu.create(workload("StatefulSet", name="db", replicas=2, updateStrategy={"type": "OnDelete"}))
    emu.settle()
    before = {p["metadata"]["uid"] for p in pods(emu)}
    set_image(emu, "StatefulSet", "db", "nginx:2")
    emu.settle()
    assert {p["metadata"]["uid"] for p in pods(emu)} == before
    status = emu.get("apps/v1", "StatefulSet", "db")["status"]
    assert status["observedGeneration"] == 2 and "updatedReplicas" not in status
    assert status["currentReplicas"] == 2
    emu.delete("v1", "Pod", "db-1")
    emu.settle()
    assert emu.get("v1", "Pod", "db-1")["spec"]["containers"][0]["image"] == "nginx:2"
    status = emu.get("apps/v1", "StatefulSet", "db")["status"]
    assert (status["currentReplicas"], status["updatedReplicas"]) == (1, 1)
    emu.patch("apps/v1", "StatefulSet", "db", {"spec": {"replicas": 1}})
    emu.settle()
    assert [p["metadata"]["name"] for p in pods(emu)] == ["db-0"]  # the highest goes first


# -- DaemonSets -------------------------------------------------------------------------------


def test_daemonset_runs_one_pod_per_node_and_rolls_one_node_at_a_time():
    with Emulator(cluster=True, nodes=("a", "b", "c")) as emu:
        emu.create(workload("DaemonSet", name="agent"))
        emu.settle()
        running = pods(emu, app="agent")
        assert sorted(p["spec"]["nodeName"] for p in running) == ["a", "b", "c"]
        assert all(p["metadata"]["name"].startswith("agent-") for p in running)
        assert all(p["metadata"]["labels"]["controller-revision-hash"] for p in running)
        status = get(emu, "/apis/apps/v1/namespaces/default/daemonsets/agent")["status"]
        assert status == {"currentNumberScheduled": 3, "numberMisscheduled": 0,
                          "desiredNumberScheduled": 3, "numberReady": 3, "observedGeneration": 1,
                          "updatedNumberScheduled": 3, "numberAvailable": 3}  # fmt: skip
        start = snapshot(emu, {"app": "agent"})
        set_image(emu, "DaemonSet", "agent", "nginx:2")
        emu.settle()
        assert images(emu, "agent") == ["nginx:2"] * 3
        for _, ready in pod_timeline(emu, start, {"app": "agent"}):
            assert len(ready) >= 2  # maxUnavailable 1
        assert emu.get("apps/v1", "DaemonSet", "agent")["status"]["updatedNumberScheduled"] == 3


def test_daemonset_on_delete_replaces_pods_only_when_deleted(emu):
    emu.create(workload("DaemonSet", name="agent", updateStrategy={"type": "OnDelete"}))
    emu.settle()
    set_image(emu, "DaemonSet", "agent", "nginx:2")
    emu.settle()
    assert images(emu, "agent") == ["nginx:1.25"] * 2
    status = emu.get("apps/v1", "DaemonSet", "agent")["status"]
    assert status["observedGeneration"] == 2 and "updatedNumberScheduled" not in status
    emu.delete("v1", "Pod", pods(emu, app="agent")[0]["metadata"]["name"])
    emu.settle()
    assert images(emu, "agent") == ["nginx:1.25", "nginx:2"]
    assert emu.get("apps/v1", "DaemonSet", "agent")["status"]["updatedNumberScheduled"] == 1


# -- admission -------------------------------------------------------------------------------


def namespace(emu, name, **labels):
    emu.create({"apiVersion": "v1", "kind": "Namespace",
                "metadata": {"name": name, "labels": labels}})  # fmt: skip


def post_pod(emu, ns, spec, name="p"):
    body = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name}, "spec": spec}
    return requests.post(f"{emu.url}/api/v1/namespaces/{ns}/pods", json=body, timeout=5)


RESTRICTED_CONTAINER = {
    "name": "app",
    "image": "nginx:1",
    "securityContext": {"allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]}},
}
ENFORCE = "pod-security.kubernetes.io/enforce"


def test_pod_security_restricted_refuses_as_the_api_server_does(emu):
    namespace(emu, "hard", **{ENFORCE: "restricted"})
    resp = post_pod(emu, "hard", {"containers": [{"name": "app", "image": "nginx:1"},
                                                 {"name": "side", "image": "x:1"}]})  # fmt: skip
    assert resp.status_code == 403
    body = resp.json()
    assert body["reason"] == "Forbidden"
    assert body["message"] == (
        'pods "p" is forbidden: violates PodSecurity "restricted:latest": '
        'allowPrivilegeEscalation != false (containers "app", "side" must set '
        "securityContext.allowPrivilegeEscalation=false), unrestricted capabilities "
        '(containers "app", "side" must set securityContext.capabilities.drop=["ALL"]), '
        'runAsNonRoot != true (pod or containers "app", "side" must set '
        'securityContext.runAsNonRoot=true), seccompProfile (pod or containers "app", '
        '"side" must set securityContext.seccompProfile.type to "RuntimeDefault" or '
        '"Localhost")'
    )
    pod_level = {"runAsNonRoot": True, "seccompProfile": {"type": "RuntimeDefault"}}
    ok = post_pod(emu, "hard", {"securityContext": pod_level,
                                "containers": [RESTRICTED_CONTAINER]})  # fmt: skip
    assert ok.status_code == 201
    container_level = copy.deepcopy(RESTRICTED_CONTAINER)
    container_level["securityContext"].update(
        runAsNonRoot=True, seccompProfile={"type": "Localhost", "localhostProfile": "x.json"},
        capabilities={"drop": ["ALL"], "add": ["NET_BIND_SERVICE"]})  # fmt: skip
    assert post_pod(emu, "hard", {"containers": [container_level]}, "q").status_code == 201
    bad = copy.deepcopy(container_level)
    bad["securityContext"]["capabilities"]["add"] = ["SYS_ADMIN"]
    bad["securityContext"]["runAsUser"] = 0
    resp = post_pod(
        emu,
        "hard",
        {"containers": [bad], "volumes": [{"name": "h", "hostPath": {"path": "/"}}]},
        "r",
    )
    message = resp.json()["message"]
    assert resp.status_code == 403
    for finding in ('non-default capabilities (container "app" must not include "SYS_ADMIN"',
                    'hostPath volumes (volume "h")',
                    'restricted volume types (volume "h" uses restricted volume type "hostPath")',
                    'container "app" must not include "SYS_ADMIN" in securityContext.capabilities',
                    'runAsUser=0 (container "app" must not set runAsUser=0)'):  # fmt: skip
        assert finding in message


def test_pod_security_baseline_allows_root_but_not_host_access(emu):
    namespace(emu, "base", **{ENFORCE: "baseline", "pod-security.kubernetes.io/enforce-version":
                              "v1.30"})  # fmt: skip
    assert post_pod(emu, "base", {"containers": [{"name": "a", "image": "x"}]}).status_code == 201
    priv = {"name": "a", "image": "x", "securityContext": {"privileged": True},
            "ports": [{"containerPort": 80, "hostPort": 80}]}  # fmt: skip
    resp = post_pod(emu, "base", {"hostNetwork": True, "containers": [priv]}, "q")
    assert resp.status_code == 403
    assert resp.json()["message"] == (
        'pods "q" is forbidden: violates PodSecurity "baseline:v1.30": host namespaces '
        '(hostNetwork=true), hostPort (container "a" uses hostPort 80), privileged (container '
        '"a" must not set securityContext.privileged=true)'
    )


def test_a_refused_pod_is_a_failed_create_on_the_workload_and_retried(emu):
    namespace(emu, "hard", **{ENFORCE: "restricted"})
    emu.create(workload("Deployment", ns="hard", replicas=2))

    def failed():
        rs = emu.list("apps/v1", "ReplicaSet", "hard")
        conds = (rs[0].get("status") or {}).get("conditions") if rs else None
        return rs[0] if conds else None

    rs = emu.wait_for(failed)
    [cond] = rs["status"]["conditions"]
    assert (cond["type"], cond["status"], cond["reason"]) == (
        "ReplicaFailure",
        "True",
        "FailedCreate",
    )
    assert 'violates PodSecurity "restricted:latest"' in cond["message"]
    events = emu.wait_for(lambda: get(emu, "/api/v1/namespaces/hard/events")["items"])
    event = events[0]
    assert (event["type"], event["reason"], event["involvedObject"]["kind"]) == (
        "Warning", "FailedCreate", "ReplicaSet")  # fmt: skip
    assert event["source"]["component"] == "replicaset-controller"
    assert event["message"].startswith(f'Error creating: pods "{rs["metadata"]["name"]}-')
    assert "is forbidden: violates PodSecurity" in event["message"]
    emu.wait_for(
        lambda: any(
            c["type"] == "ReplicaFailure"
            for c in (emu.get("apps/v1", "Deployment", "www", "hard").get("status") or {}).get(
                "conditions", []
            )
        )
    )
    assert pods(emu, "hard") == []
    emu.patch("v1", "Namespace", "hard", {"metadata": {"labels": {ENFORCE: "baseline"}}})
    emu.wait_for(lambda: len([p for p in pods(emu, "hard") if is_ready(p)]) == 2, timeout=10)
    emu.settle()
    rs = emu.get("apps/v1", "ReplicaSet", rs["metadata"]["name"], "hard")
    assert "conditions" not in rs["status"]


def test_statefulset_failed_create_names_the_pod(emu):
    namespace(emu, "hard", **{ENFORCE: "restricted"})
    emu.create(workload("StatefulSet", name="db", ns="hard", replicas=1))
    event = emu.wait_for(lambda: get(emu, "/api/v1/namespaces/hard/events")["items"])[0]
    assert event["message"].startswith(
        'create Pod db-0 in StatefulSet db failed error: pods "db-0" is forbidden: violates'
    )


def test_resource_quota_requires_what_it_limits_and_counts_pods(emu):
    quota = {
        "apiVersion": "v1",
        "kind": "ResourceQuota",
        "metadata": {"name": "q", "namespace": "default"},
        "spec": {"hard": {"limits.cpu": "1", "limits.memory": "1Gi", "pods": "2"}},
    }
    emu.create(quota)
    resp = post_pod(emu, "default", {"containers": [{"name": "app", "image": "x"},
                                                    {"name": "side", "image": "y"}]})  # fmt: skip
    assert resp.status_code == 403
    assert resp.json()["message"] == (
        'pods "p" is forbidden: failed quota: q: must specify limits.cpu for: app, side; '
        "limits.memory for: app, side"
    )
    limited = {"name": "app", "image": "x",
               "resources": {"limits": {"cpu": "400m", "memory": "256Mi"}}}  # fmt: skip
    assert post_pod(emu, "default", {"containers": [limited]}, "a").status_code == 201
    assert post_pod(emu, "default", {"containers": [limited]}, "b").status_code == 201
    resp = post_pod(emu, "default", {"containers": [limited]}, "c")
    assert resp.status_code == 403
    assert resp.json()["message"] == (
        'pods "c" is forbidden: exceeded quota: q, requested: limits.cpu=400m,pods=1, used: '
        "limits.cpu=800m,pods=2, limited: limits.cpu=1,pods=2"
    )
    emu.settle()  # the quota controller's view
    status = emu.get("v1", "ResourceQuota", "q")["status"]
    assert status["hard"] == {"limits.cpu": "1", "limits.memory": "1Gi", "pods": "2"}
    assert status["used"] == {"limits.cpu": "800m", "limits.memory": "512Mi", "pods": "2"}


def test_admission_is_off_without_the_switch(emulator):
    namespace(emulator, "hard", **{ENFORCE: "restricted"})
    resp = post_pod(emulator, "hard", {"containers": [{"name": "a", "image": "x"}]})
    assert resp.status_code == 201


# -- the Table format ---------------------------------------------------------------------------

TABLE = "application/json;as=Table;v=v1;g=meta.k8s.io,application/json;as=Table;v=v1beta1;g=meta.k8s.io,application/json"  # noqa: E501


def _backup(emu, name, **status):
    obj = {
        "apiVersion": "backup.appscode.com/v1beta1",
        "kind": "Backup",
        "metadata": {"name": name, "namespace": "web"},
        "spec": {
            "schedule": "@hourly",
            "paused": name == "paused",
            "backupSource": {"volumeName": "data", "path": "/data"},
            "destination": {"repositorySecretName": "s", "repository": "/repo"},
        },
    }
    if status:
        obj["status"] = status
    emu.create(obj)


def test_table_of_a_crd_uses_its_printer_columns(emu):
    emu.load(ROOT / "kustomize" / "crd.yaml")
    namespace(emu, "web")
    two_hours_ago = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() - 7260))
    ready = {"type": "Ready", "status": "True", "reason": "BackedUp", "message": "ok",
             "lastTransitionTime": two_hours_ago}  # fmt: skip
    other = {**ready, "type": "Other", "status": "False"}
    _backup(emu, "www", backupCount=7, lastSuccessfulBackupTime=two_hours_ago,
            conditions=[other, ready])  # fmt: skip
    _backup(emu, "paused")
    path = "/apis/backup.appscode.com/v1beta1/namespaces/web/backups"
    resp = requests.get(emu.url + path, headers={"Accept": TABLE}, timeout=5)
    table = resp.json()
    assert (table["kind"], table["apiVersion"]) == ("Table", "meta.k8s.io/v1")
    assert [c["name"] for c in table["columnDefinitions"]] == [
        "Name", "Schedule", "Paused", "Last Success", "Count", "Ready", "Age"]  # fmt: skip
    assert [c["type"] for c in table["columnDefinitions"]] == [
        "string", "string", "boolean", "date", "integer", "string", "date"]  # fmt: skip
    rows = {r["cells"][0]: r for r in table["rows"]}
    assert rows["www"]["cells"][1:6] == ["@hourly", False, "121m", 7, "True"]
    assert rows["www"]["cells"][6].endswith("s")  # just created
    assert rows["paused"]["cells"][1:6] == ["@hourly", True, None, None, None]
    assert rows["www"]["object"]["kind"] == "PartialObjectMetadata"
    assert rows["www"]["object"]["metadata"]["name"] == "www"
    assert table["metadata"]["resourceVersion"]
    one = requests.get(emu.url + path + "/www", params={"includeObject": "Object"},
                       headers={"Accept": "application/json;as=Table;v=v1beta1;g=meta.k8s.io"},
                       timeout=5).json()  # fmt: skip
    assert one["apiVersion"] == "meta.k8s.io/v1beta1" and len(one["rows"]) == 1
    assert one["rows"][0]["object"]["spec"]["schedule"] == "@hourly"
    plain = requests.get(emu.url + path, headers={"Accept": "application/json"}, timeout=5)
    assert plain.json()["kind"] == "BackupList"


def test_kubectl_get_shows_the_printer_columns(emu, tmp_path):
    emu.load(ROOT / "kustomize" / "crd.yaml")
    namespace(emu, "web")
    ready = {"type": "Ready", "status": "False", "reason": "SecretMissing", "message": "x",
             "lastTransitionTime": "2026-01-01T00:00:00Z"}  # fmt: skip
    three_days_ago = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() - 3 * 86400))
    _backup(emu, "www", backupCount=3, conditions=[ready], lastSuccessfulBackupTime=three_days_ago)
    emu.create(workload("Deployment", ns="web", replicas=2))
    emu.settle()
    config = emu.write_kubeconfig(tmp_path / "kubeconfig")

    def kubectl(*args):
        out = subprocess.run(["kubectl", "--kubeconfig", str(config), *args], capture_output=True,
                             text=True, timeout=30, check=True)  # fmt: skip
        return [line.split() for line in out.stdout.splitlines()]

    header, row = kubectl("get", "bk", "-n", "web")
    assert header == ["NAME", "SCHEDULE", "PAUSED", "LAST", "SUCCESS", "COUNT", "READY", "AGE"]
    assert row[:6] == ["www", "@hourly", "false", "3d", "3", "False"]
    header, row = kubectl("get", "deploy", "-n", "web")
    assert header == ["NAME", "READY", "UP-TO-DATE", "AVAILABLE", "AGE"]
    assert row[:4] == ["www", "2/2", "2", "2"]
    header, *rows = kubectl("get", "pods", "-n", "web", "-o", "wide")
    assert header[:7] == ["NAME", "READY", "STATUS", "RESTARTS", "AGE", "IP", "NODE"]
    assert [r[1:4] for r in rows] == [["1/1", "Running", "0"]] * 2
    assert {r[6] for r in rows} <= {"node-1", "node-2"}
    emu.create({"apiVersion": "v1", "kind": "Event",
                "metadata": {"name": "www-1", "namespace": "web"},
                "involvedObject": {"kind": "Backup", "name": "www", "namespace": "web"},
                "type": "Normal", "reason": "Success", "message": "saved", "count": 1,
                "lastTimestamp": three_days_ago})  # fmt: skip
    header, row = kubectl("get", "events", "-n", "web", "--field-selector", "reason=Success")
    assert header == ["LAST", "SEEN", "TYPE", "REASON", "OBJECT", "MESSAGE"]
    assert row == ["3d", "Normal", "Success", "backup/www", "saved"]


def test_watch_in_table_form_sends_the_columns_once(emu):
    namespace(emu, "web")
    path = "/api/v1/namespaces/web/configmaps"
    rv = get(emu, path)["metadata"]["resourceVersion"]
    for name in ("a", "b"):
        emu.create(
            {
                "apiVersion": "v1",
                "kind": "ConfigMap",
                "metadata": {"name": name, "namespace": "web"},
            }
        )
    resp = requests.get(emu.url + path, params={"watch": "1", "resourceVersion": rv},
                        headers={"Accept": TABLE}, stream=True, timeout=5)  # fmt: skip
    lines = resp.iter_lines()
    first, second = (json.loads(next(lines)) for _ in range(2))
    resp.close()
    assert (first["type"], first["object"]["kind"]) == ("ADDED", "Table")
    assert [c["name"] for c in first["object"]["columnDefinitions"]] == ["Name", "Age"]
    assert second["object"]["columnDefinitions"] == []
    assert [e["object"]["rows"][0]["cells"][0] for e in (first, second)] == ["a", "b"]


def test_human_durations_as_kubectl_shows_them():
    from tests.emulator.table import human_duration

    cases = {0: "0s", 119: "119s", 125: "2m5s", 600: "10m", 7260: "121m", 3 * 3600 + 60: "3h1m"}
    cases.update({9 * 3600: "9h", 50 * 3600: "2d2h", 30 * 86400: "30d", 800 * 86400: "2y70d"})
    assert {s: human_duration(s) for s in cases} == cases


# -- the bounded watch cache -----------------------------------------------------------------------


def test_a_watch_older_than_the_window_gets_410_on_the_open_stream():
    with Emulator(watch_window=5) as emu:
        start = int(
            get(emu, "/api/v1/namespaces/default/configmaps")["metadata"]["resourceVersion"]
        )
        for i in range(8):
            emu.create({"apiVersion": "v1", "kind": "ConfigMap",
                        "metadata": {"name": f"c{i}", "namespace": "default"}})  # fmt: skip
        resp = requests.get(
            emu.url + "/api/v1/namespaces/default/configmaps",
            timeout=5,
            params={"watch": "1", "resourceVersion": str(start)},
            stream=True,
        )
        assert resp.status_code == 200  # the stream opens, then says why it ends
        events = [json.loads(line) for line in resp.iter_lines() if line]
        assert len(events) == 1 and events[0]["type"] == "ERROR"
        status = events[0]["object"]
        assert (status["kind"], status["code"], status["reason"]) == ("Status", 410, "Expired")
        assert status["message"].startswith("too old resource version:")
        recent = emu.store.rv - 3  # inside the window: answered as usual
        resp = requests.get(emu.url + "/api/v1/namespaces/default/configmaps", timeout=5,
                            params={"watch": "1", "resourceVersion": str(recent),
                                    "timeoutSeconds": "1"}, stream=True)  # fmt: skip
        names = [json.loads(line)["object"]["metadata"]["name"] for line in resp.iter_lines()
                 if line]  # fmt: skip
        assert names == ["c5", "c6", "c7"]
        listed = get(emu, "/api/v1/namespaces/default/configmaps", limit="3")
        assert len(listed["items"]) == 3 and listed["metadata"]["continue"]


# -- the command line -----------------------------------------------------------------------------


def test_command_line_cluster(tmp_path):
    manifest = tmp_path / "app.yaml"
    manifest.write_text(json.dumps(workload("Deployment", ns="web", replicas=2)))
    config = tmp_path / "kubeconfig"
    proc = subprocess.Popen(
        [sys.executable, "-m", "tests.emulator", "--port", "0", "--kubeconfig", str(config),
         "--cluster", "--nodes", "n1", "--broken-image", "bad:1", "--load", str(manifest)],
        cwd=ROOT, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 20
        while not config.exists():
            assert proc.poll() is None and time.monotonic() < deadline
            time.sleep(0.05)
        url = json.loads(config.read_text())["clusters"][0]["cluster"]["server"]
        while True:
            items = requests.get(url + "/api/v1/namespaces/web/pods", timeout=5).json()["items"]
            if len(items) == 2 and all(is_ready(p) for p in items):
                break
            assert time.monotonic() < deadline, items
            time.sleep(0.05)
        assert {p["spec"]["nodeName"] for p in items} == {"n1"}
    finally:
        proc.terminate()
        assert proc.wait(timeout=10) == 0
        proc.stderr.close()


def test_the_watch_window_is_kept_per_resource():
    with Emulator(watch_window=3) as emu:
        rv = get(emu, "/api/v1/namespaces/default/configmaps")["metadata"]["resourceVersion"]
        emu.create({"apiVersion": "v1", "kind": "ConfigMap",
                    "metadata": {"name": "kept", "namespace": "default"}})  # fmt: skip
        for i in range(10):  # another kind is busy: the ConfigMap watchers keep their window
            emu.create({"apiVersion": "v1", "kind": "Secret",
                        "metadata": {"name": f"s{i}", "namespace": "default"}})  # fmt: skip
        resp = requests.get(emu.url + "/api/v1/namespaces/default/configmaps", timeout=5,
                            params={"watch": "1", "resourceVersion": rv}, stream=True)  # fmt: skip
        event = json.loads(next(resp.iter_lines()))
        resp.close()
        assert (event["type"], event["object"]["metadata"]["name"]) == ("ADDED", "kept")


def test_daemonset_max_surge_starts_the_new_pod_before_stopping_the_old():
    with Emulator(cluster=True, nodes=("a", "b", "c")) as emu:
        rolling = {"maxSurge": 1, "maxUnavailable": 0}
        emu.create(
            workload(
                "DaemonSet",
                name="agent",
                updateStrategy={"type": "RollingUpdate", "rollingUpdate": rolling},
            )
        )
        emu.settle()
        start = snapshot(emu, {"app": "agent"})
        set_image(emu, "DaemonSet", "agent", "nginx:2")
        emu.settle()
        assert images(emu, "agent") == ["nginx:2"] * 3
        timeline = pod_timeline(emu, start, {"app": "agent"})
        assert max(len(all_pods) for all_pods, _ in timeline) == 4  # one surge pod at a time
        assert min(len(ready) for _, ready in timeline) == 3  # every node kept a Ready pod
        status = emu.get("apps/v1", "DaemonSet", "agent")["status"]
        assert (status["numberReady"], status["updatedNumberScheduled"]) == (3, 3)


def test_statefulset_parallel_starts_and_stops_pods_together():
    with Emulator(cluster=True, ready_delay=30) as emu:  # nothing gets Ready meanwhile
        emu.create(workload("StatefulSet", name="db", replicas=3, podManagementPolicy="Parallel"))
        emu.wait_for(lambda: len(pods(emu, app="db")) == 3)
        emu.patch("apps/v1", "StatefulSet", "db", {"spec": {"replicas": 1}})
        emu.wait_for(lambda: [p["metadata"]["name"] for p in pods(emu, app="db")] == ["db-0"])


def test_a_pod_spec_is_immutable_but_for_its_images(emulator):
    pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"},
           "spec": {"containers": [{"name": "c", "image": "x:1"}]}}  # fmt: skip
    emulator.create(pod)
    url = emulator.url + "/api/v1/namespaces/default/pods/p"
    merge = {"Content-Type": "application/strategic-merge-patch+json"}
    image = {"spec": {"containers": [{"name": "c", "image": "x:2"}]}}
    assert requests.patch(url, json=image, headers=merge, timeout=5).status_code == 200
    env = {"spec": {"containers": [{"name": "c", "env": [{"name": "A", "value": "1"}]}]}}
    resp = requests.patch(url, json=env, headers=merge, timeout=5)
    assert (resp.status_code, resp.json()["reason"]) == (422, "Invalid")
    assert "pod updates may not change fields other than" in resp.json()["message"]
    labels = {"metadata": {"labels": {"a": "b"}}}
    assert requests.patch(url, json=labels, headers=merge, timeout=5).status_code == 200
