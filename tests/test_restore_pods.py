"""What the controller learns about a Restore from the pods of its target (issue 15): a host
whose restoring pod died after it wrote Running fails the Restore with the reason; the pods
of the kinds that do not roll by themselves (ReplicaSet, ReplicationController, OnDelete
StatefulSet/DaemonSet) are restarted one at a time so that each runs the init container."""

from __future__ import annotations

import pytest

from reconciler.api.constants import RESTORE_CONTAINER
from reconciler.controller.apply import Applier
from reconciler.controller.cycle import Controller
from reconciler.controller.options import Settings
from reconciler.controller.podtemplate import WorkloadRef
from reconciler.controller.reconcilers.restores import RESTORE_ANNOTATION
from reconciler.controller.restores import sync_restores
from reconciler.controller.stats import CycleStats
from reconciler.kube.client import Kube
from reconciler.resources import crd_manifest, restore_crd_manifest
from tests.emulator import Emulator
from tests.emulator.cluster import is_ready
from tests.factories import backup, workload
from tests.factories.cluster import LISTS, calls, writes

NS = "web"
API = "backup.appscode.com/v1beta1"
POD_LIST = f"/api/v1/namespaces/{NS}/pods"


def restore(kind="StatefulSet", name="app") -> dict:
    return {
        "apiVersion": API,
        "kind": "Restore",
        "metadata": {"name": "r1", "namespace": NS},
        "spec": {"backup": "www", "target": {"workload": {"kind": kind, "name": name}}},
    }


def setup(emu, tmp_path, *objects) -> Controller:
    emu.create(crd_manifest())
    emu.create(restore_crd_manifest())
    emu.create({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NS}})
    for obj in objects:
        emu.create(obj)
    kube = Kube.connect(str(emu.write_kubeconfig(tmp_path / "kubeconfig")))
    return Controller(kube, Settings(sidecar_image="restik:test"))


def restore_events(emu) -> list[dict]:
    return [e for e in emu.list("v1", "events", NS) if e["involvedObject"]["kind"] == "Restore"]


# ---------------------------------------------------------------- a host whose pod died


RUNNING_INIT = {"name": RESTORE_CONTAINER, "ready": False, "restartCount": 0,
                "state": {"running": {"startedAt": "2026-11-30T00:00:00Z"}}}  # fmt: skip


def pod(name: str, init: dict, phase: str = "Pending", **status) -> dict:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": NS, "labels": {"app": "app"}},
        "spec": {"containers": [{"name": "app", "image": "nginx:1.27"}]},
        "status": {"phase": phase, "initContainerStatuses": [init], **status},
    }


def host(name: str, phase: str = "Running") -> dict:
    return {"host": name, "sourceHost": name, "phase": phase, "pod": name,
            "startTime": "2026-11-30T00:00:00Z"}  # fmt: skip


def running_restore(emu) -> None:
    """The Restore as the executors of app-0 and app-1 wrote it when they began."""
    raw = emu.get(API, "restores", "r1", NS)
    raw["status"] = {**raw["status"], "phase": "Running", "message": "restoring host app-1",
                     "hosts": [host("app-0"), host("app-1")]}  # fmt: skip
    emu.update(raw, subresource="status")


def set_pod(emu, name: str, **status) -> None:
    current = next(p for p in emu.list("v1", "pods", NS) if p["metadata"]["name"] == name)
    emu.update({**current, "status": {**current["status"], **status}}, subresource="status")


OOM = {"name": RESTORE_CONTAINER, "ready": False, "restartCount": 0,
       "state": {"terminated": {"exitCode": 137, "reason": "OOMKilled"}}}  # fmt: skip
CRASHED = {"name": RESTORE_CONTAINER, "ready": False, "restartCount": 1,
           "state": {"waiting": {"reason": "CrashLoopBackOff"}},
           "lastState": {"terminated": {"exitCode": 2, "reason": "Error"}}}  # fmt: skip
AGAIN = {**RUNNING_INIT, "restartCount": 1,
         "lastState": {"terminated": {"exitCode": 137, "reason": "OOMKilled"}}}  # fmt: skip
LOST = "Node node-2 which was running pod app-1 is unresponsive"


@pytest.mark.parametrize(
    ("change", "reason", "detail"),
    [
        ("deleted", "PodGone", "pod app-1 is gone (deleted)"),
        ({"initContainerStatuses": [OOM]}, "OOMKilled",
         "pod app-1: restik-restore terminated (OOMKilled, exit code 137)"),
        ({"initContainerStatuses": [CRASHED]}, "ExecutorFailed",
         "pod app-1: restik-restore terminated (Error, exit code 2)"),
        ({"phase": "Unknown", "reason": "NodeLost", "message": LOST,
          "initContainerStatuses": []}, "NodeLost", f"pod app-1: {LOST}"),
    ],
    ids=["deleted", "oom-killed", "crash-loop", "node-lost"],
)  # fmt: skip
def test_a_host_whose_pod_died_fails_the_restore_with_the_reason(tmp_path, change, reason, detail):
    with Emulator() as emu:
        sts = workload("StatefulSet", label=None)
        sts["spec"]["replicas"] = 2
        c = setup(emu, tmp_path, backup(), sts, restore())
        c.cycle()  # the init container goes in
        for name in ("app-0", "app-1"):
            emu.create(pod(name, RUNNING_INIT))
        running_restore(emu)
        emu.clear_requests()
        c.cycle()
        assert [(r.method, r.path) for r in emu.writes()] == []  # running: never judged

        if change == "deleted":
            emu.delete("v1", "pods", "app-1", NS)
        else:
            set_pod(emu, "app-1", **change)
        c.cycle()
        status = emu.get(API, "restores", "r1", NS)["status"]
        assert status["phase"] == "Failed" and status["completionTime"]
        message = (
            f"host app-1: {detail} while it restored: the volume may hold part of the "
            "snapshot; create a new Restore (or change spec.runID) to restore again"
        )
        assert status["message"] == message
        hosts = {h["host"]: h for h in status["hosts"]}
        assert hosts["app-0"]["phase"] == "Running"  # its own executor writes its end
        assert (hosts["app-1"]["phase"], hosts["app-1"]["error"]) == ("Failed", detail)
        failed = next(x for x in status["conditions"] if x["type"] == "Failed")
        assert (failed["status"], failed["reason"], failed["message"]) == ("True", reason, message)
        assert [(e["type"], e["reason"], e["message"]) for e in restore_events(emu)] == [
            ("Warning", "RestoreFailed", message)
        ]
        c.cycle()  # finished: the init container goes out again, then nothing
        obj = emu.get("apps/v1", "statefulsets", "app", NS)
        assert "initContainers" not in obj["spec"]["template"]["spec"]
        emu.clear_requests()
        c.cycle()
        assert [(r.method, r.path) for r in emu.writes()] == []
        assert len(restore_events(emu)) == 1


def test_an_init_container_that_runs_again_is_left_to_its_executor(tmp_path):
    with Emulator() as emu:
        sts = workload("StatefulSet", label=None)
        sts["spec"]["replicas"] = 2
        c = setup(emu, tmp_path, backup(), sts, restore())
        c.cycle()
        emu.create(pod("app-0", RUNNING_INIT))
        emu.create(pod("app-1", AGAIN))  # OOMKilled once, restarted by the kubelet
        running_restore(emu)
        emu.clear_requests()
        c.cycle()
        assert [(r.method, r.path) for r in emu.writes()] == []
        assert emu.get(API, "restores", "r1", NS)["status"]["phase"] == "Running"


# ---------------------------------------------------------------- kinds restik restarts


def live_pods(emu) -> list[dict]:
    return [
        p
        for p in emu.list("v1", "pods", NS)
        if (p["metadata"].get("labels") or {}).get("app") == "app"
        and not p["metadata"].get("deletionTimestamp")
    ]


def marked(p: dict) -> bool:
    return RESTORE_ANNOTATION in (p["metadata"].get("annotations") or {})


@pytest.mark.slow
@pytest.mark.parametrize(
    ("kind", "spec", "replicas"),
    [
        ("ReplicaSet", {}, 3),
        ("ReplicationController", {}, 2),
        ("StatefulSet", {"updateStrategy": {"type": "OnDelete"}}, 2),
        ("DaemonSet", {"updateStrategy": {"type": "OnDelete"}}, 2),  # two emulated nodes
    ],
)
def test_pods_that_do_not_roll_are_restarted_one_at_a_time_for_the_restore(
    tmp_path, kind, spec, replicas
):
    with Emulator(cluster=True, ready_delay=0.2) as emu:
        obj = workload(kind, label=None, volumes=[{"name": "data", "emptyDir": {}}])
        obj["spec"].update(spec)
        if kind != "DaemonSet":
            obj["spec"]["replicas"] = replicas
        c = setup(emu, tmp_path, backup(), obj, restore(kind))
        emu.wait_for(lambda: len([p for p in live_pods(emu) if is_ready(p)]) == replicas)
        emu.settle()
        evicted: list[str] = []
        for _ in range(40):
            emu.clear_requests()
            c.cycle()
            now = [r for r in emu.writes() if r.subresource == "eviction"]
            assert len(now) <= 1  # one pod of the workload at a time
            assert all(r.status == 201 for r in now)
            evicted += [r.name for r in now]
            if now:
                assert c.restore_restarts  # the loop looks again in 5 s meanwhile
            assert [r for r in emu.writes() if r.method == "DELETE"] == []
            emu.settle()
            pods = live_pods(emu)
            if len(pods) == replicas and all(marked(p) and is_ready(p) for p in pods):
                break
        else:
            pytest.fail(f"pods not restarted: evicted {evicted}")
        assert len(evicted) == replicas and len(set(evicted)) == replicas
        if kind == "StatefulSet":  # highest ordinal first, as the StatefulSet controller rolls
            assert evicted == [f"app-{i}" for i in reversed(range(replicas))]
        # every pod runs the init container now: nothing more to restart
        emu.clear_requests()
        c.cycle()
        assert [r for r in emu.writes() if r.subresource == "eviction"] == []
        assert c.restore_restarts is False


@pytest.mark.slow
def test_a_disruption_budget_holds_the_restore_restart_back(tmp_path):
    with Emulator(cluster=True, ready_delay=0.2) as emu:
        rs = workload("ReplicaSet", label=None, volumes=[{"name": "data", "emptyDir": {}}])
        rs["spec"]["replicas"] = 2
        budget = {
            "apiVersion": "policy/v1",
            "kind": "PodDisruptionBudget",
            "metadata": {"name": "app", "namespace": NS},
            "spec": {"minAvailable": 2, "selector": {"matchLabels": {"app": "app"}}},
        }
        c = setup(emu, tmp_path, backup(), rs, budget, restore("ReplicaSet"))
        emu.wait_for(lambda: len([p for p in live_pods(emu) if is_ready(p)]) == 2)
        emu.settle()
        c.cycle()  # the init container goes in
        emu.settle()
        stats = c.cycle()
        refused = [r for r in emu.requests if r.subresource == "eviction"]
        assert [r.status for r in refused] == [429]
        assert stats.errors == 0 and stats.restarted == 0
        assert len(live_pods(emu)) == 2 and not any(marked(p) for p in live_pods(emu))


@pytest.mark.slow
def test_a_restore_evicts_nothing_where_the_sidecar_restart_evicted_in_this_cycle(tmp_path):
    """sync_restores drops its eviction for a workload one of whose pods the Backup's
    restarts evicted in the same cycle: one pod of a workload at a time."""
    with Emulator(cluster=True, ready_delay=0.1) as emu:
        rs = workload("ReplicaSet", label=None, volumes=[{"name": "data", "emptyDir": {}}])
        rs["spec"]["replicas"] = 2
        c = setup(emu, tmp_path, backup(), rs, restore("ReplicaSet"))
        emu.wait_for(lambda: len([p for p in live_pods(emu) if is_ready(p)]) == 2)
        c.cycle()  # the init container goes in
        emu.settle()
        ref = WorkloadRef("ReplicaSet", NS, "app")
        stats = CycleStats()
        emu.clear_requests()
        sync_restores(c, Applier(c.kube, stats), [backup()], stats, None, {ref})
        assert [r for r in emu.writes() if r.subresource == "eviction"] == []
        first = sorted(p["metadata"]["name"] for p in live_pods(emu))[0]
        sync_restores(c, Applier(c.kube, stats), [backup()], stats, None, set())
        assert [r.name for r in emu.writes() if r.subresource == "eviction"] == [first]


# ---------------------------------------------------------------- a finished Restore


RESTARTED_KINDS = [
    ("ReplicaSet", "apps/v1", "replicasets", {"replicas": 2}),
    ("ReplicationController", "v1", "replicationcontrollers", {"replicas": 2}),
    ("StatefulSet", "apps/v1", "statefulsets",
     {"replicas": 2, "updateStrategy": {"type": "OnDelete"}}),
    ("DaemonSet", "apps/v1", "daemonsets", {"updateStrategy": {"type": "OnDelete"}}),
]  # fmt: skip


def owned(emu, owner: dict, name: str, mark: str, ready: bool) -> None:
    """A pod of ``owner`` that ran the Restore's init container (its template's annotation),
    Ready or not, as its controller and kubelet would have made and reported it."""
    meta = owner["metadata"]
    emu.create(
        {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {
                "name": name,
                "namespace": NS,
                "labels": {"app": "app"},
                "annotations": {RESTORE_ANNOTATION: mark},
                "ownerReferences": [
                    {
                        "apiVersion": owner["apiVersion"],
                        "kind": owner["kind"],
                        "name": meta["name"],
                        "uid": meta["uid"],
                        "controller": True,
                    }
                ],
            },
            "spec": {"containers": [{"name": "app", "image": "nginx:1.27"}]},
            "status": {
                "phase": "Running" if ready else "Pending",
                "conditions": [{"type": "Ready", "status": "True" if ready else "False"}],
            },
        }
    )


@pytest.mark.parametrize(("kind", "api", "plural", "spec"), RESTARTED_KINDS, ids=lambda k: k)
def test_a_finished_restore_costs_no_request_once_no_pod_needs_restarting(
    tmp_path, kind, api, plural, spec
):
    """Issue 15: a finished Restore of a kind restik restarts lists its workload's pods
    only while its init container is in the template or one of its pods, stuck in it,
    waits for its restart; after that a converged cycle is the LISTs only, until the
    Restore changes."""
    with Emulator() as emu:
        obj = workload(kind, label=None, volumes=[{"name": "data", "emptyDir": {}}])
        obj["spec"].update(spec)
        c = setup(emu, tmp_path, backup(), obj, restore(kind))
        c.cycle()  # the init container goes in
        live = emu.get(api, plural, "app", NS)
        mark = live["spec"]["template"]["metadata"]["annotations"][RESTORE_ANNOTATION]
        if kind == "DaemonSet":  # what its controller reports for two nodes
            live["status"] = {"desiredNumberScheduled": 2, "numberReady": 1}
            emu.update(live, subresource="status")
        owned(emu, live, "app-0", mark, ready=True)
        owned(emu, live, "app-1", mark, ready=False)  # stuck in the init container
        raw = emu.get(API, "restores", "r1", NS)
        raw["status"] = {**raw["status"], "phase": "Failed", "message": "host app-1 failed"}
        emu.update(raw, subresource="status")

        c.cycle()  # finished: the init container goes out
        template = emu.get(api, plural, "app", NS)["spec"]["template"]
        assert "initContainers" not in template["spec"]
        emu.clear_requests()
        c.cycle()  # the pod stuck in it is restarted
        assert [(r.verb, r.subresource, r.name) for r in emu.writes()] == [
            ("create", "eviction", "app-1")
        ]
        assert c.restore_restarts
        emu.clear_requests()
        c.cycle()  # no pod needs it any more: the last look at the pods
        assert writes(emu) == []
        assert [r.path for r in emu.requests if r.resource == "pods"] == [POD_LIST]
        assert not c.restore_restarts
        for _ in range(2):
            emu.clear_requests()
            c.cycle()
            assert calls(emu) == LISTS

        # any change to the Restore has it looked at once more (the same plan: nothing)
        raw = emu.get(API, "restores", "r1", NS)
        raw["metadata"]["labels"] = {"team": "web"}
        emu.update(raw)
        emu.clear_requests()
        c.cycle()
        assert writes(emu) == []
        assert [r.path for r in emu.requests if r.resource == "pods"] == [POD_LIST]
        emu.clear_requests()
        c.cycle()
        assert calls(emu) == LISTS


def test_a_settled_restore_is_looked_at_again_after_a_while(tmp_path, monkeypatch):
    """A settled Restore costs nothing while unchanged, but only for SETTLED_RECHECK_S: its
    init container put back into the template (a GitOps tool re-applying an old render) is
    taken out once that time has passed, without any change to the Restore."""
    from reconciler.controller import restores as restores_module

    with Emulator() as emu:
        c = setup(emu, tmp_path, backup(), workload("StatefulSet", label=None), restore())
        c.cycle()  # the init container goes in
        with_init = emu.get("apps/v1", "statefulsets", "app", NS)["spec"]["template"]
        raw = emu.get(API, "restores", "r1", NS)
        raw["status"] = {**raw["status"], "phase": "Succeeded"}
        emu.update(raw, subresource="status")
        c.cycle()  # finished: the init container goes out
        c.cycle()  # settled
        live = emu.get("apps/v1", "statefulsets", "app", NS)
        assert "initContainers" not in live["spec"]["template"]["spec"]

        # the old render (init container and all) is applied again; the Restore is unchanged
        live["spec"]["template"] = with_init
        emu.update(live)
        emu.clear_requests()
        c.cycle()
        assert calls(emu) == LISTS  # within the recheck period: not looked at
        monkeypatch.setattr(restores_module, "SETTLED_RECHECK_S", 0.0)
        c.cycle()
        template = emu.get("apps/v1", "statefulsets", "app", NS)["spec"]["template"]
        assert "initContainers" not in template["spec"]
