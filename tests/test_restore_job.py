"""A PVC target's Job that fails before its executor writes anything (an image that cannot
be pulled, a pod killed): the controller reads the Job's status and fails the Restore with
the Job's reason, once, and never runs it again. The emulator stores Jobs but runs none, so
the test sets the Job's status as kube-controller-manager's Job controller would."""

from __future__ import annotations

import pytest

from reconciler.controller.cycle import Controller
from reconciler.controller.options import Settings
from reconciler.kube.client import Kube
from reconciler.resources import crd_manifest, restore_crd_manifest
from tests.emulator import Emulator

NS = "data"
API = "backup.appscode.com/v1beta1"
GONE = "Job has reached the specified backoff limit"  # kube-controller-manager's message
BACKUP = {
    "apiVersion": API,
    "kind": "Backup",
    "metadata": {"name": "db", "namespace": NS},
    "spec": {
        "schedule": "@daily",
        "backupSource": {"volumeName": "data", "path": "/data"},
        "destination": {
            "repositorySecretName": "db-restic",
            "repository": "s3:https://s3.example/bucket",
        },
    },
}
CLAIM = {
    "apiVersion": "v1",
    "kind": "PersistentVolumeClaim",
    "metadata": {"name": "copy", "namespace": NS},
    "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}},
}
RESTORE = {
    "apiVersion": API,
    "kind": "Restore",
    "metadata": {"name": "r1", "namespace": NS},
    "spec": {"backup": "db", "target": {"pvc": {"claimName": "copy"}}},
}


@pytest.fixture
def cluster(tmp_path):
    with Emulator() as emu:
        emu.create(crd_manifest())
        emu.create(restore_crd_manifest())
        emu.create({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NS}})
        for obj in (BACKUP, CLAIM, RESTORE):
            emu.create(obj)
        kube = Kube.connect(str(emu.write_kubeconfig(tmp_path / "kubeconfig")))
        yield emu, Controller(kube, Settings(sidecar_image="restik:test"))


def fail_job(emu, job: dict, status: dict) -> None:
    emu.update({**job, "status": status}, subresource="status")


def events(emu) -> list[dict]:
    return [e for e in emu.list("v1", "events", NS) if e["involvedObject"]["kind"] == "Restore"]


@pytest.mark.parametrize(
    ("job_status", "reason", "detail"),
    [
        (
            {"failed": 1, "conditions": [
                {"type": "FailureTarget", "status": "True", "reason": "BackoffLimitExceeded",
                 "message": GONE},
                {"type": "Failed", "status": "True", "reason": "BackoffLimitExceeded",
                 "message": GONE}]},
            "BackoffLimitExceeded",
            GONE,
        ),
        ({"failed": 1}, "PodFailed", "1 pod(s) of the Job failed"),  # before the condition
    ],
)  # fmt: skip
def test_a_failed_job_fails_the_restore_once_and_never_reruns(cluster, job_status, reason, detail):
    emu, controller = cluster
    controller.cycle()
    [job] = emu.list("batch/v1", "jobs", NS)
    assert emu.get(API, "restores", "r1", NS)["status"]["phase"] == "Pending"
    controller.cycle()  # a Job that runs: nothing changes
    assert emu.get(API, "restores", "r1", NS)["status"]["phase"] == "Pending"
    assert events(emu) == []

    fail_job(emu, job, job_status)
    controller.cycle()
    status = emu.get(API, "restores", "r1", NS)["status"]
    message = f"Job restik-restore-r1 failed ({reason}): {detail}"
    assert status["phase"] == "Failed"
    assert status["message"] == message
    assert status["completionTime"]
    [cond] = [c for c in status["conditions"] if c["type"] == "Failed"]
    assert (cond["status"], cond["reason"], cond["message"]) == ("True", reason, message)
    [event] = events(emu)
    assert (event["type"], event["reason"], event["message"]) == (
        "Warning",
        "RestoreFailed",
        message,
    )

    # the Job goes (its TTL, or a user): the Restore stays Failed, no new Job, no new Event
    emu.delete("batch/v1", "jobs", "restik-restore-r1", NS)
    emu.clear_requests()
    controller.cycle()
    controller.cycle()
    assert emu.list("batch/v1", "jobs", NS) == []
    assert [(r.method, r.path) for r in emu.writes()] == []
    assert emu.get(API, "restores", "r1", NS)["status"]["phase"] == "Failed"
    assert len(events(emu)) == 1


def test_a_running_job_leaves_the_restore_as_its_executor_wrote_it(cluster):
    emu, controller = cluster
    controller.cycle()
    [job] = emu.list("batch/v1", "jobs", NS)
    fail_job(emu, job, {"active": 1, "conditions": [
        {"type": "Failed", "status": "False", "reason": "", "message": ""}]})  # fmt: skip
    emu.clear_requests()
    controller.cycle()
    assert [(r.method, r.path) for r in emu.writes()] == []
    assert emu.get(API, "restores", "r1", NS)["status"]["phase"] == "Pending"


# ---------------------------------------------------------------- a Job's pod that cannot start


def job_pod(emu, status: dict) -> dict:
    """The Job's pod as the Job controller creates it and the kubelet/scheduler report it."""
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": POD,
            "namespace": NS,
            "labels": {"job-name": "restik-restore-r1", "batch.kubernetes.io/job-name": "r1"},
        },
        "spec": {"restartPolicy": "Never", "containers": [{"name": "c", "image": "restik:test"}]},
        "status": status,
    }  # fmt: skip
    existing = [
        p for p in emu.list("v1", "pods", NS) if p["metadata"]["name"] == pod["metadata"]["name"]
    ]
    if existing:
        return emu.update({**existing[0], "status": status}, subresource="status")
    return emu.create(pod)


POD = "restik-restore-r1-x7k2p"
PULL = 'Back-off pulling image "restik:test"'
IMAGE_PULL = {"phase": "Pending", "containerStatuses": [
    {"name": "restik-restore", "image": "restik:test", "ready": False, "restartCount": 0,
     "state": {"waiting": {"reason": "ImagePullBackOff", "message": PULL}}}]}  # fmt: skip
ERR_PULL = {"phase": "Pending", "containerStatuses": [
    {"name": "restik-restore", "image": "restik:test", "ready": False, "restartCount": 0,
     "state": {"waiting": {"reason": "ErrImagePull", "message": "not found"}}}]}  # fmt: skip
NO_NODE = "0/3 nodes are available: 3 Insufficient memory."
UNSCHEDULABLE = {"phase": "Pending", "conditions": [{
    "type": "PodScheduled", "status": "False",
    "reason": "Unschedulable", "message": NO_NODE}]}  # fmt: skip
RUNNING = {"phase": "Running", "conditions": [{"type": "PodScheduled", "status": "True"}],
           "containerStatuses": [{"name": "restik-restore", "image": "restik:test", "ready": True,
                                  "restartCount": 0, "state": {"running": {}}}]}  # fmt: skip


def blocked(emu) -> dict:
    status = emu.get(API, "restores", "r1", NS)["status"]
    return next(c for c in status["conditions"] if c["type"] == "Blocked")


def test_a_job_pod_that_cannot_pull_its_image_is_reported_once_then_fails(cluster):
    emu, controller = cluster
    controller.cycle()
    job_pod(emu, IMAGE_PULL)
    controller.cycle()
    status = emu.get(API, "restores", "r1", NS)["status"]
    message = f"Job restik-restore-r1 cannot start its pod {POD}: ImagePullBackOff: {PULL}"
    assert status["phase"] == "Pending"
    assert status["message"] == message
    cond = blocked(emu)
    assert (cond["status"], cond["reason"], cond["message"]) == ("True", "ImagePullFailed", message)
    assert [(e["type"], e["reason"], e["message"]) for e in events(emu)] == [
        ("Warning", "ImagePullFailed", message)
    ]
    # the kubelet's next try says ErrImagePull: the condition follows, no second Event
    job_pod(emu, ERR_PULL)
    controller.cycle()
    assert "ErrImagePull: not found" in blocked(emu)["message"]
    assert len(events(emu)) == 1
    assert emu.get(API, "restores", "r1", NS)["status"]["phase"] == "Pending"

    # stuck for longer than STUCK_AFTER (10 minutes): Failed, the Job deleted with its pod
    raw = emu.get(API, "restores", "r1", NS)
    for cond in raw["status"]["conditions"]:
        if cond["type"] == "Blocked":
            cond["lastTransitionTime"] = "2020-01-01T00:00:00Z"
    emu.update(raw, subresource="status")
    emu.clear_requests()
    controller.cycle()
    status = emu.get(API, "restores", "r1", NS)["status"]
    assert status["phase"] == "Failed" and status["completionTime"]
    assert status["message"].startswith(
        f"Job restik-restore-r1 could not start its pod for 10 minutes (pod {POD}: ErrImagePull"
    )
    failed = next(c for c in status["conditions"] if c["type"] == "Failed")
    assert (failed["status"], failed["reason"]) == ("True", "ImagePullFailed")
    assert blocked(emu)["status"] == "False"
    assert sorted(e["reason"] for e in events(emu)) == ["ImagePullFailed", "RestoreFailed"]
    deletes = [r for r in emu.writes() if r.method == "DELETE"]
    assert [(r.path, r.body) for r in deletes] == [
        (
            f"/apis/batch/v1/namespaces/{NS}/jobs/restik-restore-r1",
            {"propagationPolicy": "Background"},
        )
    ]
    assert emu.list("batch/v1", "jobs", NS) == []
    emu.clear_requests()
    controller.cycle()
    assert [(r.method, r.path) for r in emu.writes()] == []


def test_an_unschedulable_job_pod_is_reported_and_cleared_once_it_runs(cluster):
    emu, controller = cluster
    controller.cycle()
    job_pod(emu, UNSCHEDULABLE)
    controller.cycle()
    message = f"Job restik-restore-r1 cannot start its pod {POD}: Unschedulable: {NO_NODE}"
    cond = blocked(emu)
    assert (cond["status"], cond["reason"], cond["message"]) == ("True", "Unschedulable", message)
    assert [(e["reason"], e["message"]) for e in events(emu)] == [("Unschedulable", message)]
    assert emu.get(API, "restores", "r1", NS)["status"]["phase"] == "Pending"
    # a node came (an autoscaler): the pod runs, Blocked goes False, no Failed
    job_pod(emu, RUNNING)
    controller.cycle()
    assert blocked(emu)["status"] == "False"
    assert emu.get(API, "restores", "r1", NS)["status"]["phase"] == "Pending"
    assert len(events(emu)) == 1
    emu.clear_requests()
    controller.cycle()
    assert [(r.method, r.path) for r in emu.writes()] == []
