"""Issue 13 (multi-tenant safety): what a tenant's objects or a backed-up pod can make restik do."""

from __future__ import annotations

import threading
from datetime import UTC, datetime

import pytest

from reconciler.api.constants import CONFIG_LABEL, SIDECAR_NAME
from reconciler.controller.cycle import Controller
from reconciler.controller.loop import Loop
from reconciler.controller.options import Settings
from reconciler.controller.reconcilers.rbac import desired_role, desired_rolebinding
from reconciler.kube.client import Kube
from tests.factories import make_backup, needs_restic, write_tree
from tests.test_controller import BACKUP_API, NS, backup, containers, get, workload
from tests.test_kustomize import _built, find, rights

FORGED = [
    "Deployment/../../tenant-v/deployments/other",
    "Deployment/app/status?watch=true",
    "Secret/www-restic",
    "Deployment/UPPER",
    "Deployment/",
]


def in_namespace(obj: dict, namespace: str) -> dict:
    obj["metadata"]["namespace"] = namespace
    return obj


def forge_status(emu, entries: list[str], name: str = "www") -> None:
    """What any pod bound to the sidecar role could write: backups/status of its Backup."""
    obj = emu.get(BACKUP_API, "Backup", name, NS)
    obj["status"] = {**(obj.get("status") or {}), "workloads": entries}
    emu.update(obj, subresource="status")


def test_forged_status_workloads_are_never_requested(cluster, kubeconfig):
    """Item 1: status.workloads is tenant-writable; the controller never builds a request from
    it, so a traversal reaches nothing and a query string breaks no cycle."""
    cluster.create({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "tenant-v"}})
    cluster.create(in_namespace(backup("tv"), "tenant-v"))
    cluster.create(in_namespace(workload(name="other", label="tv"), "tenant-v"))
    cluster.create(backup())
    cluster.create(workload())
    controller = Controller(Kube.connect(str(kubeconfig)), Settings())
    controller.cycle()
    forge_status(cluster, FORGED)
    cluster.create(workload(name="second"))  # another workload: the cycle must still act
    cluster.clear_requests()
    stats = controller.cycle()
    assert stats.errors == 0
    assert stats.patched == 1
    for request in cluster.requests:
        assert "%2F" not in request.path and "%3F" not in request.path, request.path
        assert "UPPER" not in request.path and "secrets" not in request.path
    other = cluster.get("apps/v1", "Deployment", "other", "tenant-v")
    assert containers(other) == ["app", SIDECAR_NAME]
    assert containers(get(cluster, "Deployment", "second")) == ["app", SIDECAR_NAME]
    # The controller writes status.workloads from what it selected, not from what it read.
    assert get(cluster, "Backup")["status"]["workloads"] == ["Deployment/second", "Deployment/www"]


def test_a_leader_again_looks_for_orphans_like_after_a_start(cluster, kubeconfig):
    """Item 1: without status.workloads, a replica that was leader before must not trust its
    memory: another leader may have injected workloads meanwhile. Regaining leadership makes
    the next cycle list every workload unselected (restik's hash annotation marks its own)."""
    cluster.create(backup())
    original = cluster.create(workload())
    settings = Settings()
    ours = Controller(Kube.connect(str(kubeconfig)), settings)
    runner = Loop(ours, settings)
    ours.cycle()
    runner._leadership(False)
    other = cluster.create(workload(name="later"))
    Controller(Kube.connect(str(kubeconfig)), settings).cycle()  # the other leader injects
    for name in ("www", "later"):
        obj = get(cluster, "Deployment", name)
        del obj["metadata"]["labels"][CONFIG_LABEL]
        cluster.update(obj)
    runner._leadership(True)
    assert ours.cycle().patched == 2
    assert get(cluster, "Deployment")["spec"]["template"] == original["spec"]["template"]
    assert get(cluster, "Deployment", "later")["spec"]["template"] == other["spec"]["template"]


@needs_restic
def test_a_directory_listing_never_reaches_an_event(tmp_path, job_for):
    """Item 3: the repository directory is not empty and has no config: the run fails without
    `restic init`, and its message (the Event, the status) counts entries, never names them."""
    src = write_tree(tmp_path / "src", {"a.txt": b"one\n"})
    repo = write_tree(tmp_path / "repo", {"payroll-2026.xlsx": b"x", "hr/notes.txt": b"y"})
    out = job_for(make_backup(str(src), str(repo))).run()
    assert not out.success and not (repo / "config").exists()
    assert "not empty (2 entries)" in out.message
    assert "payroll" not in out.message and "hr," not in out.message


# ---------------------------------------------------------------- item 2: the sidecar's rights


def may(granted: set[tuple], group: str, resource: str, verb: str, name: str | None) -> bool:
    return (group, resource, verb, None) in granted or (group, resource, verb, name) in granted


def test_the_sidecars_role_is_limited_to_its_backups_own_objects():
    """Item 2: what a pod bound to Backup www's sidecar role may do to Backup other's
    objects (forge its status, renew its Leases) and to other Leases of the namespace."""
    raw = backup()
    raw["metadata"]["uid"] = "u-1"
    role = desired_role(raw, ["Deployment/www", "StatefulSet/db"])
    granted = rights(role)
    lease = "coordination.k8s.io", "leases"
    status = "backup.appscode.com", "backups/status"
    assert may(granted, *status, "patch", "www")
    assert not may(granted, *status, "patch", "other")
    for verb in ("get", "list", "watch"):
        assert may(granted, "backup.appscode.com", "backups", verb, "www")
        assert not may(granted, "backup.appscode.com", "backups", verb, "other")
    for name in ("restik-www-www", "restik-www-www-prune", "restik-www-db", "restik-www-db-prune"):
        assert may(granted, *lease, "get", name) and may(granted, *lease, "update", name)
    for name in ("restik-other-www", "app-leader", "restik-controller"):
        assert not may(granted, *lease, "update", name) and not may(granted, *lease, "get", name)
    assert may(granted, *lease, "create", None)  # RBAC cannot limit create by name
    assert unnamed(granted) == {
        ("backup.appscode.com", "backups", "get"),
        ("backup.appscode.com", "backups", "list"),
        ("backup.appscode.com", "backups", "watch"),
        ("backup.appscode.com", "backups/status", "patch"),
        ("", "events", "create"),
        ("", "pods", "get"),
        ("coordination.k8s.io", "leases", "create"),
        ("coordination.k8s.io", "leases", "get"),
        ("coordination.k8s.io", "leases", "update"),
    }
    binding = desired_rolebinding(raw, ["app"])
    assert binding["roleRef"] == {
        "apiGroup": "rbac.authorization.k8s.io",
        "kind": "Role",
        "name": "restik-sidecar-www",
    }
    assert role["metadata"]["ownerReferences"][0]["uid"] == "u-1"


def unnamed(granted: set[tuple]) -> set[tuple]:
    return {(g, r, v) for g, r, v, _ in granted}


def test_the_controller_holds_every_right_it_grants(tmp_path):
    """RBAC's escalation check: the controller may write the sidecar's Role only if it holds
    each of its rights itself (it has neither `escalate` nor `bind`), in both installs."""
    role = rights(desired_role(backup(), ["Deployment/www"]))
    cluster = rights(find(_built("install"), "ClusterRole", "restik-controller"))
    namespaced = rights(find(_built("namespaced"), "Role", "restik-controller"))
    for granted in (cluster, namespaced):
        assert {r for r in role if not may(granted, *r)} == set()
        assert not {v for _, _, v, _ in granted} & {"escalate", "bind"}


def test_roles_follow_the_workloads_and_go_with_them(cluster, kubeconfig):
    """The controller keeps the Role's Lease names to the labeled workloads, binds it (a Role,
    not a ClusterRole) and deletes both when no workload is left."""
    cluster.create(backup())
    cluster.create(workload(sa="app"))
    controller = Controller(Kube.connect(str(kubeconfig)), Settings())
    controller.cycle()
    rbac = "rbac.authorization.k8s.io/v1"
    role = cluster.get(rbac, "roles", "restik-sidecar-www", NS)
    [leases] = [r["resourceNames"] for r in role["rules"] if r.get("verbs") == ["get", "update"]]
    assert leases == ["restik-www-www", "restik-www-www-prune"]
    cluster.create(workload("StatefulSet", name="db", sa="app"))
    controller.cycle()
    role = cluster.get(rbac, "roles", "restik-sidecar-www", NS)
    [leases] = [r["resourceNames"] for r in role["rules"] if r.get("verbs") == ["get", "update"]]
    assert leases == [
        "restik-www-db",
        "restik-www-db-prune",
        "restik-www-www",
        "restik-www-www-prune",
    ]
    rb = cluster.get(rbac, "rolebindings", "restik-sidecar-www", NS)
    assert rb["roleRef"]["kind"] == "Role" and rb["roleRef"]["name"] == "restik-sidecar-www"
    cluster.clear_requests()
    controller.cycle()
    assert [r for r in cluster.writes() if r.resource != "backups"] == []  # in sync: no write
    for kind, name in (("Deployment", "www"), ("StatefulSet", "db")):
        obj = get(cluster, kind, name)
        del obj["metadata"]["labels"][CONFIG_LABEL]
        cluster.update(obj)
    controller.cycle()
    assert cluster.get(rbac, "roles", "restik-sidecar-www", NS) is None
    assert cluster.get(rbac, "rolebindings", "restik-sidecar-www", NS) is None


def test_binding_the_default_service_account_is_warned_once(cluster, kubeconfig, caplog):
    cluster.create(backup())
    cluster.create(workload(sa="app"))
    controller = Controller(Kube.connect(str(kubeconfig)), Settings())
    controller.cycle()
    assert cluster.list("v1", "events", NS) == []
    cluster.create(workload(name="plain"))  # no serviceAccountName: default
    controller.cycle()
    controller.cycle()
    [event] = cluster.list("v1", "events", NS)
    assert (event["type"], event["reason"]) == ("Warning", "DefaultServiceAccount")
    assert event["involvedObject"]["name"] == "www"
    assert "ServiceAccount default" in event["message"]
    assert sum("ServiceAccount default" in r.getMessage() for r in caplog.records) == 1


def _pod(name: str, owner: str | None = None) -> dict:
    meta: dict = {"name": name, "namespace": "default"}
    if owner:
        ref = {"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": f"{owner}-5d8f",
               "uid": f"u-{owner}", "controller": True}  # fmt: skip
        meta["ownerReferences"] = [ref]
        meta["labels"] = {"pod-template-hash": "5d8f"}
    return {"apiVersion": "v1", "kind": "Pod", "metadata": meta,
            "spec": {"containers": [{"name": "app", "image": "x"}]}}  # fmt: skip


def _lease(holder: str, seconds: int) -> dict:
    now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    return {
        "apiVersion": "coordination.k8s.io/v1",
        "kind": "Lease",
        "metadata": {"name": "restik-www-www", "namespace": "default"},
        "spec": {"holderIdentity": holder, "leaseDurationSeconds": seconds,
                 "acquireTime": now, "renewTime": now, "leaseTransitions": 0},
    }  # fmt: skip


@pytest.mark.slow
@pytest.mark.parametrize(
    ("holder", "seconds", "pods", "renew", "expected"),
    [
        ("www-b", 10**8, ["www-b"], False, "for 100000000s, longer than the 3s"),
        (
            "intruder",
            3,
            ["intruder:other"],
            False,
            "held by pod intruder, which is not a pod of Deployment/www",
        ),
        ("ghost", 3, [], True, "renewed by 'ghost', which is no pod of namespace default"),
    ],
    ids=["huge-duration", "pod-of-another-workload", "renewed-by-no-pod"],
)
def test_an_implausible_lease_is_a_failed_run(world, holder, seconds, pods, renew, expected):
    """Item 2: whatever else is bound to the sidecar's Role (the application shares its
    ServiceAccount) takes the Lease: the sidecar reports a Failed run with the reason instead
    of waiting silently (a huge duration used to stop every run with an INFO line)."""
    world.emu.create(_pod("www-a", "www"))
    for spec in pods:
        name, _, owner = spec.partition(":")
        world.emu.create(_pod(name, owner or "www"))
    world.emu.create(_lease(holder, seconds))
    world.backup(schedule="@every 1s")
    stop = threading.Event()
    renewer = None
    if renew:  # someone who is no pod keeps the Lease fresh

        def keep() -> None:
            while not stop.wait(0.5):
                lease = world.emu.get("coordination.k8s.io/v1", "leases", "restik-www-www",
                                      "default")  # fmt: skip
                lease["spec"]["renewTime"] = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
                world.emu.update(lease)

        renewer = threading.Thread(target=keep, daemon=True)
        renewer.start()
    try:
        sc = world.sidecar("--workload", "Deployment/www", "--lease-duration", "3s", pod="www-a")
        [event, *_] = world.wait_events(1, timeout=30)
        assert (event["type"], event["reason"]) == ("Warning", "Failed")
        assert expected in event["message"], event["message"]
        assert all(e["reason"] == "Failed" for e in world.events()), sc.log  # restic never ran
    finally:
        stop.set()
        if renewer is not None:
            renewer.join()


@pytest.mark.slow
def test_a_holder_that_is_a_pod_of_the_workload_is_trusted(world):
    """The other side: another replica's Lease is waited for, quietly, and taken over once
    it runs out (its pod is gone, nobody renews)."""
    world.emu.create(_pod("www-a", "www"))
    world.emu.create(_pod("www-b", "www"))
    world.emu.create(_lease("www-b", 3))
    world.backup(schedule="@every 1s")
    sc = world.sidecar("--workload", "Deployment/www", "--lease-duration", "3s", pod="www-a")
    [event, *_] = world.wait_events(1, timeout=40)
    assert event["reason"] != "Failed", event["message"]
    assert "took over Lease" in sc.log
