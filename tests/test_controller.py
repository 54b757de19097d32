"""restik run against the API emulator over real HTTP: the exact requests of each scenario."""

from __future__ import annotations

import io
from datetime import UTC, datetime

import pytest

from reconciler.api.constants import CONFIG_LABEL, HASH_ANNOTATION, SIDECAR_NAME
from reconciler.controller.cycle import Controller
from reconciler.controller.options import Settings
from reconciler.kube.client import ApiError, Kube
from sidecar.job import Outcome
from sidecar.report import run_status_patch
from tests.factories.cluster import (
    BACKUP_API,
    LISTS,
    NS,
    backup,
    calls,
    containers,
    get,
    owned_pod,
    rolled_out,
    workload,
    writes,
)


@pytest.fixture
def controller(cluster, kubeconfig):
    return Controller(Kube.connect(str(kubeconfig)), Settings())


def test_creates_the_crd_when_absent(emulator, kubeconfig):
    c = Controller(Kube.connect(str(kubeconfig)), Settings())
    c.cycle()
    crd_path = "/apis/apiextensions.k8s.io/v1/customresourcedefinitions"
    assert calls(emulator)[:4] == [
        ("GET", f"{crd_path}/backups.backup.appscode.com"),
        ("POST", crd_path),
        ("GET", f"{crd_path}/restores.backup.appscode.com"),
        ("POST", crd_path),
    ]
    assert calls(emulator)[-len(LISTS) :] == LISTS
    for name in ("backups.backup.appscode.com", "restores.backup.appscode.com"):
        assert emulator.get("apiextensions.k8s.io/v1", "customresourcedefinitions", name)


@pytest.mark.parametrize(
    "kind", ["Deployment", "StatefulSet", "DaemonSet", "ReplicaSet", "ReplicationController"]
)
def test_injects_then_does_nothing(cluster, controller, kind):
    cluster.create(backup())
    cluster.create(workload(kind))
    cluster.create(workload(kind, name="other", label=None))
    cluster.clear_requests()
    stats = controller.cycle()
    assert stats.patched == 1
    plural = {"ReplicationController": "/api/v1/namespaces/web/replicationcontrollers"}.get(
        kind, f"/apis/apps/v1/namespaces/web/{kind.lower()}s"
    )
    expected = [
        ("PATCH", f"{plural}/www"),
        ("POST", "/apis/rbac.authorization.k8s.io/v1/namespaces/web/roles"),
        ("POST", "/apis/rbac.authorization.k8s.io/v1/namespaces/web/rolebindings"),
        ("POST", "/api/v1/namespaces/web/events"),  # the default ServiceAccount is bound
        ("PATCH", "/apis/backup.appscode.com/v1beta1/namespaces/web/backups/www/status"),
    ]
    assert writes(cluster) == expected
    patch = next(r for r in cluster.requests if r.method == "PATCH")
    assert patch.content_type == "application/merge-patch+json"
    obj = get(cluster, kind)
    assert containers(obj) == ["app", SIDECAR_NAME]
    assert HASH_ANNOTATION in obj["spec"]["template"]["metadata"]["annotations"]
    assert containers(get(cluster, kind, "other")) == ["app"]
    status = get(cluster, "Backup")["status"]
    assert status["workloads"] == [f"{kind}/www"]
    # Ready only once the pods run the sidecar: the workload's status says so (ReplicaSets'
    # and ReplicationControllers' pods are restik's to restart: they have none here)
    manual = kind in ("ReplicaSet", "ReplicationController")
    ready = status["conditions"][0]
    assert (ready["status"], ready["reason"]) == (
        ("True", "Ready") if manual else ("False", "RollingOut")
    )
    [entry] = status["rollout"]
    assert (entry["workload"], entry["current"]) == (f"{kind}/www", manual)
    rolled_out(cluster, kind)
    controller.cycle()
    status = get(cluster, "Backup")["status"]
    assert status["conditions"][0]["status"] == "True"
    assert status["rollout"][0]["current"] is True
    rb = cluster.get("rbac.authorization.k8s.io/v1", "rolebindings", "restik-sidecar-www", NS)
    assert (rb["roleRef"]["kind"], rb["roleRef"]["name"]) == ("Role", "restik-sidecar-www")
    assert rb["subjects"] == [{"kind": "ServiceAccount", "name": "default", "namespace": NS}]
    assert rb["metadata"]["ownerReferences"][0]["uid"] == get(cluster, "Backup")["metadata"]["uid"]

    cluster.clear_requests()
    stats = controller.cycle()
    assert stats.patched == 0
    assert writes(cluster) == []
    if kind in ("ReplicaSet", "ReplicationController"):
        return  # they also look for stale pods once; covered in the restart test
    assert calls(cluster) == LISTS


def test_steady_state_cycle_is_lists_only(cluster, controller):
    cluster.create(backup())
    for i in range(5):
        cluster.create(workload(name=f"w{i}"))
    controller.cycle()
    for i in range(5):
        rolled_out(cluster, "Deployment", f"w{i}")
    controller.cycle()
    cluster.clear_requests()
    controller.cycle()
    assert calls(cluster) == LISTS
    label_queries = [r.query.get("labelSelector") for r in cluster.requests[1:6]]
    assert label_queries == [CONFIG_LABEL] * 5


def test_update_when_the_backup_changes(cluster, controller):
    cluster.create(backup())
    cluster.create(workload())
    controller.cycle()
    first = get(cluster, "Deployment")
    b = get(cluster, "Backup")
    b["spec"]["backupSource"]["path"] = "/srv/www"
    cluster.update(b)
    cluster.clear_requests()
    assert controller.cycle().patched == 1
    after = get(cluster, "Deployment")
    mounts = after["spec"]["template"]["spec"]["containers"][1]["volumeMounts"]
    assert mounts[0]["mountPath"] == "/srv/www"
    hash_of = lambda o: o["spec"]["template"]["metadata"]["annotations"][HASH_ANNOTATION]  # noqa: E731
    assert hash_of(after) != hash_of(first)


def test_schedule_change_does_not_touch_workloads(cluster, controller):
    cluster.create(backup())
    cluster.create(workload())
    controller.cycle()
    b = get(cluster, "Backup")
    b["spec"]["schedule"] = "*/5 * * * *"
    cluster.update(b)
    cluster.clear_requests()
    controller.cycle()
    # only the status follows the new generation
    assert writes(cluster) == [
        ("PATCH", "/apis/backup.appscode.com/v1beta1/namespaces/web/backups/www/status")
    ]


def test_remove_when_unlabeled_restores_the_original(cluster, controller):
    cluster.create(backup())
    original = cluster.create(workload())
    controller.cycle()
    obj = get(cluster, "Deployment")
    del obj["metadata"]["labels"][CONFIG_LABEL]
    cluster.update(obj)
    cluster.clear_requests()
    stats = controller.cycle()
    assert stats.patched == 1
    assert ("GET", "/apis/apps/v1/namespaces/web/deployments/www") in calls(cluster)
    restored = get(cluster, "Deployment")
    assert restored["spec"]["template"] == original["spec"]["template"]
    # the RoleBinding has no workload left
    assert (
        "DELETE",
        "/apis/rbac.authorization.k8s.io/v1/namespaces/web/rolebindings/restik-sidecar-www",
    ) in writes(cluster)
    cluster.clear_requests()
    controller.cycle()
    assert writes(cluster) == []


def test_unlabel_is_seen_by_a_fresh_controller_through_the_annotation(cluster, kubeconfig):
    """A restarted controller finds the sidecar by restik's hash annotation (never by the
    Backup's status.workloads, which the sidecar role may write)."""
    cluster.create(backup())
    original = cluster.create(workload())
    Controller(Kube.connect(str(kubeconfig)), Settings()).cycle()
    obj = get(cluster, "Deployment")
    del obj["metadata"]["labels"][CONFIG_LABEL]
    cluster.update(obj)
    Controller(Kube.connect(str(kubeconfig)), Settings()).cycle()  # restarted controller
    assert get(cluster, "Deployment")["spec"]["template"] == original["spec"]["template"]


def test_remove_when_the_backup_is_deleted(cluster, controller):
    cluster.create(backup())
    original = cluster.create(workload())
    controller.cycle()
    cluster.delete(BACKUP_API, "Backup", "www", NS)
    # garbage collection removes the RoleBinding owned by the Backup
    assert (
        cluster.get("rbac.authorization.k8s.io/v1", "rolebindings", "restik-sidecar-www", NS)
        is None
    )
    cluster.clear_requests()
    assert controller.cycle().patched == 1
    assert get(cluster, "Deployment")["spec"]["template"] == original["spec"]["template"]
    assert writes(cluster) == [("PATCH", "/apis/apps/v1/namespaces/web/deployments/www")]


def test_invalid_backup_is_reported_once_and_keeps_the_sidecar(cluster, controller):
    cluster.create(backup())
    cluster.create(backup(name="ok", path="/data"))
    cluster.create(workload(sa="app"))
    cluster.create(workload(name="second", label="ok", sa="app"))
    controller.cycle()
    rolled_out(cluster, "Deployment")
    rolled_out(cluster, "Deployment", "second")
    controller.cycle()
    b = get(cluster, "Backup")
    b["spec"]["schedule"] = "61 * * * *"
    cluster.update(b)
    cluster.clear_requests()
    stats = controller.cycle()
    assert stats.patched == 0
    assert containers(get(cluster, "Deployment")) == ["app", SIDECAR_NAME]
    assert containers(get(cluster, "Deployment", "second")) == ["app", SIDECAR_NAME]
    ready = get(cluster, "Backup")["status"]["conditions"][0]
    assert (ready["status"], ready["reason"]) == ("False", "InvalidSpec")
    assert "spec.schedule" in ready["message"]
    events = cluster.list("v1", "events", NS)
    assert [(e["type"], e["reason"], e["involvedObject"]["name"]) for e in events] == [
        ("Warning", "InvalidSpec", "www")
    ]
    assert writes(cluster) == [
        ("PATCH", "/apis/backup.appscode.com/v1beta1/namespaces/web/backups/www/status"),
        ("POST", "/api/v1/namespaces/web/events"),
    ]
    cluster.clear_requests()
    controller.cycle()
    assert writes(cluster) == []  # once per change, not every cycle


def test_missing_volume_is_reported_on_the_backup(cluster, controller):
    cluster.create(backup(volume="nope"))
    cluster.create(workload())
    controller.cycle()
    assert containers(get(cluster, "Deployment")) == ["app"]
    ready = get(cluster, "Backup")["status"]["conditions"][0]
    assert (ready["status"], ready["reason"]) == ("False", "WorkloadMisconfigured")
    assert "nope" in ready["message"]


def test_backup_in_another_namespace_is_not_used(cluster, controller):
    cluster.create({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "other"}})
    b = backup()
    b["metadata"]["namespace"] = "other"
    cluster.create(b)
    cluster.create(workload())
    controller.cycle()
    assert containers(get(cluster, "Deployment")) == ["app"]
    assert cluster.list("rbac.authorization.k8s.io/v1", "rolebindings") == []


def test_rolebinding_lists_every_service_account(cluster, controller):
    cluster.create(backup())
    cluster.create(workload(sa="alpha"))
    cluster.create(workload(kind="StatefulSet", sa="beta"))
    controller.cycle()
    rb = cluster.get("rbac.authorization.k8s.io/v1", "rolebindings", "restik-sidecar-www", NS)
    assert [s["name"] for s in rb["subjects"]] == ["alpha", "beta"]


def test_conflict_means_replan_next_cycle(cluster, controller, monkeypatch):
    cluster.create(backup())
    cluster.create(workload())
    real_patch = controller.kube.merge_patch

    def racing_patch(path, patch, dry_run=False):
        if "/deployments/" in path:
            obj = get(cluster, "Deployment")
            obj["metadata"]["annotations"] = {"someone": "else"}
            cluster.update(obj)  # a user writes between our LIST and our PATCH
        return real_patch(path, patch, dry_run)

    monkeypatch.setattr(controller.kube, "merge_patch", racing_patch)
    stats = controller.cycle()
    assert (stats.patched, stats.conflicts, stats.errors) == (0, 1, 0)
    assert containers(get(cluster, "Deployment")) == ["app"]
    monkeypatch.setattr(controller.kube, "merge_patch", real_patch)
    assert controller.cycle().patched == 1
    obj = get(cluster, "Deployment")
    assert containers(obj) == ["app", SIDECAR_NAME]
    assert obj["metadata"]["annotations"] == {"someone": "else"}


def test_stale_replicaset_pods_are_evicted_one_at_a_time_while_the_others_are_ready(
    cluster, kubeconfig
):
    """Issue 12 item 2: through the Eviction API, never below replicas - 1 Ready pods."""
    controller = Controller(Kube.connect(str(kubeconfig)), Settings(max_restarts=5))
    cluster.create(backup())
    spec = workload("ReplicaSet")
    spec["spec"]["replicas"] = 3
    rs = cluster.create(spec)
    for i in range(3):
        cluster.create(owned_pod(rs, f"www-{i}"))
    cluster.create(
        {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": "unrelated", "namespace": NS, "labels": {"app": "www"}},
            "spec": {"containers": [{"name": "x", "image": "x"}]},
        }
    )
    evictions = []
    cluster.clear_requests()
    controller.cycle()  # inject, then evict the first stale pod
    for round_ in range(3):
        evicted = [r for r in cluster.writes() if r.subresource == "eviction"]
        assert [r.method for r in cluster.writes() if r.resource == "pods"] == ["POST"] * len(
            evicted
        )  # evictions only, never a DELETE
        evictions += [r.name for r in evicted]
        assert len(evictions) == round_ + 1
        body = evicted[0].body
        assert body == {
            "apiVersion": "policy/v1",
            "kind": "Eviction",
            "metadata": {"name": evictions[-1], "namespace": NS},
        }
        # the ReplicaSet would now create a replacement: not Ready yet, so restik waits
        rs = get(cluster, "ReplicaSet")
        cluster.create(owned_pod(rs, f"new-{round_}", ready=False))
        cluster.clear_requests()
        controller.cycle()
        assert [r for r in cluster.writes() if r.resource == "pods"] == []
        ready = cluster.get("v1", "Pod", f"new-{round_}", NS)
        ready["status"]["conditions"][0]["status"] = "True"
        cluster.update(ready, subresource="status")
        cluster.clear_requests()
        controller.cycle()
    assert evictions == ["www-0", "www-1", "www-2"]
    names = sorted(p["metadata"]["name"] for p in cluster.list("v1", "pods", NS))
    assert names == ["new-0", "new-1", "new-2", "unrelated"]
    rolled_out(cluster, "ReplicaSet", replicas=3)  # what the ReplicaSet controller reports
    controller.cycle()
    status = get(cluster, "Backup")["status"]
    assert status["rollout"][0]["current"] is True, status
    assert status["conditions"][0]["status"] == "True"
    cluster.clear_requests()
    controller.cycle()
    assert calls(cluster) == LISTS


def test_dry_run_writes_nothing_and_prints_the_patch(cluster, kubeconfig, capsys):
    import io

    cluster.create(backup())
    cluster.create(workload())
    out = io.StringIO()
    c = Controller(Kube.connect(str(kubeconfig)), Settings(dry_run=True), out=out)
    cluster.clear_requests()
    stats = c.cycle()
    assert stats.planned == 1
    assert writes(cluster) == []
    text = out.getvalue()
    assert "a/apps.v1.Deployment.web.www" in text
    assert (
        "+      - name: restik" in text or "+  - name: restik" in text or "- name: restik" in text
    )


def test_dry_run_on_a_cluster_without_the_crd_creates_nothing(emulator, kubeconfig):
    c = Controller(Kube.connect(str(kubeconfig)), Settings(dry_run=True))
    c.cycle()
    assert writes(emulator) == []


def test_lists_are_read_page_by_page(cluster, kubeconfig):
    controller = Controller(Kube.connect(str(kubeconfig)), Settings(page_size=2))
    cluster.create(backup())
    for i in range(5):
        cluster.create(workload(name=f"w{i}"))
    assert controller.cycle().patched == 5
    pages = [r for r in cluster.requests if r.path == "/apis/apps/v1/deployments"]
    assert [r.query.get("limit") for r in pages] == ["2", "2", "2"]
    assert [bool(r.query.get("continue")) for r in pages] == [False, True, True]
    cluster.clear_requests()
    assert controller.cycle().patched == 0
    assert writes(cluster) == []


def test_owned_replicaset_is_never_patched_and_reported_once(cluster, controller):
    """Issue 12 item 1: the Deployment's ReplicaSet inherits the template's opt-in label."""
    cluster.create(backup())
    dep = cluster.create(workload(sa="app"))
    rs = workload("ReplicaSet", name="www-5d8f")
    rs["metadata"]["ownerReferences"] = [
        {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "name": "www",
            "uid": dep["metadata"]["uid"],
            "controller": True,
        }
    ]
    cluster.create(rs)
    cluster.clear_requests()
    controller.cycle()
    rolled_out(cluster, "Deployment")
    controller.cycle()
    patched = [p for m, p in writes(cluster) if m == "PATCH" and "/replicasets/" in p]
    assert patched == []
    assert containers(get(cluster, "ReplicaSet", "www-5d8f")) == ["app"]
    assert containers(get(cluster, "Deployment")) == ["app", SIDECAR_NAME]
    status = get(cluster, "Backup")["status"]
    assert status["workloads"] == ["Deployment/www"]
    [ready] = status["conditions"]
    assert ready["status"] == "True"
    assert "ReplicaSet/www-5d8f: owned by Deployment/www" in ready["message"]
    assert "label the Deployment, not its ReplicaSet" in ready["message"]
    events = cluster.list("v1", "events", NS)
    assert [(e["type"], e["reason"]) for e in events] == [("Warning", "OwnedWorkload")]
    assert "label the Deployment, not its ReplicaSet" in events[0]["message"]
    controller.cycle()  # reported once, not every cycle
    assert len(cluster.list("v1", "events", NS)) == 1


def test_sidecars_orphaned_while_no_controller_ran_are_removed_at_start(cluster, kubeconfig):
    """Issue 12 item 12: label and Backup both gone while the controller was down; nothing
    (no status.workloads, no memory) points at the workloads but restik's hash annotation."""
    cluster.create(backup())
    originals = [cluster.create(workload(name=f"w{i}")) for i in range(3)]
    cluster.create(workload(name="plain", label=None))
    Controller(Kube.connect(str(kubeconfig)), Settings()).cycle()
    cluster.delete(BACKUP_API, "Backup", "www", NS)
    for i in range(3):
        obj = get(cluster, "Deployment", f"w{i}")
        del obj["metadata"]["labels"][CONFIG_LABEL]
        cluster.update(obj)
    cluster.clear_requests()
    fresh = Controller(Kube.connect(str(kubeconfig)), Settings(page_size=2))
    stats = fresh.cycle()
    assert stats.patched == 3
    for i, original in enumerate(originals):
        assert (
            get(cluster, "Deployment", f"w{i}")["spec"]["template"] == original["spec"]["template"]
        )
    first = [r for r in cluster.requests if r.path == "/apis/apps/v1/deployments"]
    assert [r.query.get("labelSelector") for r in first] == [None, None]  # 4 objects, 2 pages
    cluster.clear_requests()
    assert fresh.cycle().patched == 0
    later = [r for r in cluster.requests if r.path == "/apis/apps/v1/deployments"]
    assert [r.query.get("labelSelector") for r in later] == [CONFIG_LABEL]


def test_a_cycle_stops_writing_when_leadership_is_lost(cluster, controller):
    """Issue 12 item 13: leadership is checked between the steps of a cycle."""
    cluster.create(backup())
    for i in range(3):
        cluster.create(workload(name=f"w{i}"))
    answers = iter([True, True])  # two writes, then the Lease is no longer ours
    controller.leading = lambda: next(answers, False)
    cluster.clear_requests()
    stats = controller.cycle()
    assert stats.lost_leadership
    assert writes(cluster) == [
        ("PATCH", "/apis/apps/v1/namespaces/web/deployments/w0"),
        ("PATCH", "/apis/apps/v1/namespaces/web/deployments/w1"),
    ]


def test_an_image_upgrade_rolls_at_most_max_rollouts_workloads_per_cycle(cluster, kubeconfig):
    """Issue 12 item 10: updates are limited per cycle; new injections are not."""
    cluster.create(backup())
    for i in range(5):
        cluster.create(workload(name=f"w{i}"))
    kube = Kube.connect(str(kubeconfig))
    assert Controller(kube, Settings(max_rollouts=2)).cycle().patched == 5  # injections
    cluster.create(workload(name="new"))
    upgraded = Controller(kube, Settings(max_rollouts=2, sidecar_image="restik:9.9"))
    images = lambda: {  # noqa: E731
        o["metadata"]["name"]: o["spec"]["template"]["spec"]["containers"][-1]["image"]
        for o in cluster.list("apps/v1", "deployments", NS)
    }
    stats = upgraded.cycle()
    assert (stats.patched, stats.deferred) == (3, 3)  # "new" injected + 2 updated
    assert sorted(images().values()).count("restik:9.9") == 3
    assert upgraded.cycle().deferred == 1
    stats = upgraded.cycle()
    assert (stats.patched, stats.deferred) == (1, 0)
    assert set(images().values()) == {"restik:9.9"}
    # --dry-run still shows every planned change
    cluster.clear_requests()
    dry = Controller(kube, Settings(dry_run=True, max_rollouts=1, sidecar_image="restik:10"))
    assert dry.cycle().planned == 6


def test_max_rollouts_option_and_environment(monkeypatch):
    from reconciler.cli import build_parser

    args = build_parser().parse_args(["run"])
    assert Settings.from_args(args).max_rollouts == 10
    assert (
        Settings.from_args(build_parser().parse_args(["run", "--max-rollouts", "3"])).max_rollouts
        == 3
    )
    monkeypatch.setenv("RESTIK_MAX_ROLLOUTS", "25")
    assert Settings.from_args(build_parser().parse_args(["run"])).max_rollouts == 25


def test_owned_replicasets_of_one_deployment_make_one_warning(cluster, controller):
    cluster.create(backup())
    dep = cluster.create(workload(sa="app"))
    for name in ("www-b", "www-a"):
        rs = workload("ReplicaSet", name=name)
        rs["metadata"]["ownerReferences"] = [
            {"apiVersion": "apps/v1", "kind": "Deployment", "name": "www",
             "uid": dep["metadata"]["uid"], "controller": True}
        ]  # fmt: skip
        cluster.create(rs)
    controller.cycle()
    [event] = cluster.list("v1", "events", NS)
    assert event["message"] == (
        "ReplicaSet/www-a, ReplicaSet/www-b: owned by Deployment/www, left unchanged: "
        "label the Deployment, not its ReplicaSet"
    )
    message = get(cluster, "Backup")["status"]["conditions"][0]["message"]
    assert message.endswith("; " + event["message"])


def converged_restart_cluster(cluster, kubeconfig):
    """Backups in "web" and "db"; in "web" a ReplicaSet (2 pods), a ReplicationController and
    a Deployment, in "db" an OnDelete StatefulSet (1 pod), an unrelated pod in each: all
    injected, every pod running the current template."""
    cluster.create({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "db"}})
    for ns in (NS, "db"):
        b = backup()
        b["metadata"]["namespace"] = ns
        cluster.create(b)
    rs = workload("ReplicaSet")
    rs["spec"]["replicas"] = 2
    cluster.create(rs)
    cluster.create(workload("ReplicationController", name="rc"))
    cluster.create(workload("Deployment", name="dep"))
    sts = workload("StatefulSet", name="pg")
    sts["metadata"]["namespace"] = "db"
    sts["spec"]["updateStrategy"] = {"type": "OnDelete"}
    cluster.create(sts)
    Controller(Kube.connect(str(kubeconfig)), Settings()).cycle()
    rs = get(cluster, "ReplicaSet")
    for i in range(2):
        cluster.create(owned_pod(rs, f"www-{i}"))
    sts = cluster.get("apps/v1", "StatefulSet", "pg", "db")
    pod = owned_pod(sts, "pg-0")
    pod["metadata"]["namespace"] = "db"
    cluster.create(pod)
    for ns in (NS, "db"):
        cluster.create(
            {
                "apiVersion": "v1",
                "kind": "Pod",
                "metadata": {"name": "unrelated", "namespace": ns, "labels": {"app": "www"}},
                "spec": {"containers": [{"name": "x", "image": "x"}]},
            }
        )
    rolled_out(cluster, "Deployment", "dep")
    sts["status"] = {"observedGeneration": sts["metadata"]["generation"], "replicas": 1}
    cluster.update(sts, subresource="status")
    converge = Controller(Kube.connect(str(kubeconfig)), Settings())
    converge.cycle()
    cluster.clear_requests()
    converge.cycle()
    assert writes(cluster) == []


def test_a_first_cycle_on_a_converged_cluster_lists_pods_once_per_namespace(cluster, kubeconfig):
    """Issue 14: after a start, stale pods are looked for with one pod LIST per namespace
    that has workloads restik restarts (no GET, no pod LIST per workload); the cycle after
    it is the LISTs only."""
    converged_restart_cluster(cluster, kubeconfig)
    fresh = Controller(Kube.connect(str(kubeconfig)), Settings())
    cluster.clear_requests()
    stats = fresh.cycle()
    assert (stats.patched, stats.restarted, stats.errors) == (0, 0, 0)
    assert calls(cluster) == [
        (
            "GET",
            "/apis/apiextensions.k8s.io/v1/customresourcedefinitions/backups.backup.appscode.com",
        ),
        (
            "GET",
            "/apis/apiextensions.k8s.io/v1/customresourcedefinitions/restores.backup.appscode.com",
        ),
        *LISTS[:-1],
        ("GET", "/api/v1/namespaces/db/pods"),
        ("GET", "/api/v1/namespaces/web/pods"),
        LISTS[-1],  # the Restores, after the Backups' writes
    ]
    pod_lists = [r for r in cluster.requests if r.resource == "pods"]
    assert [r.query.get("labelSelector") for r in pod_lists] == [None, None]
    assert writes(cluster) == []
    cluster.clear_requests()
    fresh.cycle()
    assert calls(cluster) == LISTS
    dry = Controller(Kube.connect(str(kubeconfig)), Settings(dry_run=True), out=io.StringIO())
    cluster.clear_requests()
    dry.cycle()  # restarts nothing, so looks at no pod
    assert calls(cluster)[2:] == LISTS[:-1]  # a dry run plans no Restore


def test_the_pod_list_is_read_page_by_page(cluster, kubeconfig):
    converged_restart_cluster(cluster, kubeconfig)
    fresh = Controller(Kube.connect(str(kubeconfig)), Settings(page_size=2))
    cluster.clear_requests()
    fresh.cycle()
    pages = [r for r in cluster.requests if r.path == "/api/v1/namespaces/web/pods"]
    assert [r.query.get("limit") for r in pages] == ["2", "2"]  # 3 pods
    assert [bool(r.query.get("continue")) for r in pages] == [False, True]
    assert writes(cluster) == []


def test_a_stale_pod_found_after_a_start_is_evicted_without_a_get(cluster, kubeconfig):
    converged_restart_cluster(cluster, kubeconfig)
    pod = cluster.get("v1", "Pod", "www-1", NS)
    pod["metadata"]["annotations"][HASH_ANNOTATION] = "old"
    cluster.update(pod)  # as if the controller had died before restarting it
    fresh = Controller(Kube.connect(str(kubeconfig)), Settings())
    cluster.clear_requests()
    assert fresh.cycle().restarted == 1
    gets = [r.path for r in cluster.requests if r.method == "GET" and r.name]
    assert gets == [
        "/apis/apiextensions.k8s.io/v1/customresourcedefinitions/backups.backup.appscode.com",
        "/apis/apiextensions.k8s.io/v1/customresourcedefinitions/restores.backup.appscode.com",
    ]  # no GET of the ReplicaSet
    assert writes(cluster) == [
        ("POST", "/api/v1/namespaces/web/pods/www-1/eviction"),
        ("PATCH", "/apis/backup.appscode.com/v1beta1/namespaces/web/backups/www/status"),
    ]
    rollout = {e["workload"]: e for e in get(cluster, "Backup")["status"]["rollout"]}
    assert rollout["ReplicaSet/www"]["current"] is False


def test_the_sidecars_status_fields_survive_the_controllers_status_writes(cluster, controller):
    """The controller's status patch replaces status.conditions whole: it is conditional on
    the Backup it was computed from, so a sidecar's report written in between (its
    LastRunSucceeded condition, backupCount, lastBackupTime) makes it a conflict, replanned
    next cycle, never a lost report."""
    cluster.create(backup())
    cluster.create(workload())
    controller.cycle()

    def sidecar_reports():
        current = get(cluster, "Backup")
        patch = run_status_patch(
            current.get("status") or {},
            Outcome(success=True, message="snapshot abc saved", duration=1.5),
            1,
            datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC),
            current["metadata"]["resourceVersion"],
            host="www",
        )
        cluster.patch(BACKUP_API, "backups", "www", patch, NS, subresource="status")

    real_patch = controller.kube.merge_patch

    def racing_patch(path, patch, dry_run=False):
        if path.endswith("/status"):
            sidecar_reports()  # between the controller's LIST and its status write
        return real_patch(path, patch, dry_run)

    cluster.create(workload(name="second"))  # the Ready message changes
    controller.kube.merge_patch = racing_patch
    stats = controller.cycle()
    assert (stats.conflicts, stats.errors, stats.status_writes) == (1, 0, 0)
    controller.kube.merge_patch = real_patch
    status = get(cluster, "Backup")["status"]
    assert [c["type"] for c in status["conditions"]] == ["Ready", "LastRunSucceeded"]
    assert status["backupCount"] == 1
    stats = controller.cycle()
    assert (stats.conflicts, stats.status_writes) == (0, 1)
    status = get(cluster, "Backup")["status"]
    conditions = {c["type"]: c for c in status["conditions"]}
    assert conditions["LastRunSucceeded"]["message"] == "run 1: snapshot abc saved"
    assert "2 workload(s)" in conditions["Ready"]["message"]
    assert (status["backupCount"], status["lastBackupTime"]) == (1, "2026-01-02T03:04:05Z")
    assert status["workloads"] == ["Deployment/second", "Deployment/www"]


def test_rolebinding_writes_are_counted_apart_from_status_writes(cluster, controller):
    cluster.create(backup())
    cluster.create(workload())
    stats = controller.cycle()
    # the sidecars' Role and its RoleBinding
    assert (stats.patched, stats.rbac_writes, stats.status_writes) == (1, 2, 1)
    cluster.delete(BACKUP_API, "Backup", "www", NS)
    cluster.create(backup(name="other"))
    obj = get(cluster, "Deployment")
    obj["metadata"]["labels"][CONFIG_LABEL] = "other"
    cluster.update(obj)
    stats = controller.cycle()
    assert (stats.patched, stats.rbac_writes, stats.status_writes) == (1, 2, 1)


def test_a_label_naming_a_missing_backup_is_a_warning_event_on_the_workload_once(
    cluster, kubeconfig
):
    """Issue 18: `config: wwww` with a Backup `www` is reported on the workload, with the
    closest name, once per problem (remembered by the process: a restart reports it once
    more), and again if the mistake comes back after a fix."""
    controller = Controller(Kube.connect(str(kubeconfig)), Settings())
    cluster.create(backup())
    dep = cluster.create(workload(label="wwww", sa="app"))  # not default: no warning of it
    stats = controller.cycle()
    assert (stats.events, stats.patched, stats.errors) == (1, 0, 0)
    [event] = cluster.list("v1", "events", NS)
    assert event["type"] == "Warning"
    assert event["reason"] == "BackupNotFound"
    assert event["message"] == "Backup web/wwww not found (did you mean 'www'?)"
    assert event["involvedObject"] == {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "name": "www",
        "namespace": NS,
        "uid": dep["metadata"]["uid"],
    }
    assert event["source"] == {"component": "restik-controller"}
    cluster.clear_requests()
    controller.cycle()
    assert calls(cluster) == LISTS  # not every cycle
    fixed = get(cluster, "Deployment")
    fixed["metadata"]["labels"][CONFIG_LABEL] = "www"
    cluster.update(fixed)
    assert controller.cycle().patched == 1
    broken = get(cluster, "Deployment")
    broken["metadata"]["labels"][CONFIG_LABEL] = "wwww"
    cluster.update(broken)
    controller.cycle()  # the Backup is missing now: the sidecar goes, nothing to warn of
    assert controller.cycle().events == 1  # unowned and mislabeled again: reported again
    assert len(cluster.list("v1", "events", NS)) == 2
    restarted = Controller(Kube.connect(str(kubeconfig)), Settings())
    assert restarted.cycle().events == 1
    assert restarted.cycle().events == 0


@pytest.mark.parametrize(
    ("status", "counted"),
    [(409, "conflicts"), (403, "errors"), (500, "errors")],
)
def test_one_error_policy_for_every_write(
    cluster, controller, monkeypatch, caplog, status, counted
):
    """A 409 is a conflict and any other error an error, whatever the write (a RoleBinding
    here: its 409 used to count as a conflict but a status write's as an error); the error
    is logged with the object, and the other writes of the cycle go on."""
    cluster.create(backup())
    cluster.create(workload())

    def failing_create(path, body):
        raise ApiError(status, "Refused", "by the test")

    monkeypatch.setattr(controller.kube, "create", failing_create)
    stats = controller.cycle()
    other = "errors" if counted == "conflicts" else "conflicts"
    assert (getattr(stats, counted), getattr(stats, other)) == (1, 0)
    assert (stats.patched, stats.rbac_writes, stats.status_writes) == (1, 0, 1)
    if counted == "errors":
        # the Role is the first RBAC write; its RoleBinding waits for it (next cycle)
        assert f"creating Role web/restik-sidecar-www failed: {status} Refused" in caplog.text
        assert "RoleBinding" not in caplog.text


def test_a_rolebinding_already_deleted_is_not_an_error(cluster, controller, monkeypatch):
    """A 404 on a delete means the object is gone, as wanted: no error, no conflict."""
    cluster.create(backup())
    cluster.create(workload())
    controller.cycle()
    obj = get(cluster, "Deployment")
    obj["metadata"]["labels"][CONFIG_LABEL] = "other"  # no workload left for "www"
    cluster.update(obj)
    rb_api = "rbac.authorization.k8s.io/v1"
    listed = cluster.get(rb_api, "rolebindings", "restik-sidecar-www", NS)
    cluster.delete(rb_api, "rolebindings", "restik-sidecar-www", NS)  # by someone else
    real_pages = controller.kube.list_pages

    def pages_listed_before_the_delete(path, selector=None, limit=500):
        for rv, items in real_pages(path, selector, limit):
            yield rv, [listed] if "/rolebindings" in path else items

    monkeypatch.setattr(controller.kube, "list_pages", pages_listed_before_the_delete)
    cluster.clear_requests()
    stats = controller.cycle()
    assert (stats.errors, stats.conflicts, stats.rbac_writes) == (0, 0, 1)  # 1: the Role
    [delete] = [r for r in cluster.requests if r.method == "DELETE" and "/rolebindings/" in r.path]
    assert (delete.path, delete.status) == (
        f"/apis/{rb_api}/namespaces/web/rolebindings/restik-sidecar-www",
        404,
    )


def test_a_failed_pod_list_of_one_namespace_leaves_the_others_read(cluster, kubeconfig):
    """After a start restik LISTs the pods of every namespace with restart candidates, one
    request ahead; a failure in one namespace is counted and the next ones are still read."""
    from reconciler.controller.observe import Observer
    from reconciler.controller.render import Renderer
    from reconciler.kube.client import ApiError

    uids = {}
    cluster.create({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "aaa"}})
    for ns in ("aaa", "web"):
        b = backup()
        b["metadata"]["namespace"] = ns
        cluster.create(b)
        rs = workload("ReplicaSet")
        rs["metadata"]["namespace"] = ns
        rs = cluster.create(rs)
        cluster.create(owned_pod(rs, "www-1"))
        uids[ns] = rs["metadata"]["uid"]

    class FailingPods:
        def __init__(self, kube):
            self.kube = kube

        def __getattr__(self, name):
            return getattr(self.kube, name)

        def list(self, path, *args, **kwargs):
            if path == "/api/v1/namespaces/aaa/pods":
                raise ApiError(500, "InternalError", "injected")
            return self.kube.list(path, *args, **kwargs)

    observer = Observer(FailingPods(Kube.connect(str(kubeconfig))), Settings(), Renderer())
    snap = observer.observe(
        with_backups=True, first_cycle=True, known_injected=set(), pending_restarts=set()
    )
    assert {r.namespace for r in snap.restart_candidates} == {"aaa", "web"}
    assert snap.errors == 1
    assert snap.pod_namespaces == {"web"}
    assert [p["metadata"]["name"] for p in snap.pods[uids["web"]]] == ["www-1"]
    assert uids["aaa"] not in snap.pods
