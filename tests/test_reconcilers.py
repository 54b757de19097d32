"""The controller's reconcilers: snapshot in, exact action lists out (pure: no API)."""

from __future__ import annotations

import copy

from reconciler.api.constants import CONFIG_LABEL, HASH_ANNOTATION
from reconciler.controller.actions import (
    ROLEBINDING,
    CreateEvent,
    CreateObject,
    DeleteObject,
    Evict,
    PatchStatus,
    PatchWorkload,
    ReplaceObject,
)
from reconciler.controller.cycle import decide
from reconciler.controller.observe import Snapshot
from reconciler.controller.options import Settings
from reconciler.controller.plan import plan
from reconciler.controller.podtemplate import WorkloadRef
from reconciler.controller.reconcilers.rbac import (
    desired_role,
    desired_rolebinding,
    reconcile_rbac,
)
from reconciler.controller.reconcilers.restarts import reconcile_restarts
from reconciler.controller.reconcilers.status import reconcile_status
from reconciler.controller.reconcilers.workload_warnings import (
    reconcile_workload_warnings,
    warning_keys,
)
from reconciler.controller.reconcilers.workloads import deferred, reconcile_workloads
from reconciler.controller.render import Renderer
from reconciler.controller.rollout import CURRENT, ROLLING_OUT, Rollout, restart_view
from tests.factories import backup, parsed, workload

RENDERER = Renderer()
NOW = "2026-01-02T03:04:05Z"
RB_PATH = "/apis/rbac.authorization.k8s.io/v1/namespaces/web/rolebindings"
STATUS_PATH = "/apis/backup.appscode.com/v1beta1/namespaces/web/backups/www/status"


def live(obj, rv="7", uid=None):
    """``obj`` as the API returns it: a resourceVersion and a uid."""
    obj = copy.deepcopy(obj)
    meta = obj["metadata"]
    meta["resourceVersion"] = rv
    meta["uid"] = uid or f"uid-{obj['kind']}-{meta['name']}"
    return obj


def injected(obj, raw_backup=None, renderer=RENDERER):
    """``obj`` with the sidecar of ``raw_backup`` (default: the factory's Backup)."""
    [change] = plan(parsed(raw_backup or backup()), [obj], renderer).changes
    return copy.deepcopy(dict(change.after))


def snapshot(raws, workloads, **fields) -> Snapshot:
    items = parsed(*raws)
    return Snapshot(
        raw_backups={(p.namespace, p.name): raw for p, raw in zip(items, raws, strict=True)},
        parsed=items,
        plan=plan(items, workloads, RENDERER),
        **fields,
    )


def ref(kind="Deployment", name="app"):
    return WorkloadRef(kind, "web", name)


# ------------------------------------------------------------------ workloads
def test_each_change_becomes_one_guarded_patch():
    dep = live(workload(name="a"), rv="11")
    rs = live(workload("ReplicaSet", name="b"), rv="12")
    gone = injected(workload(name="c"))
    del gone["metadata"]["labels"][CONFIG_LABEL]  # unlabeled: the sidecar goes
    gone = live(gone, rv="13")
    result = plan(parsed(backup()), [dep, rs, gone], RENDERER)
    actions = reconcile_workloads(result)
    summary = [
        (a.ref, a.action, a.restart, a.patch["metadata"]["resourceVersion"]) for a in actions
    ]
    assert summary == [
        (ref(name="a"), "inject", False, "11"),
        (ref("ReplicaSet", "b"), "inject", True, "12"),
        (ref(name="c"), "remove", False, "13"),
    ]
    new_hash = actions[0].patch["spec"]["template"]["metadata"]["annotations"][HASH_ANNOTATION]
    assert actions[0].template_hash == new_hash
    assert actions[2].template_hash is None
    assert actions[0].path == "/apis/apps/v1/namespaces/web/deployments/a"
    assert deferred(result, actions) == set()


def test_updates_beyond_max_rollouts_wait_and_injections_do_not():
    old = Renderer(image="restik:1")
    olds = [live(injected(workload(name=n), renderer=old)) for n in ("u1", "u2", "u3")]
    result = plan(parsed(backup()), [*olds, live(workload(name="new"))], RENDERER)
    actions = reconcile_workloads(result, max_rollouts=2)
    assert [(a.ref.name, a.action) for a in actions] == [
        ("u1", "update"),
        ("u2", "update"),
        ("new", "inject"),
    ]
    assert deferred(result, actions) == {ref(name="u3")}
    assert len(reconcile_workloads(result, max_rollouts=0)) == 4


def test_a_converged_plan_gives_no_action():
    result = plan(parsed(backup()), [live(injected(workload()))], RENDERER)
    assert reconcile_workloads(result) == []


# ------------------------------------------------------------------ restarts
def pod(owner, name, template_hash, ready=True):
    meta = {
        "name": name,
        "namespace": "web",
        "ownerReferences": [{"uid": owner["metadata"]["uid"], "controller": True}],
        "annotations": {HASH_ANNOTATION: template_hash} if template_hash else {},
    }
    cond = {"type": "Ready", "status": "True" if ready else "False"}
    return {"metadata": meta, "status": {"phase": "Running", "conditions": [cond]}}


def restart_snapshot(rs, pods=None, raw_backup=None, also=(), **fields) -> Snapshot:
    """A snapshot where ``rs`` (and the refs ``also``) are restart candidates; ``pods``
    None: its namespace's pods could not be listed."""
    rsref = ref(rs["kind"], rs["metadata"]["name"])
    return snapshot(
        [raw_backup or backup()],
        [rs],
        restart_candidates={rsref, *also},
        restart_owners={rsref: restart_view(rs)},
        pods={} if pods is None else {rs["metadata"]["uid"]: pods},
        pod_namespaces=set() if pods is None else {"web"},
        **fields,
    )


def replicaset(name="rs", replicas=2):
    obj = live(injected(workload("ReplicaSet", name=name)))
    obj["spec"]["replicas"] = replicas
    return obj


def test_a_stale_pod_is_evicted_when_the_others_are_ready():
    rs = replicaset()
    current = rs["spec"]["template"]["metadata"]["annotations"][HASH_ANNOTATION]
    snap = restart_snapshot(rs, [pod(rs, "rs-a", current), pod(rs, "rs-b", "old")])
    out = reconcile_restarts(snap, [])
    assert out.actions == [Evict(ref("ReplicaSet", "rs"), "rs-b")]
    assert out.rollouts == {
        ref("ReplicaSet", "rs"): Rollout(ROLLING_OUT, 2, 1, 2, "1/2 pods restarted")
    }
    assert (out.done, out.waiting) == (set(), {})


def test_a_workload_patched_now_is_judged_by_its_new_template_and_waits_for_the_patch():
    rs = live(workload("ReplicaSet", name="rs"))  # no sidecar yet: its pods have no hash
    rs["spec"]["replicas"] = 2
    rsref = ref("ReplicaSet", "rs")
    snap = restart_snapshot(rs, [pod(rs, "rs-b", None), pod(rs, "rs-a", None)])
    [patch] = reconcile_workloads(snap.plan)
    out = reconcile_restarts(snap, [patch])
    assert out.actions == [Evict(rsref, "rs-a", needs=("workload", rsref))]
    assert reconcile_restarts(snap, []).done == {rsref}  # judged by the old template


def test_restarts_wait_for_a_pod_that_is_not_ready_and_forget_a_deleted_owner():
    rs = replicaset()
    current = rs["spec"]["template"]["metadata"]["annotations"][HASH_ANNOTATION]
    pods = [pod(rs, "rs-a", current, ready=False), pod(rs, "rs-b", "x")]
    snap = restart_snapshot(rs, pods, also={ref("ReplicaSet", "deleted")})
    out = reconcile_restarts(snap, [])
    assert out.actions == []
    assert out.waiting == {ref("ReplicaSet", "rs"): "pod rs-a is not Ready yet"}
    assert out.done == {ref("ReplicaSet", "deleted")}


def test_no_decision_where_the_pods_could_not_be_listed():
    rs = replicaset()
    snap = restart_snapshot(rs)
    out = reconcile_restarts(snap, [])
    assert (out.actions, out.rollouts, out.done, out.waiting) == ([], {}, set(), {})


def test_current_pods_finish_the_restart():
    rs = replicaset(replicas=1)
    current = rs["spec"]["template"]["metadata"]["annotations"][HASH_ANNOTATION]
    snap = restart_snapshot(rs, [pod(rs, "rs-a", current)])
    out = reconcile_restarts(snap, [])
    assert (out.actions, out.done) == ([], {ref("ReplicaSet", "rs")})
    assert out.rollouts[ref("ReplicaSet", "rs")] == Rollout(CURRENT, 1, 1, 1)


# ------------------------------------------------------------------ rbac
ROLE_PATH = "/apis/rbac.authorization.k8s.io/v1/namespaces/web/roles"
RB_WHAT = "RoleBinding web/restik-sidecar-www"
ROLE_WHAT = "Role web/restik-sidecar-www"
RBAC_KEY = ("web", "restik-sidecar-www")


def with_sa(obj, name="app"):
    obj["spec"]["template"]["spec"]["serviceAccountName"] = name
    return obj


def rbac_actions(raw, workloads, rolebindings, roles=None):
    """reconcile_rbac's actions; ``roles`` None: the Backup's Role is there and in sync."""
    items = parsed(raw)
    result = plan(items, workloads, RENDERER)
    raws = {(i.namespace, i.name): raw for i in items}
    if roles is None:
        selected = result.selected.get(("web", "www"), [])
        roles = {RBAC_KEY: live(desired_role(raw, selected))} if selected else {}
    return reconcile_rbac(raws, items, result, rolebindings, roles, NOW, "restik-controller")


def test_rolebinding_created_for_a_backup_with_workloads():
    raw = live(backup(name="www"), uid="b-uid")
    actions = rbac_actions(raw, [with_sa(workload())], {})
    desired = desired_rolebinding(raw, ["app"])
    assert actions == [CreateObject(RB_PATH, desired, RB_WHAT, ROLEBINDING)]


def test_the_role_comes_first_and_the_rolebinding_needs_it():
    raw = live(backup(name="www"), uid="b-uid")
    actions = rbac_actions(raw, [with_sa(workload())], {}, roles={})
    role = CreateObject(ROLE_PATH, desired_role(raw, ["Deployment/app"]), ROLE_WHAT, ROLEBINDING)
    binding = CreateObject(
        RB_PATH, desired_rolebinding(raw, ["app"]), RB_WHAT, ROLEBINDING, role.key
    )
    assert actions == [role, binding]
    # a Role that grants something else is replaced (its resourceVersion guards the write)
    stale = live(desired_role(raw, ["Deployment/other"]), rv="30")
    current = {RBAC_KEY: live(desired_rolebinding(raw, ["app"]))}
    [replace] = rbac_actions(raw, [with_sa(workload())], current, roles={RBAC_KEY: stale})
    desired = desired_role(raw, ["Deployment/app"])
    desired["metadata"]["resourceVersion"] = "30"
    assert replace == ReplaceObject(f"{ROLE_PATH}/restik-sidecar-www", desired, ROLE_WHAT,
                                    ROLEBINDING)  # fmt: skip


def test_rolebinding_replaced_when_its_subjects_change_and_left_when_in_sync():
    raw = live(backup(name="www"), uid="b-uid")
    current = live(desired_rolebinding(raw, ["app"]), rv="40")
    assert rbac_actions(raw, [with_sa(workload())], {RBAC_KEY: current}) == []
    sa = with_sa(workload(name="other"), "robot")
    desired = desired_rolebinding(raw, ["app", "robot"])
    desired["metadata"]["resourceVersion"] = "40"
    assert rbac_actions(raw, [with_sa(workload()), sa], {RBAC_KEY: current}) == [
        ReplaceObject(f"{RB_PATH}/restik-sidecar-www", desired, RB_WHAT, ROLEBINDING)
    ]


def test_binding_default_is_one_warning_event_that_needs_the_binding_write():
    raw = live(backup(name="www"), uid="b-uid")
    create, event = rbac_actions(raw, [workload()], {})
    assert create == CreateObject(RB_PATH, desired_rolebinding(raw, ["default"]), RB_WHAT,
                                  ROLEBINDING)  # fmt: skip
    assert isinstance(event, CreateEvent)
    assert (event.reason, event.about, event.needs) == (
        "DefaultServiceAccount", "Backup web/www", create.key)  # fmt: skip
    assert event.body["type"] == "Warning"
    # once: while default stays bound, later writes of the RoleBinding send nothing more
    current = live(desired_rolebinding(raw, ["default"]))
    assert rbac_actions(raw, [workload()], {RBAC_KEY: current}) == []
    other = with_sa(workload(name="other"), "robot")
    [replace] = rbac_actions(raw, [workload(), other], {RBAC_KEY: current})
    assert isinstance(replace, ReplaceObject)


def test_a_changed_role_ref_is_a_delete_then_a_create_that_needs_it():
    raw = live(backup(name="www"), uid="b-uid")
    old = live(desired_rolebinding(raw, ["app"]))
    old["roleRef"]["name"] = "something-else"
    actions = rbac_actions(raw, [with_sa(workload())], {RBAC_KEY: old})
    delete = DeleteObject(f"{RB_PATH}/restik-sidecar-www", None, RB_WHAT, ROLEBINDING)
    create = CreateObject(
        RB_PATH, desired_rolebinding(raw, ["app"]), RB_WHAT, ROLEBINDING, delete.key
    )
    assert actions == [delete, create]


def test_rolebinding_and_role_deleted_without_workloads_and_kept_for_an_invalid_backup():
    raw = live(backup(name="www"), uid="b-uid")
    rb = {RBAC_KEY: live(desired_rolebinding(raw, ["app"]))}
    roles = {RBAC_KEY: live(desired_role(raw, ["Deployment/app"]))}
    assert rbac_actions(raw, [], rb, roles) == [
        DeleteObject(f"{RB_PATH}/restik-sidecar-www", None, RB_WHAT, ROLEBINDING),
        DeleteObject(f"{ROLE_PATH}/restik-sidecar-www", None, ROLE_WHAT, ROLEBINDING),
    ]
    broken = live(backup(name="www", schedule="never"), uid="b-uid")
    assert rbac_actions(broken, [], rb, roles) == []


# ------------------------------------------------------------------ status
def status_actions(raw, workloads, rollouts=None):
    items = parsed(raw)
    result = plan(items, workloads, RENDERER)
    raws = {(i.namespace, i.name): raw for i in items}
    return reconcile_status(raws, items, result, NOW, "restik-controller", rollouts)


def test_a_status_patch_when_the_status_is_not_current_then_nothing():
    raw = live(backup(name="www"))
    [action] = status_actions(raw, [])
    assert action == PatchStatus("web", "www", action.patch)
    assert action.path == STATUS_PATH
    assert action.patch["metadata"] == {"resourceVersion": "7"}  # the status it was made from
    ready = action.patch["status"]["conditions"][0]
    assert (ready["status"], ready["reason"]) == ("True", "NoWorkloads")
    raw["status"] = action.patch["status"]
    assert status_actions(raw, []) == []


def test_an_invalid_backup_gets_its_status_then_one_warning_that_needs_it():
    raw = live(backup(name="www", schedule="61 * * * *"))
    status, event = status_actions(raw, [])
    assert status.key == ("status", "web", "www")
    assert isinstance(event, CreateEvent)
    assert (event.reason, event.about, event.needs) == ("InvalidSpec", "Backup web/www", status.key)
    assert event.body["type"] == "Warning"
    assert event.body["involvedObject"]["name"] == "www"
    raw["status"] = status.patch["status"]
    assert status_actions(raw, []) == []  # reported once


def test_a_new_warning_is_an_event_once():
    raw = live(backup(name="www"))
    dep = live(workload(name="www"))
    owned = live(workload("ReplicaSet", name="www-1"))
    owned["metadata"]["ownerReferences"] = [
        {"kind": "Deployment", "name": "www", "uid": "u", "controller": True}
    ]
    status, event = status_actions(raw, [dep, owned])
    assert (event.reason, event.needs) == ("OwnedWorkload", status.key)
    raw["status"] = status.patch["status"]
    assert status_actions(raw, [dep, owned]) == []


# ------------------------------------------------------------------ workload warnings
def test_a_label_naming_no_backup_is_one_warning_event_on_the_workload():
    typo = live(workload(name="a", label="wwww"), uid="a-uid")
    far = live(workload("StatefulSet", name="b", label="zzz"), uid="b-uid")
    result = plan(parsed(backup(name="www")), [typo, far], RENDERER)
    actions = reconcile_workload_warnings(result, set(), NOW, "restik-controller", "n1")
    assert [(a.about, a.reason, a.body["message"]) for a in actions] == [
        ("Deployment web/a", "BackupNotFound", "Backup web/wwww not found (did you mean 'www'?)"),
        ("StatefulSet web/b", "BackupNotFound", "Backup web/zzz not found"),
    ]
    first = actions[0]
    assert first.body["involvedObject"] == {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "name": "a",
        "namespace": "web",
        "uid": "a-uid",
    }
    assert (first.body["type"], first.body["metadata"]["namespace"]) == ("Warning", "web")
    assert first.body["metadata"]["name"].startswith("a.")
    assert first.remember == (ref(name="a"), "a-uid", "BackupNotFound", first.body["message"])
    assert set(warning_keys(result)) == {a.remember for a in actions}
    kept = reconcile_workload_warnings(result, {first.remember}, NOW, "restik-controller", "n1")
    assert kept == actions[1:]
    again = reconcile_workload_warnings(result, set(), NOW, "restik-controller", "n2")
    assert again[0].body["metadata"]["name"] != first.body["metadata"]["name"]


def test_other_warnings_are_not_workload_events():
    owned = live(workload("ReplicaSet", name="www-1", label="www"))
    owned["metadata"]["ownerReferences"] = [
        {"kind": "Deployment", "name": "www", "uid": "u", "controller": True}
    ]
    result = plan(parsed(backup(name="www")), [owned], RENDERER)
    assert result.problems  # reported on the Backup, not here
    assert reconcile_workload_warnings(result, set(), NOW, "c") == []


# ------------------------------------------------------------------ all of them
def test_decide_orders_patches_evictions_rbac_then_status():
    rs = with_sa(live(workload("ReplicaSet", name="rs")))
    rs["spec"]["replicas"] = 2
    rsref = ref("ReplicaSet", "rs")
    raw = live(backup(name="www"), uid="b-uid")
    pods = [pod(rs, "rs-a", None), pod(rs, "rs-b", None)]
    snap = restart_snapshot(rs, pods, raw, rollouts={rsref: Rollout(CURRENT, 2, 2, 2)})
    decisions = decide(snap, Settings(), NOW)
    kinds = [type(a).__name__ for a in decisions.actions]
    assert kinds == ["PatchWorkload", "Evict", "CreateObject", "CreateObject", "PatchStatus"]
    patch, evict, role, binding, status = decisions.actions
    assert "Role web/" in role.what and binding.needs == role.key
    assert isinstance(patch, PatchWorkload) and evict.needs == patch.key
    assert status.patch["status"]["rollout"] == [
        {
            "workload": "ReplicaSet/rs",
            "current": False,
            "state": ROLLING_OUT,
            "pods": 2,
            "updated": 0,
            "ready": 2,
            "message": "0/2 pods restarted",
        }
    ]
    assert decisions.readiness == {("web", "www"): "False"}
