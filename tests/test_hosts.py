"""A workload's restic hosts (reconciler.api.hosts), shared by `restik backup-now --wait` and
the Restore planner: both must name the hosts as the sidecar does."""

from __future__ import annotations

import pytest

from reconciler.api.hosts import per_pod_hosts, replicas
from sidecar.restic import host_for


def sts(replicas=None, start=None):
    spec = {} if replicas is None else {"replicas": replicas}
    if start is not None:
        spec["ordinals"] = {"start": start}
    return {"kind": "StatefulSet", "metadata": {"name": "db"}, "spec": spec}


@pytest.mark.parametrize(
    ("obj", "hosts"),
    [
        (sts(), {"db-0"}),  # replicas defaults to 1
        (sts(3), {"db-0", "db-1", "db-2"}),
        (sts(2, start=5), {"db-5", "db-6"}),  # spec.ordinals.start (Kubernetes 1.27+)
        (sts(0), set()),
        (sts(True), {"db-0"}),  # not a number: the default
    ],
)
def test_a_statefulset_has_a_host_per_ordinal(obj, hosts):
    assert per_pod_hosts(obj, []) == hosts
    assert all(host_for("StatefulSet", "db", h) == h for h in hosts)  # as the sidecar names


def test_a_daemonset_has_a_host_per_node_of_its_pods():
    pods = [{"spec": {"nodeName": "n1"}}, {"spec": {"nodeName": "n2"}}, {"spec": {}}]
    ds = {"kind": "DaemonSet", "metadata": {"name": "agent"}}
    assert per_pod_hosts(ds, pods) == {"n1", "n2"}
    assert host_for("DaemonSet", "agent", "agent-x", "n1") == "n1"


@pytest.mark.parametrize("kind", ["Deployment", "ReplicaSet", "ReplicationController"])
def test_replicas_that_share_one_host_have_no_per_pod_hosts(kind):
    assert per_pod_hosts({"kind": kind, "metadata": {"name": "w"}, "spec": {}}, []) is None
    assert replicas({"spec": {"replicas": 4}}) == 4
