"""The ValidatingAdmissionPolicy that fences the controller (kustomize/components/
admission-policy), evaluated by the emulator with a real CEL implementation: every patch
restik's own planner and `restik run` make passes; a forged one, as restik's ServiceAccount,
is denied with the policy's message; other users are not affected."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
from ruamel.yaml import YAML

from reconciler.api.backup import parse_backup
from reconciler.api.constants import CONFIG_LABEL, HASH_ANNOTATION, SIDECAR_NAME, WORKLOAD_KINDS
from reconciler.controller.patch import merge_patch
from reconciler.controller.plan import plan
from reconciler.controller.podtemplate import inject, remove
from reconciler.controller.render import Renderer
from reconciler.kube.client import ApiError, Kube
from reconciler.kube.resource import Resource
from reconciler.resources import crd_manifest
from tests.emulator import Emulator
from tests.factories.cluster import finish, restik
from tests.factories.kustomize import NAMESPACE, SERVICE_ACCOUNT, _built

ROOT = Path(__file__).resolve().parent.parent
RESTIK_USER = f"system:serviceaccount:{NAMESPACE}:{SERVICE_ACCOUNT}"
POLICY = "restik-controller-scope"
DENIED = f"ValidatingAdmissionPolicy '{POLICY}' with binding '{POLICY}' denied request: "
EXAMPLES = ("deployment-local", "daemonset-rest", "statefulset-s3")


def api_path(api_version, plural, namespace=None, name=None, subresource=None):
    return Resource(api_version, plural).path(namespace, name, subresource)


def policy_objects() -> list[dict]:
    """The policy and binding exactly as the default install ships them."""
    objs = [o for o in _built("install") if o["kind"].startswith("ValidatingAdmissionPolicy")]
    assert sorted(o["kind"] for o in objs) == [
        "ValidatingAdmissionPolicy",
        "ValidatingAdmissionPolicyBinding",
    ]
    return copy.deepcopy(objs)


@pytest.fixture
def fenced(tmp_path):
    """An emulator enforcing the installed policy; kubeconfigs of restik's ServiceAccount
    and of an admin; the Backup CRD."""
    with Emulator(admission_policies=True) as emu:
        for obj in policy_objects():
            emu.create(obj)
        emu.create(crd_manifest())
        emu.restik_kubeconfig = emu.write_kubeconfig(
            tmp_path / "restik.kubeconfig",
            user=RESTIK_USER,
            groups=("system:serviceaccounts", f"system:serviceaccounts:{NAMESPACE}"),
        )
        emu.admin_kubeconfig = emu.write_kubeconfig(tmp_path / "admin.kubeconfig")
        yield emu


def load_example(emu: Emulator, name: str) -> tuple[list[dict], list[dict]]:
    """Create an example's objects (as the admin); (Backups, workloads) as stored."""
    backups, workloads = [], []
    for file in ("app.yaml", "backup.yaml"):
        for obj in emu.load(ROOT / "examples" / name / file, create_namespaces=True):
            if obj["kind"] == "Backup":
                backups.append(obj)
            elif obj["kind"] in WORKLOAD_KINDS:
                workloads.append(obj)
    assert backups and workloads
    return backups, workloads


def workload_path(obj: dict) -> str:
    api, plural = WORKLOAD_KINDS[obj["kind"]]
    return api_path(api, plural, obj["metadata"]["namespace"], obj["metadata"]["name"])


def a_workload(emu: Emulator, namespace: str = "web", name: str = "www") -> dict:
    if namespace not in {n["metadata"]["name"] for n in emu.list("v1", "namespaces")}:
        emu.create({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": namespace}})
    return emu.create(a_deployment(namespace, name))


def a_deployment(namespace: str, name: str) -> dict:
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "namespace": namespace, "labels": {"app": name}},
        "spec": {
            "selector": {"matchLabels": {"app": name}},
            "template": {
                "metadata": {"labels": {"app": name}},
                "spec": {
                    "containers": [{"name": "app", "image": "nginx:1.27"}],
                    "volumes": [{"name": "data", "emptyDir": {}}],
                },
            },
        },
    }


def patch_as(kubeconfig: Path, obj: dict, patch: dict) -> dict:
    return Kube.connect(str(kubeconfig)).merge_patch(workload_path(obj), patch)


def denied(kubeconfig: Path, obj: dict, patch: dict) -> str:
    with pytest.raises(ApiError) as info:
        patch_as(kubeconfig, obj, patch)
    assert info.value.status == 403, info.value
    assert DENIED in info.value.message
    return info.value.message


# --------------------------------------------------------------------------- the manifests


def test_policy_names_the_installed_controller_account():
    policy, binding = sorted(policy_objects(), key=lambda o: o["kind"])
    (condition,) = policy["spec"]["matchConditions"]
    assert f"request.userInfo.username == '{RESTIK_USER}'" in condition["expression"]
    assert policy["spec"]["failurePolicy"] == "Fail"
    assert binding["spec"] == {"policyName": POLICY, "validationActions": ["Deny"]}


def test_a_policy_that_does_not_compile_is_refused(fenced):
    policy = policy_objects()[0]
    policy["metadata"]["name"] = "broken"
    policy["spec"]["validations"][0]["expression"] = "request.namespace !=="
    with pytest.raises(Exception) as info:
        fenced.create(policy)
    assert info.value.code == 422
    assert "spec.validations[0].expression" in str(info.value)


def test_an_unknown_token_is_unauthorized(fenced, tmp_path):
    config = fenced.write_kubeconfig(tmp_path / "forged", user="someone")
    fenced.tokens.clear()
    with pytest.raises(ApiError) as info:
        Kube.connect(str(config)).get("/api/v1/namespaces/default")
    assert info.value.status == 401


# --------------------------------------------------------------------------- restik's own patches


@pytest.mark.parametrize("example", EXAMPLES)
def test_the_planners_patches_pass(fenced, example):
    """inject, update and remove, as the planner computes them for the examples, sent as
    restik's ServiceAccount the way the controller sends them (merge patches)."""
    backups, workloads = load_example(fenced, example)
    renderer = Renderer()
    result = plan([parse_backup(b) for b in backups], workloads, renderer)
    assert result.changes and not result.problems
    for change in result.changes:
        answer = patch_as(
            fenced.restik_kubeconfig, change.before, merge_patch(change.before, change.after)
        )
        assert SIDECAR_NAME in [c["name"] for c in answer["spec"]["template"]["spec"]["containers"]]

    # a changed Backup: update
    for b in backups:
        b = fenced.get(b["apiVersion"], "Backup", b["metadata"]["name"], b["metadata"]["namespace"])
        if "command" in b["spec"]["backupSource"]:  # a dump mounts no path: other resources
            b["spec"]["resources"] = {"limits": {"memory": "1Gi"}}
        else:
            b["spec"]["backupSource"]["path"] = "/srv/moved"
        fenced.update(b)
    live = [
        fenced.get(w["apiVersion"], w["kind"], w["metadata"]["name"], w["metadata"]["namespace"])
        for w in workloads
    ]
    changed = [
        fenced.get(b["apiVersion"], "Backup", b["metadata"]["name"], b["metadata"]["namespace"])
        for b in backups
    ]
    result = plan([parse_backup(b) for b in changed], live, renderer)
    assert {c.action for c in result.changes} == {"update"}
    for change in result.changes:
        patch_as(fenced.restik_kubeconfig, change.before, merge_patch(change.before, change.after))

    # the Backup gone: remove, back to what the user wrote
    live = [
        fenced.get(w["apiVersion"], w["kind"], w["metadata"]["name"], w["metadata"]["namespace"])
        for w in workloads
    ]
    result = plan([], live, renderer)
    assert {c.action for c in result.changes} == {"remove"}
    for change, original in zip(result.changes, workloads, strict=True):
        answer = patch_as(
            fenced.restik_kubeconfig, change.before, merge_patch(change.before, change.after)
        )
        assert answer["spec"]["template"] == original["spec"]["template"]


def test_inject_and_remove_pass_and_restore_init_container_is_restiks(fenced):
    obj = a_workload(fenced)
    rendered = Renderer().render(parse_backup({
        "apiVersion": "backup.appscode.com/v1beta1", "kind": "Backup",
        "metadata": {"name": "www", "namespace": "web"},
        "spec": {"schedule": "@hourly", "backupSource": {"volumeName": "data", "path": "/d"},
                 "destination": {"repositorySecretName": "s", "repository": "s3:http://s3/b"}},
    }), "Deployment", "www")  # fmt: skip
    injected = inject(obj, rendered)
    answer = patch_as(fenced.restik_kubeconfig, obj, merge_patch(obj, injected))
    assert answer["spec"]["template"]["metadata"]["annotations"][HASH_ANNOTATION]
    # the coming Restore feature's init container, and restik's own workload annotation
    patch_as(fenced.restik_kubeconfig, obj, {
        "metadata": {"annotations": {"backup.appscode.com/restored": "snap-1"}},
        "spec": {"template": {"spec": {"initContainers": [
            {"name": "restik-restore", "image": "restik:0.1.0"}]}}},
    })  # fmt: skip
    live = fenced.get("apps/v1", "Deployment", "www", "web")
    patch_as(fenced.restik_kubeconfig, live, merge_patch(live, remove(live)))


def test_a_real_restik_run_passes_the_policy(fenced):
    """`restik run --once` as restik's ServiceAccount on the examples: every write is
    admitted and every labeled workload gets its sidecar."""
    workloads = []
    for example in EXAMPLES:
        workloads += load_example(fenced, example)[1]
    fenced.clear_requests()
    proc = restik("run", "--once", "--kubeconfig", str(fenced.restik_kubeconfig))
    _, err = finish(proc)
    assert proc.returncode == 0, err
    writes = [r for r in fenced.writes() if r.user == RESTIK_USER]
    assert writes and {r.status for r in writes} <= {200, 201}, [
        (r.method, r.path, r.status) for r in writes
    ]
    assert {r.resource for r in writes if r.verb == "patch"} >= {
        "deployments", "daemonsets", "statefulsets"
    }  # fmt: skip
    for w in workloads:
        live = fenced.get(
            w["apiVersion"], w["kind"], w["metadata"]["name"], w["metadata"]["namespace"]
        )
        assert SIDECAR_NAME in [c["name"] for c in live["spec"]["template"]["spec"]["containers"]]


def test_restik_run_cannot_touch_kube_system(fenced):
    """A Backup and a labeled workload in kube-system: the controller's patch is denied,
    the workload stays as it was, and the other namespaces are still served."""
    load_example(fenced, "deployment-local")
    system = a_workload(fenced, "kube-system", "dns")
    system["metadata"]["labels"][CONFIG_LABEL] = "www"
    fenced.update(system)
    backup = YAML(typ="safe").load((ROOT / "examples/deployment-local/backup.yaml").read_text())
    backup["metadata"]["namespace"] = "kube-system"
    backup["spec"]["backupSource"]["volumeName"] = "data"
    fenced.create(backup)
    before = fenced.get("apps/v1", "Deployment", "dns", "kube-system")
    proc = restik("run", "--once", "--kubeconfig", str(fenced.restik_kubeconfig))
    _, err = finish(proc)
    refused = [r for r in fenced.writes() if r.namespace == "kube-system" and r.status == 403]
    assert refused and all(r.user == RESTIK_USER for r in refused)
    assert "may not change anything in kube-system" in err
    assert fenced.get("apps/v1", "Deployment", "dns", "kube-system")["spec"] == before["spec"]
    web = fenced.get("apps/v1", "Deployment", "www", "web")
    assert SIDECAR_NAME in [c["name"] for c in web["spec"]["template"]["spec"]["containers"]]


# --------------------------------------------------------------------------- forged patches


def test_changing_a_user_containers_image_is_denied(fenced):
    obj = a_workload(fenced)
    patch = {"spec": {"template": {"spec": {"containers": [{"name": "app", "image": "evil:1"}]}}}}
    message = denied(fenced.restik_kubeconfig, obj, patch)
    assert message.startswith('deployments.apps "www" is forbidden: ')
    assert "restik's controller may change only what restik owns in deployments web/www" in message
    assert message.endswith("it changed: containers")
    assert fenced.get("apps/v1", "Deployment", "www", "web")["spec"] == obj["spec"]
    # the same patch by anyone else: the policy is not theirs
    patch_as(fenced.admin_kubeconfig, obj, patch)


def test_a_host_path_volume_named_data_is_denied(fenced):
    obj = a_workload(fenced)
    volumes = [{"name": "data", "hostPath": {"path": "/"}}]
    message = denied(
        fenced.restik_kubeconfig, obj, {"spec": {"template": {"spec": {"volumes": volumes}}}}
    )
    assert message.endswith("it changed: volumes")


def test_a_restik_volume_may_not_smuggle_a_user_change(fenced):
    obj = a_workload(fenced)
    pod = copy.deepcopy(obj["spec"]["template"]["spec"])
    pod["volumes"].append({"name": "restik-repo", "persistentVolumeClaim": {"claimName": "x"}})
    pod["containers"][0]["volumeMounts"] = [{"name": "restik-repo", "mountPath": "/host"}]
    message = denied(fenced.restik_kubeconfig, obj, {"spec": {"template": {"spec": pod}}})
    assert message.endswith("it changed: containers")


@pytest.mark.parametrize(
    ("patch", "changed"),
    [
        ({"spec": {"replicas": 0}}, "spec"),
        ({"spec": {"template": {"spec": {"serviceAccountName": "admin"}}}}, "spec.template.spec"),
        ({"spec": {"template": {"spec": {"hostNetwork": True}}}}, "spec.template.spec"),
        ({"spec": {"template": {"metadata": {"labels": {"app": "www", "x": "y"}}}}},
         "spec.template.metadata"),
        ({"spec": {"template": {"metadata": {"annotations": {"other/a": "b"}}}}},
         "spec.template.metadata"),
        ({"spec": {"template": {"spec": {"initContainers": [{"name": "x", "image": "evil"}]}}}},
         "initContainers"),
        ({"metadata": {"labels": {CONFIG_LABEL: "other"}}}, "metadata"),
        ({"metadata": {"annotations": {"owner": "me"}}}, "metadata"),
    ],
)  # fmt: skip
def test_anything_restik_does_not_own_is_denied(fenced, patch, changed):
    obj = a_workload(fenced)
    assert denied(fenced.restik_kubeconfig, obj, patch).endswith(f"it changed: {changed}")


def test_kube_system_is_out_of_reach(fenced):
    obj = a_workload(fenced, "kube-system", "dns")
    patch = {"spec": {"template": {"metadata": {"annotations": {HASH_ANNOTATION: "x"}}}}}
    message = denied(fenced.restik_kubeconfig, obj, patch)
    assert message.endswith("restik's controller may not change anything in kube-system")
    fenced.create({"apiVersion": "v1", "kind": "Pod",
                   "metadata": {"name": "dns-1", "namespace": "kube-system"},
                   "spec": {"containers": [{"name": "dns", "image": "coredns"}]}})  # fmt: skip
    kube = Kube.connect(str(fenced.restik_kubeconfig))
    for method, path, body in (
        ("DELETE", api_path("v1", "pods", "kube-system", "dns-1"), None),
        ("POST", api_path("v1", "pods", "kube-system", "dns-1", "eviction"),
         {"apiVersion": "policy/v1", "kind": "Eviction", "metadata": {"name": "dns-1"}}),
    ):  # fmt: skip
        with pytest.raises(ApiError) as info:
            kube.request(method, path, body=body)
        assert info.value.status == 403, method
        assert info.value.message.startswith('pods "dns-1" is forbidden: ')
        assert fenced.get("v1", "Pod", "dns-1", "kube-system") is not None
    # an eviction elsewhere is restik's daily work: admitted
    fenced.create({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "web"}})
    pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "www-1", "namespace": "web"}}
    fenced.create({**pod, "spec": {"containers": [{"name": "a", "image": "b"}]}})
    kube.request("POST", api_path("v1", "pods", "web", "www-1", "eviction"),
                 body={"apiVersion": "policy/v1", "kind": "Eviction"})  # fmt: skip
    assert fenced.get("v1", "Pod", "www-1", "web") is None


def test_workloads_cannot_be_created_or_deleted(fenced):
    obj = a_workload(fenced)
    kube = Kube.connect(str(fenced.restik_kubeconfig))
    with pytest.raises(ApiError) as info:
        kube.request("DELETE", workload_path(obj))
    assert info.value.status == 403
    assert info.value.message.endswith("restik's controller may not create or delete workloads")
    assert fenced.get("apps/v1", "Deployment", "www", "web") is not None


def test_the_standalone_emulator_fences_restik(tmp_path):
    """`python -m tests.emulator --admission-policies --user ...`, as README shows: the
    installed policy refuses a forged patch of restik's user over real HTTP."""
    import subprocess
    import sys
    import time

    policy_file = tmp_path / "policy.yaml"
    YAML(typ="safe").dump_all(policy_objects(), policy_file.open("w"))
    config = tmp_path / "kubeconfig"
    proc = subprocess.Popen(
        [sys.executable, "-m", "tests.emulator", "--kubeconfig", str(config),
         "--admission-policies", "--user", RESTIK_USER, "--load", str(policy_file)],
        cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 20
        while not config.exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        kube = Kube.connect(str(config))
        with pytest.raises(ApiError) as info:
            deployment = a_deployment("default", "x")
            kube.create(api_path("apps/v1", "deployments", "default"), deployment)
        assert info.value.status == 403
        assert "may not create or delete workloads" in info.value.message
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def rolebinding(name: str, role: str, subject_ns: str = "web", kind: str = "ClusterRole") -> dict:
    return {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "RoleBinding",
        "metadata": {"name": name, "namespace": "web"},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": kind, "name": role},
        "subjects": [{"kind": "ServiceAccount", "name": "app", "namespace": subject_ns}],
    }


@pytest.mark.parametrize(
    "body",
    [
        rolebinding("restik-sidecar-www", "cluster-admin"),
        rolebinding("admin-for-me", "restik-sidecar"),
        rolebinding("restik-sidecar-www", "restik-sidecar", subject_ns="kube-system"),
    ],
)
def test_rolebindings_beyond_the_sidecars_are_denied(fenced, body):
    fenced.create({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "web"}})
    kube = Kube.connect(str(fenced.restik_kubeconfig))
    with pytest.raises(ApiError) as info:
        kube.create(api_path("rbac.authorization.k8s.io/v1", "rolebindings", "web"), body)
    assert info.value.status == 403
    assert info.value.message.endswith(
        "restik's controller may only write RoleBindings named restik-* that grant a "
        "restik-* role to ServiceAccounts of their own namespace"
    )
    # the sidecar's own binding is fine, and a dump Restore's exec binding
    for name, role in (
        ("restik-sidecar-www", "restik-sidecar"),
        ("restik-restore-exec:r1", "restik-restore-exec"),
    ):
        kube.create(
            api_path("rbac.authorization.k8s.io/v1", "rolebindings", "web"),
            rolebinding(name, role),
        )


def _with_sidecar(fenced) -> dict:
    obj = a_workload(fenced)
    rendered = Renderer().render(parse_backup({
        "apiVersion": "backup.appscode.com/v1beta1", "kind": "Backup",
        "metadata": {"name": "www", "namespace": "web"},
        "spec": {"schedule": "@hourly", "backupSource": {"volumeName": "data", "path": "/d"},
                 "destination": {"repositorySecretName": "s", "volume": {"name": "repo",
                                 "persistentVolumeClaim": {"claimName": "backups"}},
                                 "path": "/repo"}},
    }), "Deployment", "www")  # fmt: skip
    patch_as(fenced.restik_kubeconfig, obj, merge_patch(obj, inject(obj, rendered)))
    return fenced.get("apps/v1", "Deployment", "www", "web")


@pytest.mark.parametrize(
    "source", [{"hostPath": {"path": "/"}}, {"nfs": {"server": "nfs", "path": "/"}},
               {"csi": {"driver": "x"}}, {"secret": {"secretName": "other"}},
               {"projected": {"sources": [{"secret": {"name": "other"}}]}},
               {"projected": {"sources": [{"configMap": {"name": "other"}}]}}]
)  # fmt: skip
def test_restiks_own_volume_may_not_be_a_node_or_network_filesystem(fenced, source):
    """What item 3 of issue 13 reports (destination.volume of any kind) cannot reach a pod
    through the controller: the policy refuses a restik-* volume that is not a claim."""
    live = _with_sidecar(fenced)
    after = copy.deepcopy(live)
    for volume in after["spec"]["template"]["spec"]["volumes"]:
        if volume["name"] == "restik-repo":
            volume.clear()
            volume.update({"name": "restik-repo", **source})
    message = denied(fenced.restik_kubeconfig, live, merge_patch(live, after))
    assert message.endswith(
        "restik's controller may add only emptyDir, persistentVolumeClaim and projected "
        "(service-account token, kube-root-ca.crt, downward API) volumes (restik-*)"
    )


@pytest.mark.parametrize(
    "change",
    [
        lambda c: c["securityContext"].update(privileged=True),
        lambda c: c["securityContext"]["capabilities"].update(add=["SYS_ADMIN"]),
        lambda c: c["volumeMounts"][0].pop("readOnly"),
    ],
)
def test_the_sidecar_may_not_gain_privileges_or_write_the_source(fenced, change):
    live = _with_sidecar(fenced)
    after = copy.deepcopy(live)
    (sidecar,) = [
        c for c in after["spec"]["template"]["spec"]["containers"] if c["name"] == SIDECAR_NAME
    ]
    change(sidecar)
    message = denied(fenced.restik_kubeconfig, live, merge_patch(live, after))
    assert "restik's containers may not be privileged or add capabilities" in message


def test_emulated_daemonsets_carry_the_servers_template_generation(fenced):
    """As apps/v1 shows it (the policy must let it change under restik's patch): 1 on
    create, +1 when the template changes, unchanged otherwise."""
    backups, (ds,) = load_example(fenced, "daemonset-rest")
    key = "deprecated.daemonset.template.generation"
    assert ds["metadata"]["annotations"][key] == "1"
    live = fenced.patch(
        "apps/v1",
        "DaemonSet",
        ds["metadata"]["name"],
        {"metadata": {"labels": {"x": "y"}}},
        ds["metadata"]["namespace"],
    )
    assert live["metadata"]["annotations"][key] == "1"
    result = plan([parse_backup(b) for b in backups], [live], Renderer())
    (change,) = result.changes
    answer = patch_as(fenced.restik_kubeconfig, live, merge_patch(change.before, change.after))
    assert answer["metadata"]["annotations"][key] == "2"


# --------------------------------------------------------------------------- sidecar Roles


def _sidecar_role(spec=None, **changes) -> dict:
    from reconciler.controller.reconcilers.rbac import desired_role

    raw = {"metadata": {"name": "www", "namespace": "web", "uid": "u"}, "spec": spec or {}}
    role = desired_role(raw, ["Deployment/www"])
    del role["metadata"]["ownerReferences"]  # no such Backup in these tests
    role["metadata"].update(changes.pop("metadata", {}))
    role.update(changes)
    return role


@pytest.mark.parametrize(
    "body",
    [
        _sidecar_role(metadata={"name": "admin"}),
        _sidecar_role(rules=[{"apiGroups": [""], "resources": ["secrets"], "verbs": ["get"]}]),
        _sidecar_role(
            rules=[
                {"apiGroups": ["backup.appscode.com"], "resources": ["backups"], "verbs": ["get"]}
            ]
        ),
        _sidecar_role(
            rules=[
                {"apiGroups": ["coordination.k8s.io"], "resources": ["leases"], "verbs": ["update"]}
            ]
        ),
        _sidecar_role(
            rules=[
                {
                    "apiGroups": ["coordination.k8s.io"],
                    "resources": ["leases"],
                    "verbs": ["update"],
                    "resourceNames": ["app-leader"],
                }
            ]
        ),
        _sidecar_role(
            rules=[{"apiGroups": ["apps"], "resources": ["deployments"], "verbs": ["patch"]}]
        ),
        _sidecar_role(
            rules=[{"apiGroups": [""], "resources": ["pods/attach"], "verbs": ["create"]}]
        ),
        _sidecar_role(
            rules=[{"apiGroups": [""], "resources": ["pods/exec"], "verbs": ["get", "delete"]}]
        ),
    ],
    ids=["name", "secrets", "any-backup", "any-lease", "app-lease", "workloads", "attach", "exec"],
)
def test_sidecar_roles_beyond_the_backups_own_objects_are_denied(fenced, body):
    """Issue 13 item 2: the controller holds Lease, Backup and pod rights to grant them by
    name; the policy keeps what it writes into a Role to exactly that."""
    fenced.create({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "web"}})
    kube = Kube.connect(str(fenced.restik_kubeconfig))
    roles = api_path("rbac.authorization.k8s.io/v1", "roles", "web")
    with pytest.raises(ApiError) as info:
        kube.create(roles, body)
    assert info.value.status == 403 and DENIED in info.value.message
    assert kube.create(roles, _sidecar_role())["metadata"]["name"] == "restik-sidecar-www"


def test_the_controller_writes_no_lease_but_its_own(fenced):
    fenced.create({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "web"}})
    kube = Kube.connect(str(fenced.restik_kubeconfig))
    lease = {"apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
             "metadata": {"name": "restik-www-www", "namespace": "web"},
             "spec": {"holderIdentity": "evil", "leaseDurationSeconds": 999999}}  # fmt: skip
    leases = api_path("coordination.k8s.io/v1", "leases", "web")
    with pytest.raises(ApiError) as info:
        kube.create(leases, lease)
    assert info.value.status == 403
    assert "may write only its leader-election Lease restik-controller" in info.value.message
    lease["metadata"]["name"] = "restik-controller"
    kube.create(leases, lease)


def test_the_exec_rules_of_a_backup_with_hooks_are_admitted(fenced):
    """A Backup with hooks gets pods/exec (get, create) in its sidecars' Role: allowed."""
    fenced.create({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "web"}})
    kube = Kube.connect(str(fenced.restik_kubeconfig))
    roles = api_path("rbac.authorization.k8s.io/v1", "roles", "web")
    role = _sidecar_role({"hooks": {"preBackup": {"command": ["sync"]}}})
    assert {"apiGroups": [""], "resources": ["pods/exec"], "verbs": ["get", "create"]} in (
        role["rules"]
    )
    assert kube.create(roles, role)["metadata"]["name"] == "restik-sidecar-www"


# the examples whose Backup restores files (statefulset-s3 backs up a dump: no Restore)
FILE_EXAMPLES = ("deployment-local", "daemonset-rest")


@pytest.mark.parametrize("example", FILE_EXAMPLES)
def test_the_restore_init_container_passes_the_fence(fenced, example):
    """The controller, as its ServiceAccount, adds a Restore's init container (next to the
    sidecar) and takes it out again: both patches are admitted."""
    from reconciler.api.constants import RESTORE_CONTAINER
    from reconciler.controller.cycle import Controller
    from reconciler.controller.options import Settings
    from reconciler.resources import restore_crd_manifest

    fenced.create(restore_crd_manifest())
    backups, workloads = load_example(fenced, example)
    w, b = workloads[0], backups[0]
    ns = w["metadata"]["namespace"]
    restore = {
        "apiVersion": "backup.appscode.com/v1beta1",
        "kind": "Restore",
        "metadata": {"name": "back", "namespace": ns},
        "spec": {
            "backup": b["metadata"]["name"],
            "target": {"workload": {"kind": w["kind"], "name": w["metadata"]["name"]}},
        },
    }
    fenced.create(restore)
    c = Controller(Kube.connect(str(fenced.restik_kubeconfig)), Settings())
    api, plural = WORKLOAD_KINDS[w["kind"]]

    def inits() -> list[str]:
        obj = fenced.get(api, plural, w["metadata"]["name"], ns)
        return [i["name"] for i in obj["spec"]["template"]["spec"].get("initContainers") or []]

    for _ in range(3):  # the sidecar and the init container (a 409 between them is fine)
        stats = c.cycle()
        assert stats.errors == 0
    assert RESTORE_CONTAINER in inits()
    done = fenced.get("backup.appscode.com/v1beta1", "restores", "back", ns)
    done["status"] = {"phase": "Succeeded"}
    fenced.update(done, "status")
    assert c.cycle().errors == 0
    assert RESTORE_CONTAINER not in inits()
