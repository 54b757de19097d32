"""Rollout state from workload status, and which pod restik restarts next (pure, tables)."""

from __future__ import annotations

import pytest

from reconciler.api.constants import HASH_ANNOTATION
from reconciler.controller.rollout import (
    CURRENT,
    PENDING,
    ROLLING_OUT,
    needs_manual_restart,
    observe_rollout,
    plan_restart,
)

NEW, OLD = "new", "old"


def owner(kind="ReplicaSet", replicas=3, name="www", **status):
    obj = {
        "kind": kind,
        "metadata": {"name": name, "uid": "u1", "generation": 2},
        "spec": {"template": {"metadata": {"annotations": {HASH_ANNOTATION: NEW}}}},
        "status": status,
    }
    if replicas is not None:
        obj["spec"]["replicas"] = replicas
    return obj


def pod(name, hash_=OLD, ready=True, terminating=False, uid="u1", phase="Running"):
    meta = {
        "name": name,
        "annotations": {HASH_ANNOTATION: hash_},
        "ownerReferences": [{"uid": uid, "controller": True}],
    }
    if terminating:
        meta["deletionTimestamp"] = "2026-01-01T00:00:00Z"
    conditions = [{"type": "Ready", "status": "True" if ready else "False"}]
    return {"metadata": meta, "status": {"phase": phase, "conditions": conditions}}


# (case, replicas, pods, evict, done, reason contains)
RESTARTS = [
    ("all stale, all Ready: first by name", 3,
     [pod("c"), pod("a"), pod("b")], "a", False, ""),
    ("one restarted, replacement not yet Ready: wait", 3,
     [pod("a", NEW, ready=False), pod("b"), pod("c")], None, False, "pod a is not Ready yet"),
    ("replacement Ready: next", 3,
     [pod("a", NEW), pod("b"), pod("c")], "b", False, ""),
    ("replacement not created yet: 2/3 Ready", 3,
     [pod("b"), pod("c")], None, False, "2/3 pods Ready"),
    ("a pod terminating: wait", 3,
     [pod("a", terminating=True), pod("b"), pod("c"), pod("d", NEW)], None, False, "terminating"),
    ("two not Ready: wait", 3,
     [pod("a", ready=False), pod("b", ready=False), pod("c")], None, False, "pods not Ready: a, b"),
    ("the only not-Ready pod is stale: it may go", 3,
     [pod("a", NEW), pod("b", ready=False), pod("c")], "b", False, ""),
    ("stale not-Ready pod but one missing: below replicas - 1", 3,
     [pod("b", ready=False), pod("c")], None, False, "1/3 pods Ready"),
    ("single replica: may go (replicas - 1 = 0)", 1, [pod("a")], "a", False, ""),
    ("all current: done", 3, [pod("a", NEW), pod("b", NEW), pod("c", NEW)], None, True, ""),
    ("no pods at all: done", 3, [], None, True, ""),
    ("pods of another owner do not count", 2,
     [pod("x", uid="other"), pod("a", NEW), pod("b", NEW)], None, True, ""),
    ("finished pods do not count", 2,
     [pod("a", NEW), pod("b", NEW), pod("z", phase="Failed", ready=False)], None, True, ""),
    ("more pods than replicas (scaling down): still at most one at a time", 2,
     [pod("a"), pod("b"), pod("c")], "a", False, ""),
]  # fmt: skip


@pytest.mark.parametrize(
    ("replicas", "pods", "evict", "done", "reason"),
    [case[1:] for case in RESTARTS],
    ids=[case[0] for case in RESTARTS],
)
def test_plan_restart(replicas, pods, evict, done, reason):
    decision = plan_restart(owner(replicas=replicas), pods)
    assert (decision.evict, decision.done) == (evict, done)
    assert reason in decision.reason
    live = [p for p in pods if p["metadata"]["ownerReferences"][0]["uid"] == "u1"]
    live = [p for p in live if p["status"]["phase"] == "Running"]
    live = [p for p in live if "deletionTimestamp" not in p["metadata"]]
    ready = sum(1 for p in live if p["status"]["conditions"][0]["status"] == "True")
    if evict:  # the invariant: never below replicas - 1 Ready
        victim = next(p for p in pods if p["metadata"]["name"] == evict)
        after = ready - (victim["status"]["conditions"][0]["status"] == "True")
        assert after >= replicas - 1


def test_statefulset_pods_restart_from_the_highest_ordinal():
    sts = owner("StatefulSet", replicas=11, name="db")
    pods = [pod(f"db-{i}") for i in range(11)]
    assert plan_restart(sts, pods).evict == "db-10"
    pods[10] = pod("db-10", NEW)
    assert plan_restart(sts, pods).evict == "db-9"


def test_daemonset_desired_comes_from_its_status():
    ds = owner("DaemonSet", replicas=None, desiredNumberScheduled=3)
    assert plan_restart(ds, [pod("a"), pod("b")]).evict is None  # one node has no pod yet
    assert plan_restart(ds, [pod("a"), pod("b"), pod("c")]).evict == "a"


@pytest.mark.parametrize(
    ("kind", "strategy", "manual"),
    [
        ("ReplicaSet", None, True),
        ("ReplicationController", None, True),
        ("Deployment", None, False),
        ("StatefulSet", None, False),
        ("StatefulSet", "RollingUpdate", False),
        ("StatefulSet", "OnDelete", True),
        ("DaemonSet", "OnDelete", True),
        ("DaemonSet", "RollingUpdate", False),
    ],
)
def test_needs_manual_restart(kind, strategy, manual):
    obj = {"kind": kind, "spec": {}}
    if strategy:
        obj["spec"]["updateStrategy"] = {"type": strategy}
    assert needs_manual_restart(obj) is manual


def workload(kind, generation=2, spec=None, **status):
    return {
        "kind": kind,
        "metadata": {"name": "w", "generation": generation},
        "spec": {"replicas": 3, **(spec or {})},
        "status": status,
    }


DONE = {"observedGeneration": 2, "replicas": 3, "updatedReplicas": 3, "readyReplicas": 3,
        "availableReplicas": 3}  # fmt: skip
DS_DONE = {"observedGeneration": 2, "desiredNumberScheduled": 2, "currentNumberScheduled": 2,
           "updatedNumberScheduled": 2, "numberReady": 2, "numberAvailable": 2}  # fmt: skip

ROLLOUTS = [
    ("no status yet", workload("Deployment"), ROLLING_OUT, "observe"),
    ("old generation observed", workload("Deployment", **{**DONE, "observedGeneration": 1}),
     ROLLING_OUT, "observe"),
    ("deployment done", workload("Deployment", **DONE), CURRENT, ""),
    ("deployment half way", workload("Deployment", **{**DONE, "updatedReplicas": 1,
                                                      "replicas": 4}), ROLLING_OUT, "1/3"),
    ("deployment old pods left", workload("Deployment", **{**DONE, "replicas": 4}),
     ROLLING_OUT, "3/3 updated"),
    ("deployment not yet available", workload("Deployment", **{**DONE,
                                                               "availableReplicas": 2}),
     ROLLING_OUT, "2/3 available"),
    ("paused deployment", workload("Deployment", spec={"paused": True},
                                   **{**DONE, "updatedReplicas": 0}), PENDING, "paused"),
    ("paused but done", workload("Deployment", spec={"paused": True}, **DONE), CURRENT, ""),
    ("statefulset done", workload("StatefulSet", **DONE), CURRENT, ""),
    ("statefulset partition", workload(
        "StatefulSet", spec={"updateStrategy": {"type": "RollingUpdate",
                                                "rollingUpdate": {"partition": 2}}},
        **{**DONE, "updatedReplicas": 1}), PENDING, "partition 2"),
    ("statefulset partition still rolling", workload(
        "StatefulSet", spec={"updateStrategy": {"type": "RollingUpdate",
                                                "rollingUpdate": {"partition": 2}}},
        **{**DONE, "updatedReplicas": 0}), ROLLING_OUT, "0/3"),
    ("daemonset done", workload("DaemonSet", **DS_DONE), CURRENT, ""),
    ("daemonset rolling", workload("DaemonSet", **{**DS_DONE, "updatedNumberScheduled": 1}),
     ROLLING_OUT, "1/2 updated"),
    ("replicaset: its pods tell the rest", workload("ReplicaSet", **DONE), CURRENT, ""),
    ("replicaset, generation not observed: still its pods", workload("ReplicaSet"), CURRENT, ""),
]  # fmt: skip


@pytest.mark.parametrize(
    ("obj", "state", "message"), [c[1:] for c in ROLLOUTS], ids=[c[0] for c in ROLLOUTS]
)
def test_observe_rollout(obj, state, message):
    rollout = observe_rollout(obj)
    assert rollout.state == state
    assert message in rollout.message
    entry = rollout.entry("Deployment/w")
    assert entry["current"] is (state == CURRENT)
