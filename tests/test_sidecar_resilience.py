"""`restik watch` never takes its pod down (issue 12 item 5) and backs up under a host that
survives rollouts (item 7): processes against the emulator over HTTP and real restic."""

from __future__ import annotations

import json
import socket

import pytest

from reconciler.resources import crd_manifest
from tests.emulator import Emulator
from tests.factories import REPO as ROOT
from tests.factories import WATCH_NS as NS
from tests.factories import (
    Sidecar,
    backup_object,
    base_env,
    copy_template,
    free_port,
    needs_restic,
    restic,
    wait_for,
    write_tree,
)

CRD = crd_manifest()

pytestmark = [needs_restic, pytest.mark.slow]


def _env(tmp_path, pod, **extra):
    return base_env(POD_NAME=pod, POD_NAMESPACE=NS, PYTHONPATH=str(ROOT),
                    RESTIC_CACHE_DIR=str(tmp_path / f"cache-{pod}"), **extra)  # fmt: skip


def test_no_token_and_no_api_are_waited_out_never_an_exit(tmp_path):
    """In-cluster without a token (automountServiceAccountToken: false and nothing
    projected), or with an API that is not there yet: the sidecar stays up, /healthz
    answers, and it starts backing up once the API answers."""
    src = write_tree(tmp_path / "src", {"a": b"data\n"})
    repo = copy_template(tmp_path / "repo")
    home = tmp_path / "home"  # no ~/.kube/config, no service account, no $KUBECONFIG
    home.mkdir()
    no_token = Sidecar(tmp_path, None, ["--backup", "www"],
                       _env(tmp_path, "www-a", HOME=str(home)), "no-token")  # fmt: skip
    kubeconfig = tmp_path / "later" / "kubeconfig"  # appears later
    late = Sidecar(tmp_path, kubeconfig, ["--backup", "www"], _env(tmp_path, "www-b"), "late")
    try:
        wait_for(lambda: "cannot start following" in no_token.log, 30, [no_token])
        wait_for(lambda: "cannot start following" in late.log, 30, [late])
        assert no_token.get("/healthz")[0] == 200 and late.get("/healthz")[0] == 200
        # then a kubeconfig, but the API server is not up yet: connection refused
        port = free_port()
        kubeconfig.parent.mkdir()
        with Emulator(port=port) as probe:  # only to write a kubeconfig for that port
            probe.write_kubeconfig(kubeconfig)
        n = late.log.count("cannot start following")
        wait_for(lambda: late.log.count("cannot start following") > n, 30, [late])
        assert "onnection" in late.log.split("cannot start following")[-1]
        assert late.proc.poll() is None and no_token.proc.poll() is None
        with Emulator(port=port) as emu:  # the API comes up: runs start
            emu.create(CRD)
            emu.create(backup_object(str(src), str(repo), schedule="@every 1s"))
            wait_for(lambda: len(emu.list("v1", "events", NS)) >= 1, 60, [late])
            assert all(e["reason"] == "Success" for e in emu.list("v1", "events", NS))
            assert late.terminate() == 0
        assert no_token.proc.poll() is None
        assert no_token.get("/healthz")[0] == 200
        assert "run of" not in no_token.log  # nothing reported that could not be
    finally:
        late.terminate()
        code = no_token.terminate()
    assert code == 0


def test_a_taken_metrics_port_is_retried_and_runs_go_on(world):
    world.backup(schedule="@every 1s")
    port = free_port()
    holder = socket.socket()
    holder.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    holder.bind(("127.0.0.1", port))
    holder.listen()
    try:
        sc = world.sidecar(metrics_port=port)
        wait_for(lambda: "cannot serve /metrics and /healthz" in sc.log, 30, [sc])
        world.wait_events(2)  # backups run without metrics
        assert sc.proc.poll() is None
        assert sc.log.count("cannot serve /metrics") == 1  # logged once, retried quietly
    finally:
        holder.close()
    wait_for(lambda: sc.get("/healthz")[0] == 200, 30, [sc])
    assert "serving /metrics and /healthz" in sc.log
    code, body = sc.get("/metrics")
    assert code == 200 and "restik_backup_runs_total" in body
    assert sc.terminate() == 0


def _pod(name, owner_kind, owner, node=None, labels=None):
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": name,
            "namespace": NS,
            "labels": labels or {},
            "ownerReferences": [
                {
                    "apiVersion": "apps/v1",
                    "kind": owner_kind,
                    "name": owner,
                    "uid": "u-" + owner,
                    "controller": True,
                }
            ],
        },
        "spec": {"containers": [{"name": "app", "image": "x"}]},
    }
    if node:
        pod["spec"]["nodeName"] = node
    return pod


def _hosts(repo) -> list[str]:
    return sorted(
        s["hostname"] for s in json.loads(restic(str(repo), "snapshots", "--json").stdout)
    )


def test_daemonset_host_is_the_node_across_a_rollout(world):
    """A DaemonSet pod's name changes with every rollout; its node does not. With host =
    node, the new pod's `forget --host` sees the old pod's snapshots (keepLast 1 keeps one)."""
    world.backup(schedule="@every 1s", retentionPolicy={"keepLastSnapshots": 1})
    world.emu.create(_pod("agent-x1", "DaemonSet", "agent", node="node-a"))
    first = world.sidecar(pod="agent-x1")  # node from the pod's spec.nodeName
    world.wait_events(2)
    assert first.terminate() == 0
    assert _hosts(world.repo) == ["node-a"]
    world.emu.delete("v1", "pods", "agent-x1", NS)
    world.emu.create(_pod("agent-y2", "DaemonSet", "agent", node="node-a"))
    count = len(world.events())
    second = world.sidecar(pod="agent-y2", NODE_NAME="node-a")  # from the downward API
    world.wait_events(count + 2)
    assert second.terminate() == 0
    assert _hosts(world.repo) == ["node-a"]  # the old pod's snapshot was forgotten too
    assert "workload DaemonSet/agent, host node-a" in second.log


@pytest.mark.parametrize(
    ("kind", "owner", "pod", "labels", "host"),
    [
        ("StatefulSet", "db", "db-0", {}, "db-0"),
        ("ReplicaSet", "www-5d9c", "www-5d9c-abcde", {"pod-template-hash": "5d9c"}, "www"),
    ],
)
def test_statefulset_host_is_the_pod_and_deployment_host_the_workload(
    world,
    kind,
    owner,
    pod,
    labels,
    host,
):
    world.backup(schedule="@every 1s")
    world.emu.create(_pod(pod, kind, owner, node="node-a", labels=labels))
    sc = world.sidecar(pod=pod, NODE_NAME="node-a")
    world.wait_events(1)
    assert sc.terminate() == 0
    assert _hosts(world.repo)[0] == host
    assert set(_hosts(world.repo)) == {host}


def test_backoff_is_capped_and_jittered():
    from sidecar.follow import MAX_BACKOFF, backoff

    delays = [backoff(n) for n in range(1, 20)]
    assert all(0 < d <= MAX_BACKOFF for d in delays)
    assert max(delays[-5:]) > MAX_BACKOFF / 2  # grows to the cap
    assert len({round(backoff(8), 6) for _ in range(20)}) > 1  # jitter
