"""Property tests (hypothesis) for the planner's invariants and the model's robustness.

Profiles: `ci` (1000 examples, loaded when $CI is set) and `dev` (200 examples).
"""

from __future__ import annotations

import copy

import pytest
from hypothesis import given
from hypothesis import strategies as st

from reconciler.api.backup import Backup, InvalidBackup, parse_backup
from reconciler.api.constants import CONFIG_LABEL, HASH_ANNOTATION, SIDECAR_NAME, WORKLOAD_KINDS
from reconciler.controller.patch import merge_patch
from reconciler.controller.plan import REMOVE, plan
from reconciler.controller.pod import app_user
from reconciler.controller.podtemplate import WorkloadError, inject, remove
from reconciler.controller.render import Renderer
from tests.emulator.patch import merge_patch as apply_rfc7386
from tests.factories import KINDS, hypothesis_profiles

hypothesis_profiles()

RENDERER = Renderer()
# Small pools keep the renderer's cache warm: rendering (Jinja + YAML) is the costly part.
NAMES = st.sampled_from(["a", "data", "www", "x-1"])
WORKLOAD_NAMES = st.sampled_from(["app", "db"])
TEXT = st.sampled_from(["", "x", "restik", "restik-cache", "{{ x }}", "é", "': #", "1"])
PATHS = st.sampled_from(["/data", "/a/{{b}}: 'x'"])
# Who a container or pod runs as: decides the sidecar's user, so it is in the hash.
SECURITY_CONTEXTS = st.sampled_from(
    [{}, {"runAsUser": 999}, {"runAsUser": 0, "runAsGroup": 0}, {"runAsGroup": 1000}]
)
VOLUME_SOURCES = st.sampled_from(
    [
        {"emptyDir": {}},
        {"persistentVolumeClaim": {"claimName": "pvc"}},
        {"configMap": {"name": "cm", "items": [{"key": "k", "path": "p"}]}},
        {"hostPath": {"path": "/h"}},
    ]
)


@st.composite
def containers(draw):
    names = draw(st.lists(NAMES, min_size=1, max_size=3, unique=True))
    out = []
    for n in names:
        c = {"name": n, "image": draw(st.sampled_from(["nginx", "busybox:1", "pg:17"]))}
        if draw(st.booleans()):
            c["args"] = draw(st.lists(TEXT, max_size=2))
        if draw(st.booleans()):
            c["volumeMounts"] = [{"name": draw(NAMES), "mountPath": "/m"}]
        if draw(st.booleans()):
            c["securityContext"] = draw(SECURITY_CONTEXTS)
        out.append(c)
    return out


@st.composite
def workloads(draw, with_sidecar=None):
    """A workload of any kind. Template ``volumes``/``annotations``/``metadata`` are absent or
    non-empty: remove() drops the empty containers restik may have created, so an explicitly
    empty ``volumes: []`` or ``annotations: {}`` is normalised away (documented behaviour)."""
    kind = draw(st.sampled_from(KINDS))
    name = draw(WORKLOAD_NAMES)
    volumes = [
        {"name": n, **draw(VOLUME_SOURCES)}
        for n in draw(st.lists(NAMES, min_size=1, max_size=3, unique=True))
    ]
    pod_spec = {"containers": draw(containers())}
    if draw(st.booleans()):
        pod_spec["securityContext"] = draw(SECURITY_CONTEXTS)
    if draw(st.booleans()):
        pod_spec["restartPolicy"] = "Always"
    claims = []
    if kind == "StatefulSet" and draw(st.booleans()):
        claims = draw(st.lists(st.sampled_from(["pgdata", "store"]), max_size=2, unique=True))
    if volumes and (not claims or draw(st.booleans())):
        pod_spec["volumes"] = volumes
    template: dict = {"spec": pod_spec}
    tmeta = {}
    if draw(st.booleans()):
        tmeta["labels"] = {"app": name}
    if draw(st.booleans()):
        tmeta["annotations"] = draw(
            st.dictionaries(st.sampled_from(["a", "b/c", "z"]), TEXT, min_size=1, max_size=2)
        )
    if tmeta:
        template["metadata"] = tmeta
    if draw(st.booleans()):
        template = dict(reversed(template.items()))
    labels = {}
    label = draw(st.one_of(st.none(), st.just("www")))
    if label:
        labels[CONFIG_LABEL] = label
    if draw(st.booleans()):
        labels["app"] = name
    meta = {"name": name, "namespace": draw(st.sampled_from(["web", "db"]))}
    if labels:
        meta["labels"] = labels
    spec = {"template": template}
    if claims:
        spec["volumeClaimTemplates"] = [{"metadata": {"name": c}} for c in claims]
    obj = {"apiVersion": WORKLOAD_KINDS[kind][0], "kind": kind, "metadata": meta, "spec": spec}
    stale = draw(st.booleans()) if with_sidecar is None else with_sidecar
    if stale:
        _add_stale_sidecar(draw, obj)
    return obj


def _add_stale_sidecar(draw, obj):
    """What an older restik injected: its container, maybe its cache volume, always its hash
    annotation (without it, a container named restik is the user's: see the clash tests)."""
    template = obj["spec"]["template"]
    pod_spec = template["spec"]
    at = draw(st.integers(0, len(pod_spec["containers"])))
    pod_spec["containers"].insert(at, {"name": SIDECAR_NAME, "image": "restik:old"})
    if draw(st.booleans()):
        vols = pod_spec.setdefault("volumes", [])
        vols.insert(draw(st.integers(0, len(vols))), {"name": "restik-cache", "emptyDir": {}})
    template.setdefault("metadata", {}).setdefault("annotations", {})[HASH_ANNOTATION] = "0"


def source_names(obj) -> list[str]:
    names = [v["name"] for v in obj["spec"]["template"]["spec"].get("volumes", [])]
    names += [c["metadata"]["name"] for c in obj["spec"].get("volumeClaimTemplates", [])]
    return sorted(n for n in names if not n.startswith("restik-"))


@st.composite
def backup_for(draw, obj) -> Backup:
    destination = {"repositorySecretName": draw(st.sampled_from(["s", "a.b"]))}
    if draw(st.booleans()):
        destination["repository"] = draw(st.sampled_from(["s3:h/b", "/mnt/r", "rest:http://r"]))
    else:
        destination["volume"] = draw(
            st.sampled_from(
                [
                    {"persistentVolumeClaim": {"claimName": "q", "readOnly": False}},
                    {"persistentVolumeClaim": {"claimName": "p"}},
                ]
            )
        )
        destination["path"] = "/repo"
    raw = {
        "apiVersion": "backup.appscode.com/v1beta1",
        "kind": "Backup",
        "metadata": {"name": "www", "namespace": obj["metadata"]["namespace"]},
        "spec": {
            "schedule": draw(st.sampled_from(["@hourly", "0 */30 * * * *", "@every 1h"])),
            "backupSource": {"volumeName": draw(st.sampled_from(source_names(obj))), "path": "/"},
            "destination": destination,
        },
    }
    raw["spec"]["backupSource"]["path"] = draw(PATHS)
    return parse_backup(raw)


@st.composite
def labeled_case(draw):
    obj = draw(workloads())
    obj["metadata"].setdefault("labels", {})[CONFIG_LABEL] = "www"
    b = draw(backup_for(obj))
    app = app_user(obj, b.source_volume)
    return obj, b, RENDERER.render(b, obj["kind"], obj["metadata"]["name"], app)


def _has_restik(obj) -> bool:
    template = obj["spec"]["template"]
    pod_spec = template["spec"]
    annotations = (template.get("metadata") or {}).get("annotations") or {}
    if HASH_ANNOTATION not in annotations:
        return False
    assert any(c["name"] == SIDECAR_NAME for c in pod_spec["containers"])
    return True


# One @given per group of invariants: generation dominates the cost, so each example is
# checked for every property of its group.
@given(labeled_case())
def test_inject_is_idempotent_and_remove_undoes_it(case):
    obj, _, rendered = case
    snapshot = copy.deepcopy(obj)
    once = inject(obj, rendered)
    assert inject(once, rendered) == once
    assert remove(once) == remove(obj)
    if not _has_restik(obj):
        assert remove(once) == obj
        assert remove(obj) == obj
    assert obj == snapshot, "inject/remove must not mutate their input"


@given(labeled_case(), st.sampled_from(["container", "volume"]))
def test_a_users_restik_named_part_is_never_changed(case, what):
    """Issue 12 item 11: without restik's hash annotation, a container named restik or a
    volume with a name restik renders is the user's: inject refuses, remove leaves it."""
    obj, backup, rendered = case
    obj = remove(obj)
    pod_spec = obj["spec"]["template"]["spec"]
    if what == "container":
        pod_spec["containers"].append({"name": SIDECAR_NAME, "image": "mine"})
    else:
        pod_spec.setdefault("volumes", []).append({"name": "restik-cache", "emptyDir": {}})
    snapshot = copy.deepcopy(obj)
    with pytest.raises(WorkloadError, match="restik did not inject"):
        inject(obj, rendered)
    assert remove(obj) == obj == snapshot
    result = plan([backup], [obj], RENDERER)
    assert result.changes == []
    assert [p.severity for p in result.problems] == ["error"]


@given(labeled_case())
def test_plan_injects_converges_and_unlabel_removes(case):
    obj, backup, rendered = case
    # plan on an injected workload: nothing to do
    result = plan([backup], [inject(obj, rendered)], RENDERER)
    assert result.changes == [] and result.problems == []
    # plan on the workload as generated: inject (or nothing when already in sync)
    first = plan([backup], [obj], RENDERER)
    if first.changes:
        [change] = first.changes
        assert change.after == inject(obj, rendered)
        after = change.after
    else:
        after = obj
    assert plan([backup], [after], RENDERER).changes == []
    # removing the label removes everything restik owns
    unlabeled = copy.deepcopy(after)
    del unlabeled["metadata"]["labels"][CONFIG_LABEL]
    [change] = plan([backup], [unlabeled], RENDERER).changes
    assert change.action == REMOVE
    assert change.after == remove(unlabeled)
    assert not _has_restik(change.after)


@given(labeled_case())
def test_the_controllers_merge_patch_turns_before_into_after(case):
    """What the controller sends (reconciler.controller.patch) applied as the API server applies an
    RFC 7386 merge patch (the emulator's own implementation) gives the planned object."""
    obj, _, rendered = case
    for before in (obj, inject(obj, rendered)):
        for after in (inject(before, rendered), remove(before)):
            applied = apply_rfc7386(before, merge_patch(before, after))
            assert applied == after


# ---------------------------------------------------------------- junk never raises

JUNK = st.recursive(
    st.none() | st.booleans() | st.integers(-2, 2) | TEXT | NAMES,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(TEXT | NAMES, inner, max_size=3),
    max_leaves=6,
)
WORKLOAD_PATHS = [
    ("metadata",),
    ("metadata", "name"),
    ("metadata", "namespace"),
    ("metadata", "labels"),
    ("metadata", "labels", CONFIG_LABEL),
    ("spec",),
    ("spec", "template"),
    ("spec", "template", "metadata"),
    ("spec", "template", "metadata", "annotations"),
    ("spec", "template", "metadata", "annotations", HASH_ANNOTATION),
    ("spec", "template", "spec"),
    ("spec", "template", "spec", "containers"),
    ("spec", "template", "spec", "containers", 0),
    ("spec", "template", "spec", "containers", 0, "name"),
    ("spec", "template", "spec", "volumes"),
    ("spec", "template", "spec", "volumes", 0),
    ("spec", "template", "spec", "volumes", 0, "name"),
    ("spec", "volumeClaimTemplates"),
    ("spec", "volumeClaimTemplates", 0),
    ("spec", "volumeClaimTemplates", 0, "metadata"),
    ("spec", "volumeClaimTemplates", 0, "metadata", "name"),
]


def _set(obj, path, value):
    node = obj
    for key in path[:-1]:
        if isinstance(key, int):
            if not isinstance(node, list) or not node:
                return
            node = node[0]
        else:
            if not isinstance(node, dict):
                return
            node = node.setdefault(key, [{}] if key in ("volumeClaimTemplates",) else {})
    last = path[-1]
    if isinstance(last, int):
        if isinstance(node, list) and node:
            node[0] = value
    elif isinstance(node, dict):
        node[last] = value


@st.composite
def junk_workloads(draw):
    if draw(st.integers(0, 9)) == 0:
        junk = draw(st.dictionaries(TEXT | NAMES, JUNK, max_size=4))
        junk["kind"] = draw(st.sampled_from(KINDS))
        return junk
    obj = draw(workloads())
    if obj["kind"] == "StatefulSet" and "volumeClaimTemplates" not in obj["spec"]:
        obj["spec"]["volumeClaimTemplates"] = [{"metadata": {"name": "data"}}]
    for path in draw(st.lists(st.sampled_from(WORKLOAD_PATHS), min_size=1, max_size=3)):
        _set(obj, path, draw(JUNK))
    return obj


VALID_BACKUPS = [
    parse_backup(
        {
            "metadata": {"name": "www", "namespace": ns},
            "spec": {
                "schedule": "@hourly",
                "backupSource": {"volumeName": vol, "path": "/d"},
                "destination": {"repositorySecretName": "s", "repository": "s3:h/b"},
            },
        }
    )
    for ns in ("web", "db")
    for vol in ("data", "a")
]


@given(st.lists(junk_workloads(), min_size=1, max_size=3), st.booleans())
def test_plan_never_raises_on_junk_workloads(objs, remove_when_missing):
    snapshot = copy.deepcopy(objs)
    result = plan(VALID_BACKUPS[:2], objs, RENDERER, remove_when_missing=remove_when_missing)
    assert objs == snapshot
    for problem in result.problems:
        assert str(problem)
    assert len(result.changes) + len(result.problems) <= len(objs)


BACKUP_PATHS = [
    ("metadata",),
    ("metadata", "name"),
    ("metadata", "namespace"),
    ("metadata", "generation"),
    ("spec",),
    ("spec", "schedule"),
    ("spec", "backupSource"),
    ("spec", "backupSource", "volumeName"),
    ("spec", "backupSource", "path"),
    ("spec", "destination"),
    ("spec", "destination", "volume"),
    ("spec", "destination", "volume", "persistentVolumeClaim"),
    ("spec", "destination", "path"),
    ("spec", "destination", "repository"),
    ("spec", "destination", "repositorySecretName"),
    ("spec", "tags"),
    ("spec", "excludes"),
    ("spec", "retentionPolicy"),
    ("spec", "retentionPolicy", "keepLastSnapshots"),
    ("spec", "retentionPolicy", "keepTags"),
    ("spec", "paused"),
    ("spec", "resources"),
    ("spec", "resources", "limits"),
    ("spec", "resources", "limits", "cpu"),
]


@st.composite
def junk_backups(draw):
    if draw(st.integers(0, 4)) == 0:
        return draw(JUNK)
    raw = {
        "apiVersion": "backup.appscode.com/v1beta1",
        "kind": "Backup",
        "metadata": {"name": "www", "namespace": "web"},
        "spec": {
            "schedule": "@hourly",
            "backupSource": {"volumeName": "data", "path": "/d"},
            "destination": {
                "repositorySecretName": "s",
                "volume": {"persistentVolumeClaim": {"claimName": "c"}},
                "path": "/r",
            },
        },
    }
    for path in draw(st.lists(st.sampled_from(BACKUP_PATHS), max_size=3)):
        _set(raw, path, draw(JUNK))
    return raw


@given(junk_backups())
def test_parse_backup_raises_only_invalid_backup(raw):
    try:
        b = parse_backup(raw)
    except InvalidBackup as exc:
        assert exc.errors
        assert all(e.path is not None and e.message for e in exc.errors)
        assert isinstance(exc.namespace, str) and isinstance(exc.name, str)
        return
    assert isinstance(b, Backup)
    # a Backup that parses always renders
    RENDERER.render(b, "Deployment", "app")
