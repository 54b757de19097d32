"""The planner: inject / update / remove / nothing, per workload kind, with exact results."""

from __future__ import annotations

import copy

import pytest

from reconciler.api.backup import InvalidBackup, parse_backup
from reconciler.api.constants import CONFIG_LABEL, HASH_ANNOTATION, SIDECAR_NAME, WORKLOAD_KINDS
from reconciler.controller.plan import (
    INJECT,
    REMOVE,
    UPDATE,
    BackupIndex,
    Plan,
    Problem,
    plan,
    plan_batch,
)
from reconciler.controller.podtemplate import WorkloadRef, inject, remove
from reconciler.controller.render import Renderer
from tests.factories import KINDS, backup, parsed, workload

RENDERER = Renderer()


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
        backup(volume={"persistentVolumeClaim": {"claimName": "other"}}),
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


@pytest.mark.parametrize("remove_when_missing", [True, False])
def test_a_label_naming_a_missing_backup_is_a_warning_with_the_closest_name(remove_when_missing):
    """A typo in the label (config: wwww) is never silent, live or offline."""
    typo = workload(name="app", label="wwww")
    result = run([backup()], [typo], remove_when_missing=remove_when_missing)
    [problem] = result.problems
    assert problem.severity == "warning"
    assert problem.message == "Backup web/wwww not found (did you mean 'www'?)"
    far = run([backup()], [workload(label="zzz")], remove_when_missing=remove_when_missing)
    assert far.problems[0].message == "Backup web/zzz not found"
    elsewhere = run(
        [backup(namespace="prod")], [typo], remove_when_missing=remove_when_missing
    )  # a Backup of another namespace is no suggestion
    assert elsewhere.problems[0].message == "Backup web/wwww not found"


def test_a_deleted_backup_removes_its_sidecar_without_a_warning():
    result = run([], [injected(workload())], remove_when_missing=True)
    assert [c.action for c in result.changes] == [REMOVE]
    assert result.problems == []


def test_a_missing_volume_lists_the_volumes_the_workload_has():
    w = workload(volumes=[{"name": "cache", "emptyDir": {}}, {"name": "logs", "emptyDir": {}}])
    [problem] = run([backup()], [w]).problems
    assert problem.message.endswith("has no volume 'data' (its volumes: cache, logs)")
    bare = workload(volumes=[])
    [problem] = run([backup()], [bare]).problems
    assert problem.message.endswith("(its volumes: none)")


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


# ---------------------------------------------------------------- what the controller consumes


def live_cycle(backups, *pages):
    """The planner as `restik run` calls it (Controller.cycle): one index, one plan, a batch
    per LIST page with no options, then finish()."""
    index = BackupIndex.of(parsed(*backups))
    result = index.new_plan()
    for page in pages:
        plan_batch(index, page, RENDERER, result)
    result.finish()
    return result


@pytest.mark.parametrize("kind", KINDS)
def test_the_live_controller_removes_the_sidecar_of_a_deleted_backup(kind):
    w = injected(workload(kind))
    [change] = live_cycle([], [w]).changes
    assert change.action == REMOVE
    assert change.after == workload(kind)


def test_the_live_controller_plans_page_by_page_into_one_sorted_plan():
    result = live_cycle(
        [backup(), backup(name="idle")],
        [workload("Deployment", "web"), workload("StatefulSet", "db")],
        [workload("Deployment", "api"), workload("DaemonSet", "agent", label=None)],
    )
    assert [c.ref.name for c in result.changes] == ["web", "db", "api"]
    assert result.selected == {
        ("web", "www"): ["Deployment/api", "Deployment/web", "StatefulSet/db"],
        ("web", "idle"): [],
    }


def test_backup_index_sorts_valid_and_invalid_backups():
    bad = backup(name="bad", schedule="never")
    index = BackupIndex.of(parsed(backup(), bad, backup(name="www", namespace="other")))
    assert set(index.valid) == {("web", "www"), ("other", "www")}
    assert index.valid[("other", "www")].namespace == "other"
    assert set(index.invalid) == {("web", "bad")}
    assert isinstance(index.invalid[("web", "bad")], InvalidBackup)
    assert index.new_plan().selected == {
        ("web", "www"): [],
        ("other", "www"): [],
        ("web", "bad"): [],
    }


def test_injected_is_every_workload_that_carries_restiks_parts_as_observed():
    ok = injected(workload("Deployment", "synced"))
    stale = injected(workload("Deployment", "stale"), backup(path="/old"))
    fresh = workload("Deployment", "fresh")
    unlabeled_with = unlabeled(injected(workload("Deployment", "orphan")))
    unlabeled_without = workload("Deployment", "plain", label=None)
    for_invalid = injected(workload("StatefulSet", "kept", label="bad"))
    for_missing = injected(workload("DaemonSet", "gone", label="deleted"))
    no_volume = injected(workload("Deployment", "novol"))
    pod_spec(no_volume)["volumes"] = [
        v for v in pod_spec(no_volume)["volumes"] if v["name"] != "data"
    ]
    workloads = [ok, stale, fresh, unlabeled_with, unlabeled_without, for_invalid, for_missing]
    workloads.append(no_volume)
    for remove_when_missing in (True, False):
        result = run(
            [backup(), backup(name="bad", schedule="never")],
            workloads,
            remove_when_missing=remove_when_missing,
        )
        assert {r.name for r in result.injected} == {
            "synced",
            "stale",
            "orphan",
            "kept",
            "gone",
            "novol",
        }
        assert WorkloadRef("Deployment", "web", "synced") in result.injected


def test_service_accounts_of_each_backups_workloads_for_its_rolebinding():
    def with_sa(obj, field, name):
        pod_spec(obj)[field] = name
        return obj

    workloads = [
        with_sa(workload("Deployment", "a"), "serviceAccountName", "builder"),
        with_sa(workload("Deployment", "b"), "serviceAccount", "legacy"),
        workload("StatefulSet", "c"),
        with_sa(workload("Deployment", "d", label="other"), "serviceAccountName", "other-sa"),
        with_sa(workload("Deployment", "e", label=None), "serviceAccountName", "unlabeled"),
        with_sa(workload("Deployment", "f", label="missing"), "serviceAccountName", "m"),
        with_sa(workload("Deployment", "a", namespace="prod"), "serviceAccountName", "p"),
    ]
    result = run([backup(), backup(name="other")], workloads)
    assert result.service_accounts == {
        ("web", "www"): {"builder", "legacy", "default"},
        ("web", "other"): {"other-sa"},
        ("web", "missing"): {"m"},
        ("prod", "www"): {"p"},
    }


def test_an_empty_plan_is_one_without_changes():
    converged = run([backup()], [injected(workload())])
    assert converged.empty
    assert converged.changes == []
    assert not run([backup()], [workload()]).empty
    problems_only = run([backup(volume_name="other")], [workload()])
    assert problems_only.problems and problems_only.empty


def test_problems_as_the_offline_commands_print_them():
    from reconciler.offline.diff import plan_objects

    no_volume = workload("Deployment", "app", volumes=[{"name": "cache", "emptyDir": {}}])
    missing = workload("StatefulSet", "db", label="elsewhere")
    result = plan_objects(
        [("backup.yaml", backup()), ("app.yaml", no_volume), ("db.yaml", missing)], RENDERER
    )
    assert result.errors == [
        "app.yaml: Backup web/www: Deployment/web/app: "
        "spec.backupSource.volumeName: Deployment/app has no volume 'data' (its volumes: cache)"
    ]
    assert result.warnings == [
        "db.yaml: Backup web/elsewhere: StatefulSet/web/db: Backup web/elsewhere not found"
    ]


def test_a_problem_prints_only_the_parts_it_has():
    ref = WorkloadRef("Deployment", "web", "app")
    assert str(Problem("web", "www", ref, "broken")) == "Backup web/www: Deployment/web/app: broken"
    assert str(Problem("web", None, ref, "broken")) == "Deployment/web/app: broken"
    assert str(Problem("web", "www", None, "broken")) == "Backup web/www: broken"
    assert str(Problem("", None, None, "metadata.name: required")) == "metadata.name: required"


def test_problem_severity_errors_unless_the_backup_may_be_elsewhere():
    [error] = run([backup(volume_name="other")], [workload()]).problems
    assert error.severity == "error"
    assert (error.namespace, error.backup, error.ref) == (
        "web",
        "www",
        WorkloadRef("Deployment", "web", "app"),
    )
    [warning] = run([], [workload()], remove_when_missing=False).problems
    assert warning.severity == "warning"
    assert warning.message == "Backup web/www not found"


def test_a_workload_without_a_usable_reference_is_reported_with_its_label():
    nameless = workload()
    del nameless["metadata"]["name"]
    unlabeled_nameless = workload(label=None)
    unlabeled_nameless["metadata"]["name"] = ""
    result = run([backup()], [nameless, unlabeled_nameless, workload()])
    assert [c.ref.name for c in result.changes] == ["app"]
    assert [(p.namespace, p.backup, p.ref, p.message) for p in result.problems] == [
        ("", "www", None, "metadata.name: must be a non-empty string"),
        ("", None, None, "metadata.name: must be a non-empty string"),
    ]
    assert result.selected == {("web", "www"): ["Deployment/app"]}


def test_an_unlabeled_workload_with_a_broken_template_is_left_alone():
    broken = workload(label=None)
    broken["spec"]["template"] = "nope"
    result = run([backup()], [broken])
    assert (result.changes, result.problems, result.injected) == ([], [], set())


def test_a_workload_in_sync_needs_no_render_and_no_full_check():
    class Counting(Renderer):
        renders = 0

        def render(self, *args):
            Counting.renders += 1
            return super().render(*args)

    renderer = Counting()
    converged = injected(workload(), renderer=renderer)
    Counting.renders = 0
    result = run([backup()], [converged], renderer=renderer)
    assert result.changes == [] and Counting.renders == 0
    assert result.injected == {WorkloadRef("Deployment", "web", "app")}


def test_what_the_planner_hands_out_cannot_be_changed_by_a_consumer():
    # The controller, the status writer and the offline commands all read one Plan.
    result = run([backup(volume_name="other"), backup(name="x")], [workload(label="x")])
    [change], [problem] = result.changes, run([backup(volume_name="other")], [workload()]).problems
    index = BackupIndex.of(parsed(backup()))
    for obj, attr in ((change, "action"), (problem, "message"), (index, "valid")):
        with pytest.raises(AttributeError):
            setattr(obj, attr, None)
    assert hash(problem) == hash(copy.copy(problem))


def test_a_change_prints_without_the_workload_it_carries():
    # Changes end up in logs; the pod template may hold env values that must not.
    w = workload()
    pod_spec(w)["containers"][0]["env"] = [{"name": "TOKEN", "value": "s3cr3t-value"}]
    [change] = run([backup()], [w]).changes
    text = repr(change)
    assert "s3cr3t-value" not in text
    assert "Deployment" in text and "inject" in text


def test_remove_when_missing_is_only_ever_passed_by_name():
    index = BackupIndex.of([])
    with pytest.raises(TypeError):
        plan([], [], RENDERER, False)
    with pytest.raises(TypeError):
        plan_batch(index, [], RENDERER, index.new_plan(), False)


def test_plan_without_options_plans_like_the_live_controller():
    # plan() is the one-call form of what Controller.cycle does batch by batch.
    workloads = [injected(workload("Deployment", "gone", label="deleted")), workload()]
    alone = plan(parsed(backup()), workloads, RENDERER)
    live = live_cycle([backup()], workloads)
    assert [(c.ref, c.action) for c in alone.changes] == [(c.ref, c.action) for c in live.changes]
    assert [c.action for c in alone.changes] == [REMOVE, INJECT]
    assert alone.problems == live.problems == []
