"""Issue 13 (multi-tenant safety): what a tenant's objects or a backed-up pod can make restik do."""

from __future__ import annotations

from reconciler.api.constants import CONFIG_LABEL, SIDECAR_NAME
from reconciler.controller.cycle import Controller
from reconciler.controller.loop import Loop
from reconciler.controller.options import Settings
from reconciler.kube.client import Kube
from tests.factories import make_backup, needs_restic, write_tree
from tests.test_controller import BACKUP_API, NS, backup, containers, get, workload

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
