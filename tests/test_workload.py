"""A workload's pod template as restik reads and edits it: what counts as a workload, its
reference, its label, what restik owns in it, and inject/remove on every shape of template."""

from __future__ import annotations

import copy
import json

import pytest

from reconciler.api.backup import parse_backup
from reconciler.api.constants import CONFIG_LABEL, HASH_ANNOTATION, SIDECAR_NAME
from reconciler.controller.podtemplate import (
    WorkloadError,
    WorkloadRef,
    config_label,
    current_hash,
    has_sidecar,
    in_sync_fast,
    inject,
    is_workload,
    pod_template,
    remove,
    volume_names,
    workload_ref,
)
from reconciler.controller.render import Renderer
from tests.factories import KINDS, backup, workload

RENDERER = Renderer()
BACKUP = parse_backup(backup())


def rendered(obj):
    return RENDERER.render(BACKUP, obj["kind"], obj["metadata"]["name"])


def pod_spec(obj):
    return obj["spec"]["template"]["spec"]


def from_api(obj):
    """The object as the controller gets it: decoded from JSON (no shared string objects)."""
    return json.loads(json.dumps(obj))


def names(items):
    return [i["name"] for i in items]


# ---------------------------------------------------------------- what is a workload


@pytest.mark.parametrize("kind", KINDS)
def test_every_workload_kind_is_a_workload(kind):
    assert is_workload(workload(kind))


@pytest.mark.parametrize(
    "obj",
    [
        {"kind": "Pod", "metadata": {"name": "p"}},
        {"kind": "CronJob", "metadata": {"name": "c"}},
        {"kind": "Backup", "metadata": {"name": "b"}},
        {"metadata": {"name": "no-kind"}},
        ["Deployment"],
        "Deployment",
        None,
    ],
    ids=["pod", "cronjob", "backup", "no-kind", "list", "string", "null"],
)
def test_other_objects_are_not_workloads(obj):
    assert not is_workload(obj)


# ---------------------------------------------------------------- reference and label


def test_a_workload_without_a_namespace_is_in_default():
    obj = workload()
    del obj["metadata"]["namespace"]
    assert workload_ref(obj) == WorkloadRef("Deployment", "default", "app")
    obj["metadata"]["namespace"] = ""
    assert workload_ref(obj) == ("Deployment", "default", "app")


def test_a_workload_ref_prints_as_kind_and_name():
    ref = workload_ref(workload("StatefulSet", "db", namespace="data"))
    assert ref == WorkloadRef("StatefulSet", "data", "db")
    assert str(ref) == "StatefulSet/db"


@pytest.mark.parametrize(
    ("metadata", "message"),
    [
        (None, "metadata: must be an object"),
        (["app"], "metadata: must be an object"),
        ({"namespace": "web"}, "metadata.name: must be a non-empty string"),
        ({"name": "", "namespace": "web"}, "metadata.name: must be a non-empty string"),
        ({"name": 7, "namespace": "web"}, "metadata.name: must be a non-empty string"),
        ({"name": "app", "namespace": 7}, "metadata.namespace: must be a string"),
    ],
)
def test_a_broken_reference_names_the_field(metadata, message):
    obj = workload()
    obj["metadata"] = metadata
    with pytest.raises(WorkloadError) as info:
        workload_ref(obj)
    assert str(info.value) == message


def test_config_label_is_the_backup_name_or_none():
    assert config_label(workload(label="www")) == "www"
    assert config_label(workload(label=None)) is None
    for labels in ({CONFIG_LABEL: ""}, {CONFIG_LABEL: 7}, ["x"], None):
        obj = workload()
        obj["metadata"]["labels"] = labels
        assert config_label(obj) is None, labels
    assert config_label({"kind": "Deployment", "metadata": "x"}) is None
    assert config_label({"kind": "Deployment"}) is None


# ---------------------------------------------------------------- the pod template


def _broken(path, value):
    obj = workload()
    node = obj
    for key in path[:-1]:
        node = node[key]
    if value is DELETE:
        del node[path[-1]]
    else:
        node[path[-1]] = value
    return obj


DELETE = object()
BROKEN = {
    "no-spec": (("spec",), DELETE, "spec: required"),
    "spec-list": (("spec",), [], "spec: required"),
    "no-template": (("spec", "template"), DELETE, "spec.template: required"),
    "no-pod-spec": (("spec", "template", "spec"), DELETE, "spec.template.spec: required"),
    "containers-missing": (
        ("spec", "template", "spec", "containers"),
        DELETE,
        "spec.template.spec.containers: must be a list of containers",
    ),
    "containers-object": (
        ("spec", "template", "spec", "containers"),
        {"name": "app"},
        "spec.template.spec.containers: must be a list of containers",
    ),
    "container-string": (
        ("spec", "template", "spec", "containers"),
        [{"name": "app"}, "sidecar"],
        "spec.template.spec.containers: must be a list of containers",
    ),
    "volumes-object": (
        ("spec", "template", "spec", "volumes"),
        {"name": "data"},
        "spec.template.spec.volumes: must be a list of named volumes",
    ),
    "volume-string": (
        ("spec", "template", "spec", "volumes"),
        ["data"],
        "spec.template.spec.volumes: must be a list of named volumes",
    ),
    "volume-unnamed": (
        ("spec", "template", "spec", "volumes"),
        [{"name": "data"}, {"emptyDir": {}}],
        "spec.template.spec.volumes: must be a list of named volumes",
    ),
    "template-metadata-list": (
        ("spec", "template", "metadata"),
        [],
        "spec.template.metadata: must be an object",
    ),
    "annotations-list": (
        ("spec", "template", "metadata", "annotations"),
        ["a"],
        "spec.template.metadata.annotations: must be an object",
    ),
}


@pytest.mark.parametrize(("path", "value", "message"), BROKEN.values(), ids=BROKEN.keys())
def test_a_broken_pod_template_names_the_field(path, value, message):
    obj = _broken(path, value)
    for read in (pod_template, has_sidecar, current_hash, volume_names):
        with pytest.raises(WorkloadError) as info:
            read(obj)
        assert str(info.value) == message
    with pytest.raises(WorkloadError):
        inject(obj, rendered(workload()))
    with pytest.raises(WorkloadError):
        remove(obj)


def test_a_template_without_metadata_or_volumes_is_fine():
    obj = workload(volumes=[])
    del obj["spec"]["template"]["metadata"]
    assert pod_template(obj) is obj["spec"]["template"]
    assert current_hash(obj) is None
    assert not has_sidecar(obj)
    assert volume_names(obj) == set()
    obj["spec"]["template"]["metadata"] = {"annotations": None}
    assert current_hash(obj) is None


# ---------------------------------------------------------------- what restik owns


def test_the_hash_annotation_alone_is_read_and_counts_as_restiks():
    obj = workload(annotations={HASH_ANNOTATION: "abc", "team": "web"})
    assert current_hash(obj) == "abc"
    assert has_sidecar(obj)
    assert current_hash(workload(annotations={"team": "web"})) is None
    assert not has_sidecar(workload(annotations={"team": "web"}))


def test_the_sidecar_container_alone_is_the_users():
    # ownership is by restik's hash annotation, never by a name alone
    app = {"name": "app", "image": "nginx"}
    obj = workload(containers=[app, {"name": SIDECAR_NAME, "image": "restik"}])
    assert current_hash(obj) is None
    assert not has_sidecar(obj)
    assert not has_sidecar(from_api(obj))
    marked = workload(containers=[app, {"name": SIDECAR_NAME, "image": "restik"}])
    marked["spec"]["template"]["metadata"]["annotations"] = {HASH_ANNOTATION: "0" * 16}
    assert has_sidecar(marked)
    assert not has_sidecar(workload(containers=[app, {"name": "restik2", "image": "x"}]))
    assert not has_sidecar(workload(containers=[{"name": "web", "image": "x"}]))


def test_a_restik_volume_alone_is_the_users():
    # ownership is by restik's hash annotation, never by a name alone
    obj = workload(volumes=[{"name": "data", "emptyDir": {}}, {"name": "restik-x", "emptyDir": {}}])
    assert not has_sidecar(obj)
    for name in ("restik", "restikdata", "my-restik-data"):
        assert not has_sidecar(workload(volumes=[{"name": name, "emptyDir": {}}])), name


def test_a_template_given_by_the_caller_is_the_one_read():
    # The planner checks the template once and passes it on; the helpers must use it.
    obj = workload()
    template = copy.deepcopy(inject(obj, rendered(obj))["spec"]["template"])
    assert current_hash(obj) is None
    assert current_hash(obj, template) == rendered(obj).config_hash
    assert not has_sidecar(obj)
    assert has_sidecar(obj, template)
    template["spec"]["volumes"].append({"name": "extra", "emptyDir": {}})
    assert "extra" in volume_names(obj, template)
    assert "extra" not in volume_names(obj)


# ---------------------------------------------------------------- volumes a container can mount


def test_statefulset_claim_templates_are_volumes_only_for_statefulsets():
    sts = workload("StatefulSet", claim_templates=["data", "logs"], volumes=[])
    assert volume_names(sts) == {"data", "logs"}
    assert volume_names(from_api(sts)) == {"data", "logs"}
    deployment = workload("Deployment", volumes=[{"name": "cache", "emptyDir": {}}])
    deployment["spec"]["volumeClaimTemplates"] = [{"metadata": {"name": "data"}}]
    assert volume_names(deployment) == {"cache"}


def test_an_object_without_kind_is_read_like_any_workload_but_a_statefulset():
    # LIST answers leave "kind" out of their items; nothing here may depend on it being set.
    sts = workload("StatefulSet", claim_templates=["data"], volumes=[{"name": "tmp"}])
    del sts["kind"]
    assert volume_names(sts) == {"tmp"}


@pytest.mark.parametrize(
    ("claims", "message"),
    [
        ({"metadata": {"name": "x"}}, "spec.volumeClaimTemplates: must be a list"),
        (["x"], "spec.volumeClaimTemplates[0].metadata.name: required"),
        ([{"spec": {}}], "spec.volumeClaimTemplates[0].metadata.name: required"),
        ([{"metadata": ["x"]}], "spec.volumeClaimTemplates[0].metadata.name: required"),
        (
            [{"metadata": {"name": "a"}}, {"metadata": {"name": 5}}],
            "spec.volumeClaimTemplates[1].metadata.name: required",
        ),
    ],
)
def test_a_broken_claim_template_names_the_field(claims, message):
    sts = workload("StatefulSet")
    sts["spec"]["volumeClaimTemplates"] = claims
    with pytest.raises(WorkloadError) as info:
        volume_names(sts)
    assert str(info.value) == message


# ---------------------------------------------------------------- the steady-state check


def test_in_sync_needs_the_hash_the_sidecar_and_the_source_volume():
    obj = workload(containers=[{"name": "web", "image": "nginx"}])
    done = from_api(inject(obj, rendered(obj)))
    want = rendered(obj).config_hash
    assert in_sync_fast(done, want, "data")
    assert not in_sync_fast(done, "other-hash", "data")
    assert not in_sync_fast(done, want, "elsewhere")
    assert not in_sync_fast(done, want, "aaa")
    without_sidecar = copy.deepcopy(done)
    pod_spec(without_sidecar)["containers"].pop()
    assert not in_sync_fast(without_sidecar, want, "data")
    assert not in_sync_fast(obj, want, "data")


def test_in_sync_finds_the_source_in_a_statefulset_claim_template_only():
    sts = workload("StatefulSet", claim_templates=["data"], volumes=[])
    done = from_api(inject(sts, rendered(sts)))
    assert in_sync_fast(done, rendered(sts).config_hash, "data")
    assert not in_sync_fast(done, rendered(sts).config_hash, "logs")
    assert not in_sync_fast(done, rendered(sts).config_hash, "aaa")
    two = from_api(
        inject(workload("StatefulSet", claim_templates=["a", "z"], volumes=[]), rendered(sts))
    )
    assert in_sync_fast(two, rendered(sts).config_hash, "z")
    assert not in_sync_fast(two, rendered(sts).config_hash, "m")
    deployment = workload("Deployment", volumes=[])
    deployment["spec"]["volumeClaimTemplates"] = [{"metadata": {"name": "data"}}]
    done = inject(deployment, rendered(deployment))
    assert not in_sync_fast(done, rendered(deployment).config_hash, "data")


@pytest.mark.parametrize(
    "path",
    [
        ("spec",),
        ("spec", "template"),
        ("spec", "template", "metadata"),
        ("spec", "template", "metadata", "annotations"),
        ("spec", "template", "spec"),
        ("spec", "template", "spec", "containers"),
    ],
)
def test_in_sync_is_false_not_an_error_on_a_broken_object(path):
    obj = workload()
    done = inject(obj, rendered(obj))
    node = done
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = 7
    assert not in_sync_fast(done, rendered(obj).config_hash, "data")
    del node[path[-1]]
    assert not in_sync_fast(done, rendered(obj).config_hash, "data")


# ---------------------------------------------------------------- inject and remove


def test_inject_into_a_bare_template_creates_what_it_needs_and_remove_undoes_it():
    obj = workload(volumes=[])
    del obj["spec"]["template"]["metadata"]
    pristine = copy.deepcopy(obj)
    r = rendered(obj)
    done = inject(obj, r)
    assert obj == pristine, "inject must not change its input"
    assert names(pod_spec(done)["containers"]) == ["app", SIDECAR_NAME]
    assert pod_spec(done)["volumes"] == list(r.volumes)
    assert done["spec"]["template"]["metadata"] == {"annotations": {HASH_ANNOTATION: r.config_hash}}
    undone = remove(done)
    assert done["spec"]["template"]["metadata"]["annotations"], "remove must not change its input"
    assert undone == pristine


def test_inject_with_null_volumes_and_annotations():
    obj = workload(annotations=None)
    pod_spec(obj)["volumes"] = None
    obj["spec"]["template"]["metadata"]["annotations"] = None
    r = rendered(obj)
    done = inject(obj, r)
    assert pod_spec(done)["volumes"] == list(r.volumes)
    assert done["spec"]["template"]["metadata"]["annotations"] == {HASH_ANNOTATION: r.config_hash}


def test_remove_keeps_what_the_user_has_and_leaves_nothing_empty():
    obj = workload(annotations={"team": "web"})
    done = inject(obj, rendered(obj))
    assert remove(done) == obj
    # empty annotations and metadata are left out (the API server drops them anyway)
    only_hash = workload(annotations={HASH_ANNOTATION: "abc"})
    assert "annotations" not in remove(only_hash)["spec"]["template"]["metadata"]
    only_hash["spec"]["template"]["metadata"].pop("labels")
    assert "metadata" not in remove(only_hash)["spec"]["template"]
    # a null annotations block is not restik's to touch
    odd = workload()
    odd["spec"]["template"]["metadata"] = {"labels": {"app": "app"}, "annotations": None}
    assert remove(odd) == odd


def test_stale_restik_items_are_replaced_in_place_and_duplicates_dropped():
    user = {"name": "app", "image": "nginx"}
    stale = {"name": SIDECAR_NAME, "image": "restik:old"}
    obj = workload(
        containers=[stale, user, copy.deepcopy(stale)],
        volumes=[
            {"name": "restik-cache", "emptyDir": {"medium": "Memory"}},
            {"name": "data", "emptyDir": {}},
            {"name": "restik-cache", "emptyDir": {}},
            {"name": "restik-gone", "emptyDir": {}},
        ],
    )
    # restik's items are restik's because its hash annotation is there
    obj["spec"]["template"]["metadata"]["annotations"] = {HASH_ANNOTATION: "0" * 16}
    r = rendered(obj)
    done = inject(obj, r)
    assert pod_spec(done)["containers"] == [r.container, user]
    fresh = {v["name"]: v for v in r.volumes}
    expected = [fresh["restik-cache"], {"name": "data", "emptyDir": {}}]
    expected += [v for v in r.volumes if v["name"] != "restik-cache"]
    assert pod_spec(done)["volumes"] == expected
    assert remove(done) == workload(containers=[user], volumes=[{"name": "data", "emptyDir": {}}])


def test_injected_items_are_copies_of_the_render():
    obj = workload()
    r = rendered(obj)
    done = inject(obj, r)
    pod_spec(done)["containers"][-1]["image"] = "changed"
    pod_spec(done)["volumes"][-1]["name"] = "changed"
    again = inject(workload(), r)
    assert pod_spec(again)["containers"][-1] == r.container != pod_spec(done)["containers"][-1]
    assert pod_spec(again)["volumes"][-1] == r.volumes[-1]
