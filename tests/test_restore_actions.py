"""A Restore's plan as the Applier's actions (pure): exact action lists, in order, with
what each one needs; and the Applier carrying them out on the emulator."""

from __future__ import annotations

import copy
from datetime import UTC, datetime

from reconciler.api.backup import parse_backup
from reconciler.controller.actions import (
    JOB,
    ROLEBINDING,
    CreateEvent,
    CreateObject,
    Evict,
    PatchRestoreInit,
    PatchRestoreStatus,
)
from reconciler.controller.patch import merge_patch
from reconciler.controller.podtemplate import WorkloadRef
from reconciler.controller.reconcilers.restore_actions import restore_actions
from reconciler.controller.reconcilers.restores import plan_restore
from tests.factories import backup, restore_object, workload

NOW = datetime(2026, 1, 31, 12, 0, tzinfo=UTC)
STAMP = "2026-01-31T12:00:00Z"
IMAGE = "restik:test"
BACKUP = parse_backup(backup(path="/var/lib/db"))
RB_PATH = "/apis/rbac.authorization.k8s.io/v1/namespaces/web/rolebindings"
JOBS_PATH = "/apis/batch/v1/namespaces/web/jobs"
REF = WorkloadRef("StatefulSet", "web", "app")


def restore(target=None, status=None) -> dict:
    return restore_object(target=target, status=status, resource_version="5")


def sts(kind="StatefulSet"):
    obj = workload(kind, label=None)
    obj["metadata"]["resourceVersion"] = "7"
    return obj


def actions(raw, rolebindings=(), **kw):
    acts = plan_restore(raw, BACKUP, image=IMAGE, now=NOW, **kw)
    bindings = {("web", name): {} for name in rolebindings}
    return acts, restore_actions(raw, acts, bindings, STAMP, "restik-controller")


def test_a_workload_restore_is_the_rolebinding_the_patch_and_the_status():
    raw = restore()
    obj = sts()
    acts, out = actions(raw, workload=obj)
    patch = {**merge_patch(obj, acts.workload[2]), "metadata": {"resourceVersion": "7"}}
    status = {"metadata": {"resourceVersion": "5"}, "status": acts.status}
    binding = CreateObject(
        RB_PATH, acts.rolebinding, "RoleBinding web/restik-restore-r1", ROLEBINDING
    )
    assert out == [
        binding,  # the pods that run the executor need it: the patch waits for it
        PatchRestoreInit(REF, "restore-in", patch, restart=False, needs=binding.key),
        PatchRestoreStatus("web", "r1", status),
    ]
    # the RoleBinding is there already: not created again
    assert actions(raw, ["restik-restore-r1"], workload=obj)[1] == [
        PatchRestoreInit(REF, "restore-in", patch, restart=False),
        out[2],
    ]
    # its key is not the sidecar's patch's
    assert out[1].key != (("workload", REF))


def test_a_workload_that_does_not_roll_is_patched_for_a_restart():
    rs = sts("ReplicaSet")
    raw = restore(target={"workload": {"kind": "ReplicaSet", "name": "app"}})
    _, out = actions(raw, ["restik-restore-r1"], workload=rs)
    assert [type(a) for a in out] == [PatchRestoreInit, PatchRestoreStatus]
    assert out[0].restart is True and out[0].ref == WorkloadRef("ReplicaSet", "web", "app")


def test_a_finished_restore_takes_the_init_container_out_and_writes_nothing_else():
    _, first = actions(restore(), ["restik-restore-r1"], workload=sts())
    inside = copy.deepcopy(sts())
    acts0 = plan_restore(restore(), BACKUP, image=IMAGE, now=NOW, workload=inside)
    after = acts0.workload[2]
    finished = restore(status={"phase": "Failed", "target": "StatefulSet/app"})
    acts, out = actions(finished, workload=after)
    patch = {**merge_patch(after, acts.workload[2]), "metadata": {"resourceVersion": "7"}}
    assert out == [PatchRestoreInit(REF, "restore-out", patch, restart=False)]
    assert first[0].action == "restore-in"


def claim_restore():
    return restore(target={"pvc": {"claimName": "copy"}})


CLAIM = {"metadata": {"name": "copy", "namespace": "web"}}
USER_POD = {
    "metadata": {"name": "app-0", "namespace": "web"},
    "spec": {"volumes": [{"name": "d", "persistentVolumeClaim": {"claimName": "copy"}}]},
    "status": {"phase": "Running"},
}


def test_a_claim_in_use_is_the_status_then_one_event_that_needs_it():
    acts, out = actions(claim_restore(), claim=CLAIM, pods=[USER_POD])
    status = PatchRestoreStatus(
        "web", "r1", {"metadata": {"resourceVersion": "5"}, "status": acts.status}
    )
    [(reason, message)] = acts.events
    assert reason == "ClaimInUse"
    assert out[0] == status
    [event] = out[1:]
    assert isinstance(event, CreateEvent) and event.needs == status.key
    assert (event.reason, event.about) == ("ClaimInUse", "Restore web/r1")
    assert event.body["message"] == message and event.body["type"] == "Warning"
    assert event.body["involvedObject"]["kind"] == "Restore"
    assert event.body["metadata"]["name"].startswith("r1.")


def test_a_free_claim_is_the_rolebinding_then_the_job_that_needs_it():
    acts, out = actions(claim_restore(), claim=CLAIM)
    binding = CreateObject(
        RB_PATH, acts.rolebinding, "RoleBinding web/restik-restore-r1", ROLEBINDING
    )
    job = CreateObject(JOBS_PATH, acts.job, "Job web/restik-restore-r1", JOB, binding.key)
    status = PatchRestoreStatus(
        "web", "r1", {"metadata": {"resourceVersion": "5"}, "status": acts.status}
    )
    assert out == [binding, job, status]
    _, again = actions(claim_restore(), ["restik-restore-r1"], claim=CLAIM)
    assert again == [CreateObject(JOBS_PATH, acts.job, "Job web/restik-restore-r1", JOB), status]


# ---------------------------------------------------------------- restarts for the init container


def rs_pod(name, mark=None, ready=True, owner="uid-rs"):
    meta = {"name": name, "namespace": "web", "ownerReferences": [{"uid": owner}]}
    if mark is not None:
        meta["annotations"] = {"backup.appscode.com/restore": mark}
    cond = {"type": "Ready", "status": "True" if ready else "False"}
    return {"metadata": meta, "status": {"phase": "Running", "conditions": [cond]}}


def replicaset(replicas=2):
    rs = sts("ReplicaSet")
    rs["metadata"]["uid"] = "uid-rs"
    rs["spec"]["replicas"] = replicas
    return rs


RS_REF = WorkloadRef("ReplicaSet", "web", "app")
RS_RESTORE = {"workload": {"kind": "ReplicaSet", "name": "app"}}


def test_pods_without_the_init_container_are_evicted_one_per_cycle():
    raw = restore(target=RS_RESTORE)
    injected = plan_restore(raw, BACKUP, image=IMAGE, now=NOW, workload=replicaset()).workload[2]
    mark = injected["spec"]["template"]["metadata"]["annotations"]["backup.appscode.com/restore"]
    pods = [rs_pod("app-a"), rs_pod("app-b")]
    _, out = actions(raw, ["restik-restore-r1"], workload=injected, pods=pods, pods_seen=True)
    status = out[-1]
    assert out == [Evict(RS_REF, "app-a"), status]
    assert isinstance(status, PatchRestoreStatus)
    # the RoleBinding went meanwhile: created again first, and the eviction needs it
    acts, out = actions(raw, workload=injected, pods=pods, pods_seen=True)
    binding = CreateObject(
        RB_PATH, acts.rolebinding, "RoleBinding web/restik-restore-r1", ROLEBINDING
    )
    assert out == [binding, Evict(RS_REF, "app-a", needs=binding.key), status]
    # the replacement is not Ready yet: nothing goes
    pods = [rs_pod("app-b"), rs_pod("app-c", mark, ready=False)]
    _, out = actions(raw, ["restik-restore-r1"], workload=injected, pods=pods, pods_seen=True)
    assert not any(isinstance(a, Evict) for a in out)
    # every pod runs it: nothing goes; pods not listed (offline): nothing is judged
    pods = [rs_pod("app-c", mark), rs_pod("app-d", mark)]
    _, out = actions(raw, ["restik-restore-r1"], workload=injected, pods=pods, pods_seen=True)
    assert not any(isinstance(a, Evict) for a in out)
    _, out = actions(raw, ["restik-restore-r1"], workload=injected, pods=[rs_pod("app-a")])
    assert not any(isinstance(a, Evict) for a in out)


def test_after_the_restore_only_a_pod_stuck_in_its_init_container_is_evicted():
    finished = restore(target=RS_RESTORE, status={"phase": "Failed", "target": "ReplicaSet/app"})
    rs = replicaset(3)  # the init container is out again
    mark = "r1/0123456789abcdef"
    pods = [rs_pod("app-a", mark), rs_pod("app-b", mark, ready=False), rs_pod("app-c")]
    acts, out = actions(finished, workload=rs, pods=pods, pods_seen=True)
    assert out == [Evict(RS_REF, "app-b")]
    assert not acts.settled  # the pods are looked at again next cycle
    pods = [rs_pod("app-a", mark), rs_pod("app-b", "other/0123", ready=False), rs_pod("app-c")]
    acts, out = actions(finished, workload=rs, pods=pods, pods_seen=True)
    assert out == [] and acts.settled  # nothing left for this Restore: not looked at again
    assert not actions(finished, workload=rs, pods=pods)[0].settled  # pods not listed


def test_a_finished_restore_is_settled_once_its_init_container_is_out():
    finished = restore(target=RS_RESTORE, status={"phase": "Failed", "target": "ReplicaSet/app"})
    raw = restore(target=RS_RESTORE)
    injected = plan_restore(raw, BACKUP, image=IMAGE, now=NOW, workload=replicaset()).workload[2]
    acts, out = actions(finished, workload=injected, pods=[], pods_seen=True)
    assert out and not acts.settled  # the init container goes out first
    assert not actions(finished)[0].settled  # the workload is not there (yet)
