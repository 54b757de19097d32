"""The planner: inject / update / remove / nothing, per workload kind, with exact results."""

from __future__ import annotations

import copy

import pytest

from reconciler.backup import InvalidBackup, parse_backup
from reconciler.constants import CONFIG_LABEL, HASH_ANNOTATION, SIDECAR_NAME, WORKLOAD_KINDS
from reconciler.plan import INJECT, REMOVE, UPDATE, Plan, plan
from reconciler.render import Renderer
from reconciler.workload import WorkloadRef, inject, remove
from tests.factories import KINDS, backup, workload

RENDERER = Renderer()


def parsed(*raws):
    out = []
    for raw in raws:
        try:
            out.append(parse_backup(raw))
        except InvalidBackup as exc:
            out.append(exc)
    return out


def run(backups, workloads, renderer=RENDERER, **kw) -> Plan:
    return plan(parsed(*backups), workloads, renderer, **kw)


def injected(obj, raw=None, renderer=RENDERER):
    b = parse_backup(raw or backup())
    meta = obj["metadata"]
    return inject(obj, renderer.render(b, obj["kind"], meta["name"]))


def unlabeled(obj):
    out = copy.deepcopy(obj)
    del out["metadata"]["labels"][CONFIG_LABEL]
    return out


def pod_spec(obj):
    return obj["spec"]["template"]["spec"]


def names(items):
    return [i["name"] for i in items]


@pytest.mark.parametrize("kind", KINDS)
def test_inject(kind):
    w = workload(kind)
    result = run([backup()], [w])
    assert result.problems == []
    [change] = result.changes
    assert change.action == INJECT
    assert change.ref == WorkloadRef(kind, "web", "app")
    assert change.backup == "www"
    assert change.before is w
    assert change.after == injected(w)
    assert change.restart is (kind in ("ReplicaSet", "ReplicationController"))
    spec = pod_spec(change.after)
    assert names(spec["containers"]) == ["app", SIDECAR_NAME]
    assert names(spec["volumes"]) == ["data", "restik-cache", "restik-repo", "restik-token"]
    assert HASH_ANNOTATION in change.after["spec"]["template"]["metadata"]["annotations"]
    assert w == workload(kind), "the planner must not mutate its input"


@pytest.mark.parametrize("kind", KINDS)
def test_in_sync_is_a_no_op(kind):
    result = run([backup()], [injected(workload(kind))])
    assert result.changes == []
    assert result.problems == []
    assert result.empty


@pytest.mark.parametrize("kind", KINDS)
def test_unlabeled_without_sidecar_is_a_no_op(kind):
    result = run([backup()], [workload(kind, label=None)])
    assert result.changes == [] and result.problems == []


@pytest.mark.parametrize("kind", KINDS)
def test_remove_when_label_removed(kind):
    original = unlabeled(workload(kind))
    w = unlabeled(injected(workload(kind)))
    [change] = run([backup()], [w]).changes
    assert change.action == REMOVE
    assert change.backup is None
    assert change.after == original
    assert change.restart is (kind in ("ReplicaSet", "ReplicationController"))


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize(
    "new",
    [
        backup(path="/srv"),
        backup(secret="other-restic"),
        backup(repository="s3:host/bucket"),
        backup(volume={"nfs": {"server": "nfs", "path": "/x"}}),
        backup(resources={"limits": {"memory": "1Gi"}}),
    ],
    ids=["path", "secret", "remote", "dest-volume", "resources"],
)
def test_update_when_a_rendered_input_changes(kind, new):
    w = injected(workload(kind))
    [change] = run([new], [w]).changes
    assert change.action == UPDATE
    assert change.after == injected(workload(kind), new)
    assert change.after == injected(w, new)


@pytest.mark.parametrize("kind", KINDS)
def test_update_when_the_image_changes(kind):
    w = injected(workload(kind))
    other = Renderer(image="restik:9.9")
    [change] = run([backup()], [w], renderer=other).changes
    assert change.action == UPDATE
    assert pod_spec(change.after)["containers"][1]["image"] == "restik:9.9"


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize(
    "raw",
    [
        backup(schedule="@daily"),
        backup(tags=["x"]),
        backup(retentionPolicy={"keepLastSnapshots": 1}),
    ],
    ids=["schedule", "tags", "retention"],
)
def test_live_settings_need_no_change(kind, raw):
    assert run([raw], [injected(workload(kind))]).changes == []


def test_statefulset_source_may_be_a_volume_claim_template():
    w = workload("StatefulSet", volumes=[], claim_templates=["data"])
    [change] = run([backup()], [w]).changes
    spec = pod_spec(change.after)
    assert spec["containers"][1]["volumeMounts"][0] == {
        "name": "data",
        "mountPath": "/data",
        "readOnly": True,
    }
    assert names(spec["volumes"]) == ["restik-cache", "restik-repo", "restik-token"]
    assert remove(change.after) == w


@pytest.mark.parametrize("kind", [k for k in KINDS if k != "StatefulSet"])
def test_claim_templates_count_only_for_statefulsets(kind):
    w = workload(kind, volumes=[])
    w["spec"]["volumeClaimTemplates"] = [{"metadata": {"name": "data"}}]
    result = run([backup()], [w])
    assert result.changes == []
    assert [p.message.split(":")[0] for p in result.problems] == ["spec.backupSource.volumeName"]


@pytest.mark.parametrize("kind", KINDS)
def test_missing_backup_removes_the_sidecar(kind):
    w = injected(workload(kind))
    [change] = run([], [w], remove_when_missing=True).changes
    assert change.action == REMOVE
    assert change.backup == "www"
    assert change.after == workload(kind)


@pytest.mark.parametrize("kind", KINDS)
def test_missing_backup_offline_leaves_it_alone_with_a_warning(kind):
    w = injected(workload(kind))
    result = run([], [w], remove_when_missing=False)
    assert result.changes == []
    [problem] = result.problems
    assert problem.severity == "warning"
    assert problem.backup == "www"
    assert problem.ref == WorkloadRef(kind, "web", "app")
    assert "Backup web/www not found" in problem.message


def test_missing_backup_and_no_sidecar_is_a_no_op():
    assert run([], [workload()], remove_when_missing=True).changes == []


@pytest.mark.parametrize("kind", KINDS)
def test_invalid_backup_keeps_an_existing_sidecar_and_injects_nothing(kind):
    bad = backup(schedule="not a cron")
    stale = injected(workload(kind), backup(path="/old"))
    fresh = workload(kind, name="fresh")
    result = run([bad], [stale, fresh])
    assert isinstance(parsed(bad)[0], InvalidBackup)
    assert result.changes == []
    assert result.selected == {("web", "www"): [f"{kind}/app", f"{kind}/fresh"]}


@pytest.mark.parametrize("kind", KINDS)
def test_workload_without_the_volume_is_a_problem_and_unchanged(kind):
    w = workload(kind, volumes=[{"name": "other", "emptyDir": {}}])
    before = copy.deepcopy(w)
    result = run([backup()], [w])
    assert result.changes == []
    [problem] = result.problems
    assert problem.severity == "error"
    assert problem.backup == "www" and problem.namespace == "web"
    assert problem.message.startswith("spec.backupSource.volumeName: ")
    assert "'data'" in problem.message
    assert w == before


def test_workload_without_the_volume_keeps_an_existing_sidecar():
    w = injected(workload())
    pod_spec(w)["volumes"] = [v for v in pod_spec(w)["volumes"] if v["name"] != "data"]
    result = run([backup()], [w])
    assert result.changes == []
    assert len(result.problems) == 1


def test_backups_never_cross_namespaces():
    other_ns = workload(namespace="other")
    result = run([backup(namespace="web")], [other_ns], remove_when_missing=False)
    assert result.changes == []
    assert [p.severity for p in result.problems] == ["warning"]
    assert result.selected == {("web", "www"): [], ("other", "www"): ["Deployment/app"]}
    # and a same-named Backup elsewhere does not keep a sidecar alive in this namespace
    result = run([backup(namespace="web")], [injected(other_ns)], remove_when_missing=True)
    [change] = result.changes
    assert change.action == REMOVE and change.ref.namespace == "other"


def test_each_namespace_gets_its_own_backup():
    a = backup(namespace="a", path="/a")
    b = backup(namespace="b", path="/b")
    result = run([a, b], [workload(namespace="a"), workload(namespace="b")])
    mounts = {
        c.ref.namespace: pod_spec(c.after)["containers"][1]["volumeMounts"][0]["mountPath"]
        for c in result.changes
    }
    assert mounts == {"a": "/a", "b": "/b"}


def test_user_content_and_order_are_untouched():
    containers = [
        {"name": "z-first", "image": "a", "volumeMounts": [{"name": "data", "mountPath": "/d"}]},
        {"name": "a-second", "image": "b", "env": [{"name": "X", "value": "1"}]},
    ]
    volumes = [
        {"name": "zz", "emptyDir": {}},
        {"name": "data", "persistentVolumeClaim": {"claimName": "d"}},
        {"name": "aa", "configMap": {"name": "cm"}},
    ]
    annotations = {"z": "1", "a": "2", "prometheus.io/scrape": "true"}
    w = workload(containers=containers, volumes=volumes, annotations=annotations)
    [change] = run([backup()], [w]).changes
    spec = pod_spec(change.after)
    assert spec["containers"][:2] == containers
    assert spec["volumes"][:3] == volumes
    after_annotations = change.after["spec"]["template"]["metadata"]["annotations"]
    assert list(after_annotations)[:3] == list(annotations)
    assert {k: after_annotations[k] for k in annotations} == annotations
    assert change.after["metadata"] == w["metadata"]
    rest = {k: v for k, v in change.after["spec"].items() if k != "template"}
    assert rest == {k: v for k, v in w["spec"].items() if k != "template"}
    assert remove(change.after) == w


def test_existing_restik_container_and_volumes_are_replaced_in_place():
    # restik's parts: the hash annotation is there, and restik's container mounts them
    mounts = [
        {"name": "restik-cache", "mountPath": "/c"},
        {"name": "restik-stale", "mountPath": "/s"},
    ]
    stale = {"name": SIDECAR_NAME, "image": "old", "args": ["old"], "volumeMounts": mounts}
    containers = [
        {"name": "app", "image": "a"},
        stale,
        {"name": "last", "image": "b"},
    ]
    volumes = [
        {"name": "restik-cache", "hostPath": {"path": "/old"}},
        {"name": "data", "emptyDir": {}},
        {"name": "restik-stale", "emptyDir": {}},
    ]
    w = workload(containers=containers, volumes=volumes, annotations={HASH_ANNOTATION: "old"})
    [change] = run([backup()], [w]).changes
    assert change.action == UPDATE
    spec = pod_spec(change.after)
    assert names(spec["containers"]) == ["app", SIDECAR_NAME, "last"]
    rendered = RENDERER.render(parse_backup(backup()), "Deployment", "app")
    assert spec["containers"][1] == rendered.container
    assert names(spec["volumes"]) == ["restik-cache", "data", "restik-repo", "restik-token"]
    assert spec["volumes"][0] == {"name": "restik-cache", "emptyDir": {}}
    assert change.after["spec"]["template"]["metadata"]["annotations"] == {
        HASH_ANNOTATION: rendered.config_hash
    }


def test_right_hash_but_no_sidecar_is_reinjected():
    w = injected(workload())
    pod_spec(w)["containers"] = pod_spec(w)["containers"][:1]
    [change] = run([backup()], [w]).changes
    assert change.action == UPDATE
    assert change.after == injected(workload())


def test_users_own_restik_named_parts_are_never_removed():
    """Issue 12 item 11: without restik's hash annotation, a container named restik and
    volumes named restik-* are the user's: an unlabeled workload keeps them."""
    w = workload(
        label=None,
        containers=[{"name": "app", "image": "a"}, {"name": SIDECAR_NAME, "image": "mine"}],
        volumes=[{"name": "data", "emptyDir": {}}, {"name": "restik-cache", "emptyDir": {}}],
    )
    assert run([], [w]).changes == []


def test_users_restik_volume_survives_inject_and_remove():
    user_vol = {"name": "restik-config", "configMap": {"name": "cfg"}}
    app = {
        "name": "app",
        "image": "a",
        "volumeMounts": [{"name": "restik-config", "mountPath": "/c"}],
    }
    w = workload(containers=[app], volumes=[{"name": "data", "emptyDir": {}}, user_vol])
    after = injected(w)
    assert user_vol in pod_spec(after)["volumes"]
    assert remove(after) == w
    [change] = run([], [unlabeled(after)]).changes
    assert change.action == REMOVE
    assert change.after == unlabeled(w)
    # restik's own container mounting the user's volume does not make the volume restik's
    pod_spec(after)["containers"][-1]["volumeMounts"].append(
        {"name": "restik-config", "mountPath": "/x"}
    )
    assert user_vol in pod_spec(remove(after))["volumes"]


@pytest.mark.parametrize(
    ("containers", "volumes", "field"),
    [
        (
            [{"name": "app", "image": "a"}, {"name": SIDECAR_NAME, "image": "mine"}],
            [{"name": "data", "emptyDir": {}}],
            "spec.template.spec.containers[1].name",
        ),
        (
            [{"name": "app", "image": "a"}],
            [
                {"name": "restik-cache", "hostPath": {"path": "/h"}},
                {"name": "data", "emptyDir": {}},
            ],
            "spec.template.spec.volumes[0].name",
        ),
    ],
)
def test_a_name_clash_is_a_problem_not_an_overwrite(containers, volumes, field):
    w = workload(containers=containers, volumes=volumes)
    result = run([backup()], [w])
    assert result.changes == []
    [problem] = result.problems
    assert problem.severity == "error" and problem.backup == "www"
    assert problem.message.startswith(f"{field}: ")
    assert "restik did not inject" in problem.message


def test_removal_never_leaves_no_container():
    w = injected(workload())
    pod_spec(w)["containers"] = [c for c in pod_spec(w)["containers"] if c["name"] == SIDECAR_NAME]
    result = run([], [unlabeled(w)])
    assert result.changes == []
    [problem] = result.problems
    assert "spec.template.spec.containers" in problem.message


@pytest.mark.parametrize("kind", KINDS)
def test_owned_workload_is_never_changed_and_reported(kind):
    """Issue 12 item 1: a Deployment's ReplicaSet inherits the template's labels."""
    w = workload(kind)
    w["metadata"]["ownerReferences"] = [
        {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "name": "app",
            "uid": "u1",
            "controller": True,
        }
    ]
    result = run([backup()], [w])
    assert result.changes == []
    assert result.selected == {("web", "www"): []}
    [problem] = result.problems
    assert (problem.severity, problem.reason, problem.backup) == ("warning", "OwnedWorkload", "www")
    assert f"label the Deployment, not its {kind}" in problem.message
    assert "Deployment/app" in problem.message
    # with a sidecar an older restik put there, unlabeled: still left alone
    owned = unlabeled(injected(w))
    assert run([backup()], [owned]).changes == []
    # a non-controller owner reference does not count
    w["metadata"]["ownerReferences"][0]["controller"] = False
    assert [c.action for c in run([backup()], [w]).changes] == [INJECT]


@pytest.mark.parametrize("kind", KINDS)
def test_restart_only_for_kinds_that_do_not_roll(kind):
    [change] = run([backup()], [workload(kind)]).changes
    assert change.restart is (kind in {"ReplicaSet", "ReplicationController"})
    assert WORKLOAD_KINDS[kind]


def test_selected_lists_workloads_per_backup():
    workloads = [
        workload("StatefulSet", "db"),
        workload("Deployment", "web"),
        workload("DaemonSet", "agent", label="other"),
        workload("Deployment", "plain", label=None),
        workload("Deployment", "web", namespace="elsewhere"),
    ]
    result = run([backup(), backup(name="other"), backup(name="unused")], workloads)
    assert result.selected == {
        ("web", "www"): ["Deployment/web", "StatefulSet/db"],
        ("web", "other"): ["DaemonSet/agent"],
        ("web", "unused"): [],
        ("elsewhere", "www"): ["Deployment/web"],
    }


def test_broken_labeled_workload_is_a_problem_not_an_exception():
    broken = {"kind": "Deployment", "metadata": {"name": "x", "namespace": "web",
              "labels": {CONFIG_LABEL: "www"}}, "spec": {"template": "nope"}}  # fmt: skip
    result = run([backup()], [broken, workload()])
    assert [c.ref.name for c in result.changes] == ["app"]
    [problem] = result.problems
    assert problem.message == "spec.template: required"
    assert problem.backup == "www"


def test_many_workloads_one_pass():
    workloads = [workload(k, f"w{i}") for i, k in enumerate(KINDS * 4)]
    result = run([backup()], workloads)
    assert [c.action for c in result.changes] == [INJECT] * len(workloads)
    converged = [c.after for c in result.changes]
    assert run([backup()], converged).changes == []


def _set_path(obj, path, value):
    node = obj
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = value


BROKEN_FIELDS = {
    "metadata-not-object": (("metadata",), 1),
    "name-not-string": (("metadata", "name"), ["a"]),
    "namespace-not-string": (("metadata", "namespace"), ["a"]),
    "volume-name-not-string": (("spec", "template", "spec", "volumes", 0, "name"), ["a"]),
    "claim-templates-not-list": (("spec", "volumeClaimTemplates"), 1),
    "claim-template-metadata-not-object": (("spec", "volumeClaimTemplates"), [{"metadata": []}]),
    "claim-template-name-not-string": (
        ("spec", "volumeClaimTemplates"),
        [{"metadata": {"name": ["x"]}}],
    ),
}


@pytest.mark.parametrize(("path", "value"), BROKEN_FIELDS.values(), ids=BROKEN_FIELDS.keys())
@pytest.mark.parametrize("remove_when_missing", [True, False])
def test_broken_workload_fields_become_problems(path, value, remove_when_missing):
    w = workload("StatefulSet", claim_templates=["data"])
    _set_path(w, path, value)
    result = run(
        [backup()], [w, workload("Deployment", "ok")], remove_when_missing=remove_when_missing
    )
    assert [c.ref.name for c in result.changes] == ["ok"]
    assert len(result.problems) == 1
