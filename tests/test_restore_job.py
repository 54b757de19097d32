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
