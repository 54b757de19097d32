"""Least privilege, checked against behaviour: every API call restik makes in a full set of
scenarios is allowed by the roles in kustomize/, and nothing beyond those calls is granted."""

from __future__ import annotations

import signal
import time

import pytest

from reconciler.api.constants import CONFIG_LABEL, SIDECAR_NAME, TRIGGER_ANNOTATION
from reconciler.controller.cycle import Controller
from reconciler.controller.options import Settings
from reconciler.controller.reconcilers.rbac import desired_role
from reconciler.kube.client import Kube
from reconciler.kube.lease import LeaderElector
from tests.factories import needs_restic
from tests.factories.cluster import (
    BACKUP_API,
    NS,
    backup,
    containers,
    finish,
    get,
    owned_pod,
    restik,
    wait_for,
    workload,
)
from tests.factories.kustomize import (
    CRD_CREATE_RIGHTS,
    GRANTED_ONLY_RIGHTS,
    KUSTOMIZE,
    NAMESPACE,
    SERVICE_ACCOUNT,
    _built,
    effective_rights,
    find,
    kustomize,
    overlay,
    rights,
)

# Rights the controller holds only to grant them in the sidecars' Roles (RBAC lets it write
# a Role only with rights it holds itself), and `bind`, which the RBAC API checks when the
# controller writes the RoleBinding that grants restik-restore's rights: not API calls of
# its own.
NOT_API_CALLS = GRANTED_ONLY_RIGHTS | {
    ("rbac.authorization.k8s.io", "clusterroles", "bind", role)
    for role in ("restik-restore", "restik-restore-exec")
}


def used_rights(requests) -> set[tuple]:
    """(apiGroup, resource[/subresource], verb, name or None) for each request made."""
    out = set()
    for r in requests:
        if not r.verb:
            continue
        resource = f"{r.resource}/{r.subresource}" if r.subresource else r.resource
        name = r.name if r.verb in ("get", "update", "patch", "delete") else None
        selector = r.query.get("fieldSelector") or ""
        if r.verb in ("list", "watch") and selector.startswith("metadata.name="):
            name = selector.partition("=")[2]  # RBAC matches it against resourceNames
        out.add((r.group, resource, r.verb, name))
    return out


def allowed(right: tuple, granted: set[tuple]) -> bool:
    group, resource, verb, name = right
    return (group, resource, verb, None) in granted or (group, resource, verb, name) in granted


def unnamed(rights_: set[tuple]) -> set[tuple]:
    return {(g, r, v) for g, r, v, _ in rights_}


def controller_scenarios(emulator, kubeconfig) -> None:
    """Drive the controller through everything it does: CRD, inject, update, restart,
    invalid Backup, unlabel, Backup deletion, RoleBindings, leader election, watches."""
    kube = Kube.connect(str(kubeconfig))
    c = Controller(kube, Settings(max_restarts=5))
    c.cycle()  # creates the CRD
    emulator.create({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NS}})
    emulator.create(backup())
    rs = emulator.create(workload("ReplicaSet", name="rs"))
    emulator.create(owned_pod(rs, "rs-1"))
    for kind in ("Deployment", "StatefulSet", "DaemonSet", "ReplicationController"):
        emulator.create(workload(kind, sa="app"))
    c.cycle()  # inject everywhere, RoleBinding created, pods restarted
    emulator.create(workload(name="late", sa="other"))
    c.cycle()  # RoleBinding updated (new subject)
    b = get(emulator, "Backup")
    b["spec"]["schedule"] = "61 * * * *"
    emulator.update(b)
    c.cycle()  # Warning Event
    b = get(emulator, "Backup")
    b["spec"]["schedule"] = "@hourly"
    b["spec"]["backupSource"]["path"] = "/srv"
    emulator.update(b)
    c.cycle()  # update
    obj = get(emulator, "Deployment")
    del obj["metadata"]["labels"][CONFIG_LABEL]
    emulator.update(obj)
    c.cycle()  # orphan GET + removal
    leftovers = [("StatefulSet", "www"), ("DaemonSet", "www"), ("ReplicationController", "www"),
                 ("ReplicaSet", "rs"), ("Deployment", "late")]  # fmt: skip
    for kind, name in leftovers:
        api = "v1" if kind == "ReplicationController" else "apps/v1"
        obj = emulator.get(api, kind, name, NS)
        del obj["metadata"]["labels"][CONFIG_LABEL]
        emulator.update(obj)
    c.cycle()  # the last workloads go: RoleBinding deleted
    # Restores: into a claim (a Job) and in place (the init container in and out)
    emulator.create({"apiVersion": "v1", "kind": "PersistentVolumeClaim",
                     "metadata": {"name": "copy", "namespace": NS},
                     "spec": {"accessModes": ["ReadWriteOnce"],
                              "resources": {"requests": {"storage": "1Gi"}}}})  # fmt: skip
    targets = {
        "to-pvc": {"pvc": {"claimName": "copy"}},
        "in-place": {"workload": {"kind": "Deployment", "name": "www"}},
    }
    for name, target in targets.items():
        emulator.create({"apiVersion": "backup.appscode.com/v1beta1", "kind": "Restore",
                         "metadata": {"name": name, "namespace": NS},
                         "spec": {"backup": "www", "target": target}})  # fmt: skip
    c.cycle()  # Job, RoleBindings, init container, status
    done = emulator.get("backup.appscode.com/v1beta1", "restores", "in-place", NS)
    done["status"] = {"phase": "Succeeded"}
    emulator.update(done, "status")
    c.cycle()  # the init container goes
    LeaderElector(kube, "restik-system", "restik-controller", "me").try_acquire()
    emulator.create(
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "restik-system"}}
    )
    elector = LeaderElector(kube, "restik-system", "restik-controller", "me")
    elector.try_acquire()  # create
    elector.try_acquire()  # renew: get + update

    # the long-running loop: watches
    proc = restik("run", "--interval", "5m", "--kubeconfig", str(kubeconfig))
    try:
        wait_for(lambda: any(r.verb == "watch" for r in emulator.requests), timeout=20)
        obj = get(emulator, "Deployment")
        obj["metadata"]["labels"][CONFIG_LABEL] = "www"
        emulator.update(obj)
        wait_for(lambda: SIDECAR_NAME in containers(get(emulator, "Deployment")), timeout=10)
        time.sleep(0.5)
    finally:
        proc.send_signal(signal.SIGTERM)
        finish(proc)


@pytest.fixture(scope="module")
def controller_calls(tmp_path_factory):
    from tests.emulator import Emulator

    with Emulator() as emu:
        kubeconfig = emu.write_kubeconfig(tmp_path_factory.mktemp("rbac") / "kubeconfig")
        controller_scenarios(emu, kubeconfig)
        return used_rights(emu.requests)


def controller_grants(objs) -> set[tuple]:
    return rights(find(objs, "ClusterRole", "restik-controller")) | rights(
        find(objs, "Role", "restik-leader-election", "restik-system")
    )


@pytest.fixture(scope="module")
def with_crd_create(tmp_path_factory) -> set[tuple]:
    """The controller's rights in an overlay of base with components/crd-create: the
    scenarios start without the CRD, so the controller creates it."""
    return controller_grants(
        overlay(tmp_path_factory.mktemp("crd-create"), [KUSTOMIZE / "base"], ["crd-create"])
    )


def test_every_controller_call_is_allowed(controller_calls, with_crd_create):
    denied = {r for r in controller_calls if not allowed(r, with_crd_create)}
    assert denied == set()


def test_controller_is_granted_nothing_it_does_not_use(controller_calls, with_crd_create):
    unused = unnamed(with_crd_create - NOT_API_CALLS) - unnamed(controller_calls)
    assert sorted(unused) == []


def test_default_install_path_needs_no_crd_create(tmp_path):
    """The default install applies the CRD; the controller then only reads it, and every
    call of a cycle that injects and removes a sidecar is allowed without `create` on CRDs."""
    from tests.emulator import Emulator

    objs = _built("install")
    with Emulator() as emu:
        for crd in (o for o in objs if o["kind"] == "CustomResourceDefinition"):
            emu.create(crd)  # as `kubectl apply` does
        kube = Kube.connect(str(emu.write_kubeconfig(tmp_path / "kubeconfig")))
        c = Controller(kube, Settings())
        emu.create({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NS}})
        emu.create(backup())
        emu.create(workload(sa="app"))
        c.cycle()
        assert SIDECAR_NAME in containers(get(emu, "Deployment"))
        obj = get(emu, "Deployment")
        del obj["metadata"]["labels"][CONFIG_LABEL]
        emu.update(obj)
        c.cycle()
        assert SIDECAR_NAME not in containers(get(emu, "Deployment"))
        calls = used_rights(emu.requests)
    granted = controller_grants(objs)
    assert not granted & CRD_CREATE_RIGHTS
    assert {r for r in calls if not allowed(r, granted)} == set()
    assert (
        "apiextensions.k8s.io",
        "customresourcedefinitions",
        "get",
        "backups.backup.appscode.com",
    ) in calls


@pytest.fixture
def sidecar_calls(world):
    """The sidecar's calls: start in a pod, follow the Backup, lease, run twice, report,
    pick up a change, serve a backup-now request (its record reads the Backup: a run's
    report claims from the Backup the watch holds), release the Lease on SIGTERM."""
    world.emu.create(
        {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": "www-a", "namespace": "default"},
            "spec": {"containers": [{"name": "app", "image": "x"}]},
        }
    )
    world.backup(schedule="@every 1s")
    world.emu.clear_requests()
    sc = world.sidecar("--workload", "Deployment/www", "--lease-duration", "3s", pod="www-a")
    world.wait_events(2)
    world.patch_spec(tags=["changed"])
    world.wait_events(3)
    trigger = {"metadata": {"annotations": {TRIGGER_ANNOTATION: "now-1"}}}
    world.emu.patch(BACKUP_API, "backups", "www", trigger, "default")
    wait_for(lambda: world.status().get("lastTrigger") == "now-1", timeout=60)
    assert sc.terminate() == 0
    return used_rights(r for r in world.emu.requests if r.user_agent.startswith("restik"))


@needs_restic
@pytest.mark.slow
def test_sidecar_calls_are_exactly_the_sidecar_role(sidecar_calls):
    """The Role the controller writes for Backup www with workload Deployment/www allows
    every call (names included) and grants nothing the sidecar does not use."""
    raw = {"metadata": {"name": "www", "namespace": "default", "uid": "u"}}
    granted = rights(desired_role(raw, ["Deployment/www"]))
    assert {r for r in sidecar_calls if not allowed(r, granted)} == set()
    assert sorted(unnamed(granted) - unnamed(sidecar_calls)) == []


@pytest.mark.parametrize(
    "spec",
    [
        {"hooks": {"preBackup": {"command": ["sync"]}}},
        {"backupSource": {"command": {"command": ["pg_dump"], "filename": "db.sql"}}},
    ],
    ids=["hooks", "command-source"],
)
def test_only_backups_that_run_commands_get_pods_exec(spec):
    """pods/exec (get: the WebSocket upgrade; create: Kubernetes 1.31+) goes into the Role of
    a Backup with hooks or a command source, and into no other Backup's Role."""
    meta = {"name": "www", "namespace": "default", "uid": "u"}
    plain = rights(desired_role({"metadata": meta, "spec": {}}, ["Deployment/www"]))
    runs = rights(desired_role({"metadata": meta, "spec": spec}, ["Deployment/www"]))
    assert not any(r[1] == "pods/exec" for r in plain)
    assert runs - plain == {("", "pods/exec", "get", None), ("", "pods/exec", "create", None)}


@pytest.mark.parametrize("lists", ["namespace", "exclude"])
def test_a_shard_reading_its_namespaces_needs_only_the_sharded_overlays_rights(tmp_path, lists):
    """kustomize/overlays/sharded runs `--shard-lists exclude` (`namespace` is the other mode
    that reads only the shard's share): every call of such a shard (the LIST of namespaces,
    the LISTs cluster-wide with a field selector or per namespace, its patches) is granted
    there, and the LIST of namespaces is the one right it adds to a single controller's."""
    from reconciler.controller.shard import Shard, ShardKube, shard_of
    from reconciler.resources import crd_manifests
    from tests.emulator import Emulator

    objs = kustomize(KUSTOMIZE / "overlays" / "sharded")
    granted = {r[1:] for r in effective_rights(objs, NAMESPACE, SERVICE_ACCOUNT)}
    with Emulator() as emu:
        kubeconfig = emu.write_kubeconfig(tmp_path / "kubeconfig")
        for crd in crd_manifests():  # the install applies them
            emu.create(crd)
        emu.create({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NS}})
        emu.create(backup())
        emu.create(workload())
        shard = Shard(3, shard_of(NS, 3))
        settings = Settings(shards=3, shard_index=shard.index, shard_lists=lists)
        kube = ShardKube(Kube.connect(str(kubeconfig)), shard, lists=lists)
        controller = Controller(kube, settings)
        controller.cycle()
        assert SIDECAR_NAME in containers(get(emu, "Deployment", "www"))
        kube.expire_namespaces()
        controller.cycle()
        used = used_rights(emu.requests)
    assert ("", "namespaces", "list", None) in used
    assert {r for r in used if not allowed(r, granted)} == set()
    single = controller_grants(_built("install"))
    assert {r for r in used if not allowed(r, single)} == {("", "namespaces", "list", None)}
