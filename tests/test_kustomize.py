"""The install manifests: kustomize/ and its overlays build, validate, and grant least privilege."""

import os
import subprocess
from pathlib import Path

import kubernetes_validate
import pytest

from tests.factories.kustomize import (
    CONTROLLER_CLUSTER_RIGHTS,
    CRD_CREATE_RIGHTS,
    CRD_NAME,
    CRD_RIGHTS,
    IMAGE,
    KUSTOMIZE,
    LEADER_ELECTION_RIGHTS,
    METRICS_PORT,
    NAMESPACE,
    NAMESPACED_RIGHTS,
    RESTIK_ROLES,
    RESTORE_CRD_NAME,
    RESTORE_EXEC_RIGHTS,
    RESTORE_RIGHTS,
    SERVICE_ACCOUNT,
    TARGETS,
    WATCHED_NAMESPACE,
    _built,
    controller,
    effective_rights,
    find,
    kustomize,
    overlay,
    rights,
)

K8S_VERSIONS = ["1.30", "1.37"]
# Custom resources kubernetes-validate has no schema for; anything else must validate.
CUSTOM_KINDS = {
    ("monitoring.coreos.com/v1", kind)
    for kind in ("ServiceMonitor", "PodMonitor", "PrometheusRule")
}


@pytest.fixture(params=sorted(TARGETS))
def objects(request) -> list[dict]:
    return list(_built(request.param))


# --------------------------------------------------------------------------- schema


@pytest.mark.parametrize("version", K8S_VERSIONS)
def test_objects_validate_against_kubernetes_schemas(objects, version):
    for obj in objects:
        if (obj["apiVersion"], obj["kind"]) in CUSTOM_KINDS:
            continue
        try:
            kubernetes_validate.validate(obj, version, strict=True)
        except kubernetes_validate.ValidationError as e:
            first = str(e).splitlines()[0]
            pytest.fail(f"{obj['kind']} {obj['metadata']['name']} invalid for {version}: {first}")


def test_install_contains_everything():
    objs = _built("install")
    kinds = sorted((o["kind"], o["metadata"]["name"]) for o in objs)
    assert kinds == sorted(
        [
            ("CustomResourceDefinition", CRD_NAME),
            ("CustomResourceDefinition", RESTORE_CRD_NAME),
            ("Namespace", NAMESPACE),
            ("ServiceAccount", SERVICE_ACCOUNT),
            ("ClusterRole", "restik-controller"),
            ("ClusterRoleBinding", "restik-controller"),
            ("ClusterRole", "restik-restore"),
            ("ClusterRole", "restik-restore-exec"),
            ("Role", "restik-leader-election"),
            ("RoleBinding", "restik-leader-election"),
            ("Service", "restik-metrics"),
            ("Deployment", "restik-controller"),
            ("ValidatingAdmissionPolicy", "restik-controller-scope"),
            ("ValidatingAdmissionPolicyBinding", "restik-controller-scope"),
        ]
    )
    for obj in objs:
        assert obj["metadata"]["labels"]["app.kubernetes.io/part-of"] == "restik"
        cluster_scoped = obj["kind"] in ("Namespace", "CustomResourceDefinition")
        cluster_scoped |= obj["kind"].startswith("ValidatingAdmissionPolicy")
        cluster_scoped |= obj["kind"].startswith("Cluster")
        assert obj["metadata"].get("namespace") == (None if cluster_scoped else NAMESPACE)


# --------------------------------------------------------------------------- RBAC


def test_no_wildcards_no_secrets_no_escalation(objects):
    for role in (o for o in objects if o["kind"] in ("Role", "ClusterRole")):
        name = f"{role['kind']} {role['metadata']['name']}"
        assert "aggregationRule" not in role, name
        for rule in role["rules"]:
            assert "nonResourceURLs" not in rule, name
            for field in ("apiGroups", "resources", "verbs", "resourceNames"):
                assert "*" not in rule.get(field, []), f"{name}: wildcard in {field}"
            assert not {"secrets", "secrets/*"} & set(rule["resources"]), name
            assert not {"escalate", "impersonate"} & set(rule["verbs"]), name
            # `bind` only ever on the restore executor's role (the sidecars' Roles are written
            # by the controller, which holds their rights)
            if "bind" in rule["verbs"]:
                assert rule["resources"] == ["clusterroles"], name
                assert rule["resourceNames"] == list(RESTIK_ROLES), name


def test_no_sidecar_role_is_installed(objects):
    # the controller writes one Role per Backup (restik-sidecar-<backup>), limited by name
    # to that Backup's objects, with pods/exec only for Backups with hooks or a command
    # source: tests/test_tenancy.py, tests/test_rbac.py
    for obj in objects:
        if obj["kind"] in ("Role", "ClusterRole", "RoleBinding", "ClusterRoleBinding"):
            assert not obj["metadata"]["name"].startswith("restik-sidecar"), obj["metadata"]


def test_restore_cluster_role_is_exact(objects):
    assert rights(find(objects, "ClusterRole", "restik-restore")) == RESTORE_RIGHTS
    assert rights(find(objects, "ClusterRole", "restik-restore-exec")) == RESTORE_EXEC_RIGHTS


def test_restore_role_is_not_bound_statically(objects):
    # the controller binds it per Restore
    for binding in objects:
        if binding["kind"] in ("RoleBinding", "ClusterRoleBinding"):
            assert binding["roleRef"]["name"] not in RESTIK_ROLES


def test_controller_rights_cluster_wide():
    objs = _built("install")
    assert rights(find(objs, "ClusterRole", "restik-controller")) == CONTROLLER_CLUSTER_RIGHTS
    assert effective_rights(objs, NAMESPACE, SERVICE_ACCOUNT) == (
        {("*", *r) for r in CONTROLLER_CLUSTER_RIGHTS}
        | {(NAMESPACE, *r) for r in LEADER_ELECTION_RIGHTS}
    )


def test_controller_rights_namespaced():
    objs = _built("namespaced")
    # cluster-wide only the CRD; everything else in the watched namespace
    assert rights(find(objs, "ClusterRole", "restik-controller")) == CRD_RIGHTS
    role = find(objs, "Role", "restik-controller", WATCHED_NAMESPACE)
    assert rights(role) == NAMESPACED_RIGHTS
    assert effective_rights(objs, NAMESPACE, SERVICE_ACCOUNT) == (
        {("*", *r) for r in CRD_RIGHTS}
        | {(WATCHED_NAMESPACE, *r) for r in NAMESPACED_RIGHTS}
        | {(NAMESPACE, *r) for r in LEADER_ELECTION_RIGHTS}
    )
    assert f"--namespace={WATCHED_NAMESPACE}" in controller(objs)["args"]
    # the build-time setting is not installed
    assert not [o for o in objs if o["kind"] == "ConfigMap"]
    assert "WATCHED_NAMESPACE" not in repr(objs)


# --------------------------------------------------------------------------- controller


def test_controller_deployment(objects):
    deploy = find(objects, "Deployment", "restik-controller", NAMESPACE)
    spec = deploy["spec"]
    pod = spec["template"]["spec"]
    labels = {"app.kubernetes.io/name": "restik", "app.kubernetes.io/component": "controller"}
    assert spec["replicas"] == 1
    assert spec["selector"]["matchLabels"] == labels
    assert labels.items() <= spec["template"]["metadata"]["labels"].items()
    assert labels.items() <= deploy["metadata"]["labels"].items()
    assert pod["serviceAccountName"] == SERVICE_ACCOUNT
    assert pod["automountServiceAccountToken"] is True
    find(objects, "ServiceAccount", SERVICE_ACCOUNT, NAMESPACE)

    container = controller(objects)
    assert container["image"] == IMAGE
    assert container["args"][:3] == ["run", "--metrics-port", str(METRICS_PORT)]
    env = {e["name"]: e for e in container["env"]}
    assert env["POD_NAMESPACE"]["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.namespace"
    assert env["RESTIK_SIDECAR_IMAGE"]["value"] == container["image"]
    assert env["RESTIK_LOG_FORMAT"]["value"] == "json"
    for kind in ("requests", "limits"):
        assert set(container["resources"][kind]) == {"cpu", "memory"}


def test_controller_security_context(objects):
    pod = find(objects, "Deployment", "restik-controller")["spec"]["template"]["spec"]
    pod_sc = pod["securityContext"]
    (container,) = pod["containers"]
    sc = container["securityContext"]
    assert pod_sc["runAsNonRoot"] is True
    assert pod_sc["runAsUser"] == pod_sc["runAsGroup"] == pod_sc["fsGroup"] == 65532
    assert pod_sc["seccompProfile"] == {"type": "RuntimeDefault"}
    assert sc.get("seccompProfile", pod_sc["seccompProfile"]) == {"type": "RuntimeDefault"}
    assert sc["readOnlyRootFilesystem"] is True
    assert sc["allowPrivilegeEscalation"] is False
    assert sc["capabilities"] == {"drop": ["ALL"]}
    assert sc.get("runAsNonRoot", True) is True
    assert not sc.get("privileged", False)
    assert "hostNetwork" not in pod and "hostPID" not in pod


def test_probes_and_service_target_the_metrics_port(objects):
    container = controller(objects)
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports == {"metrics": METRICS_PORT}
    for probe in ("livenessProbe", "readinessProbe"):
        get = container[probe]["httpGet"]
        assert get["path"] == "/healthz"
        assert get["port"] in ("metrics", METRICS_PORT), probe

    service = find(objects, "Service", "restik-metrics", NAMESPACE)
    pod_labels = find(objects, "Deployment", "restik-controller")["spec"]["template"]["metadata"][
        "labels"
    ]
    assert service["spec"]["selector"].items() <= pod_labels.items()
    (port,) = service["spec"]["ports"]
    assert port["name"] == "metrics"
    assert port["targetPort"] in ("metrics", METRICS_PORT)


# --------------------------------------------------------------------------- prometheus


def test_prometheus_overlay_scrapes_metrics():
    objs = _built("prometheus")
    template = find(objs, "Deployment", "restik-controller")["spec"]["template"]
    annotations = template["metadata"]["annotations"]
    assert annotations["prometheus.io/scrape"] == "true"
    assert annotations["prometheus.io/port"] == str(METRICS_PORT)
    assert annotations["prometheus.io/path"] == "/metrics"

    monitor = find(objs, "ServiceMonitor", "restik-controller", NAMESPACE)
    service = find(objs, "Service", "restik-metrics", NAMESPACE)
    selector = monitor["spec"]["selector"]["matchLabels"]
    assert selector.items() <= service["metadata"]["labels"].items()
    service_ports = {p["name"] for p in service["spec"]["ports"]}
    for endpoint in monitor["spec"]["endpoints"]:
        assert endpoint["port"] in service_ports
        assert endpoint["path"] == "/metrics"


def test_install_has_no_prometheus_objects():
    assert not [o for o in _built("install") if o["kind"] == "ServiceMonitor"]


# --------------------------------------------------------------------------- user overlays


def test_user_overlay_moves_namespace_and_image(tmp_path):
    """What the comment in kustomize/kustomization.yaml promises a user's own overlay."""
    base = os.path.relpath(KUSTOMIZE / "base", tmp_path)
    (tmp_path / "kustomization.yaml").write_text(
        "apiVersion: kustomize.config.k8s.io/v1beta1\n"
        "kind: Kustomization\n"
        "namespace: backup-ops\n"
        f"resources: [{base}]\n"
        "images:\n"
        "  - name: restik\n"
        "    newName: registry.example.com/restik\n"
        "    newTag: 9.9.9\n"
    )
    objs = kustomize(tmp_path)
    find(objs, "Namespace", "backup-ops")
    for obj in objs:
        assert obj["metadata"].get("namespace") in (None, "backup-ops"), obj["metadata"]
    assert effective_rights(objs, "backup-ops", SERVICE_ACCOUNT) == (
        {("*", *r) for r in CONTROLLER_CLUSTER_RIGHTS}
        | {("backup-ops", *r) for r in LEADER_ELECTION_RIGHTS}
    )
    container = controller(objs, "backup-ops")
    assert container["image"] == "registry.example.com/restik:9.9.9"
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert env["RESTIK_SIDECAR_IMAGE"] == "registry.example.com/restik:9.9.9"
    assert env["RESTIK_LOG_FORMAT"] == "json"  # other values are not images


def test_one_image_tag_everywhere():
    """`make image` builds the tag the manifests install and the controller injects."""
    from reconciler.controller.render import DEFAULT_IMAGE

    make = subprocess.run(
        ["make", "-s", "--eval=print-image: ; @echo $(IMAGE)", "print-image"],
        cwd=Path(__file__).resolve().parent.parent,
        capture_output=True,
        text=True,
        check=True,
    )
    base = kustomize(Path(__file__).resolve().parent.parent / "kustomize")
    deploy = next(o for o in base if o["kind"] == "Deployment")
    container = deploy["spec"]["template"]["spec"]["containers"][0]
    assert make.stdout.strip() == DEFAULT_IMAGE == container["image"] == IMAGE


# --------------------------------------------------------------------------- components


def test_admission_policy_in_install_and_namespaced_overlay():
    for target in ("install", "namespaced"):
        objs = _built(target)
        policy = find(objs, "ValidatingAdmissionPolicy", "restik-controller-scope")
        binding = find(objs, "ValidatingAdmissionPolicyBinding", "restik-controller-scope")
        assert binding["spec"]["policyName"] == policy["metadata"]["name"]
        assert "namespace" not in policy["metadata"] and "namespace" not in binding["metadata"]
        user = f"system:serviceaccount:{NAMESPACE}:{SERVICE_ACCOUNT}"
        assert user in policy["spec"]["matchConditions"][0]["expression"]
        find(objs, "ServiceAccount", SERVICE_ACCOUNT, NAMESPACE)


def test_crd_create_is_an_opt_in_component(tmp_path):
    for objs in (_built("install"), _built("namespaced"), _built("prometheus")):
        role = find(objs, "ClusterRole", "restik-controller")
        assert not rights(role) & CRD_CREATE_RIGHTS
    objs = overlay(tmp_path, [KUSTOMIZE / "base"], ["crd-create"])
    assert rights(find(objs, "ClusterRole", "restik-controller")) == (
        CONTROLLER_CLUSTER_RIGHTS | CRD_CREATE_RIGHTS
    )
    (tmp_path / "ns").mkdir()
    objs = overlay(tmp_path / "ns", [KUSTOMIZE / "overlays" / "namespaced"], ["crd-create"])
    assert rights(find(objs, "ClusterRole", "restik-controller")) == (
        CRD_RIGHTS | CRD_CREATE_RIGHTS
    )


def _network_policies(tmp_path: Path, extra: str = "") -> list[dict]:
    objs = overlay(tmp_path, [KUSTOMIZE / "base"], ["network-policy"], extra)
    for obj in objs:
        for version in K8S_VERSIONS:
            kubernetes_validate.validate(obj, version, strict=True)
    return objs


def test_network_policy_admits_only_monitoring_to_the_controllers_metrics(tmp_path):
    objs = _network_policies(tmp_path)
    policy = find(objs, "NetworkPolicy", "restik-controller-metrics", NAMESPACE)
    pod_labels = find(objs, "Deployment", "restik-controller")["spec"]["template"]["metadata"][
        "labels"
    ]
    assert policy["spec"]["podSelector"]["matchLabels"].items() <= pod_labels.items()
    assert policy["spec"]["policyTypes"] == ["Ingress"]
    (rule,) = policy["spec"]["ingress"]
    assert rule["from"] == [
        {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}}}
    ]
    (port,) = rule["ports"]
    ports = {p["name"]: p["containerPort"] for p in controller(objs)["ports"]}
    assert port == {"protocol": "TCP", "port": "metrics"} and ports["metrics"] == METRICS_PORT


def test_network_policy_monitoring_namespace_is_configurable(tmp_path):
    """The patch the component's comment shows."""
    extra = (
        "patches:\n"
        "  - target: {kind: NetworkPolicy, name: restik-controller-metrics}\n"
        "    patch: |-\n"
        "      - op: replace\n"
        "        path: /spec/ingress/0/from/0/namespaceSelector/matchLabels\n"
        "        value: {kubernetes.io/metadata.name: prometheus}\n"
    )
    policy = find(_network_policies(tmp_path, extra), "NetworkPolicy")
    selector = policy["spec"]["ingress"][0]["from"][0]["namespaceSelector"]
    assert selector == {"matchLabels": {"kubernetes.io/metadata.name": "prometheus"}}


def test_tenant_network_policy_opens_only_the_sidecars_metrics_port(tmp_path):
    from reconciler.api.constants import METRICS_PORT_NAME

    tenant = KUSTOMIZE / "components" / "network-policy" / "tenant"
    base = os.path.relpath(tenant, tmp_path)
    (tmp_path / "kustomization.yaml").write_text(f"namespace: web\nresources: [{base}]\n")
    (policy,) = kustomize(tmp_path)
    for version in K8S_VERSIONS:
        kubernetes_validate.validate(policy, version, strict=True)
    assert policy["metadata"]["namespace"] == "web"
    assert policy["spec"]["policyTypes"] == ["Ingress"]
    (rule,) = policy["spec"]["ingress"]
    assert rule["ports"] == [{"protocol": "TCP", "port": METRICS_PORT_NAME}]
    # the port the rendered sidecar names so (and no other container of a pod does)
    from reconciler.api.backup import parse_backup
    from reconciler.controller.render import Renderer
    from tests.factories import backup

    sidecar = Renderer().render(parse_backup(backup()), "Deployment", "www").container
    assert METRICS_PORT_NAME in [p["name"] for p in sidecar["ports"] if p["protocol"] == "TCP"]
    assert rule["from"] == [
        {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}}}
    ]


def test_install_has_no_network_policy_by_default():
    for target in TARGETS:
        assert not [o for o in _built(target) if o["kind"] == "NetworkPolicy"]


def test_user_overlay_pins_the_image_by_digest(tmp_path):
    """A registry image, fully qualified and pinned by digest, as SECURITY.md shows: the
    controller and the sidecars it injects run exactly those bytes."""
    digest = "sha256:" + "ab" * 32
    base = os.path.relpath(KUSTOMIZE / "base", tmp_path)
    (tmp_path / "kustomization.yaml").write_text(
        f"resources: [{base}]\n"
        "images:\n"
        "  - name: restik\n"
        "    newName: registry.example.com/backup/restik\n"
        f"    digest: {digest}\n"
    )
    container = controller(kustomize(tmp_path))
    want = f"registry.example.com/backup/restik@{digest}"
    assert container["image"] == want
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert env["RESTIK_SIDECAR_IMAGE"] == want


def test_user_overlay_moves_the_admission_policys_user(tmp_path):
    """What components/admission-policy says to do when the controller moves namespace."""
    extra = (
        "namespace: backup-ops\n"
        "patches:\n"
        "  - target: {kind: ValidatingAdmissionPolicy, name: restik-controller-scope}\n"
        "    patch: |-\n"
        "      - op: replace\n"
        "        path: /spec/matchConditions/0/expression\n"
        "        value: >-\n"
        "          request.userInfo.username ==\n"
        "          'system:serviceaccount:backup-ops:restik'\n"
    )
    objs = overlay(tmp_path, [KUSTOMIZE / "base"], ["admission-policy"], extra)
    policy = find(objs, "ValidatingAdmissionPolicy", "restik-controller-scope")
    (condition,) = policy["spec"]["matchConditions"]
    assert condition["expression"] == (
        "request.userInfo.username == 'system:serviceaccount:backup-ops:restik'"
    )
    find(objs, "ServiceAccount", SERVICE_ACCOUNT, "backup-ops")


# --------------------------------------------------------------------------- shards


def test_sharded_overlay_runs_three_shards_as_a_statefulset():
    objs = kustomize(KUSTOMIZE / "overlays" / "sharded")
    for obj in objs:
        kubernetes_validate.validate(obj, K8S_VERSIONS[-1], strict=True)
    assert not [o for o in objs if o["kind"] == "Deployment"]
    sts = find(objs, "StatefulSet", "restik", NAMESPACE)
    spec = sts["spec"]
    (container,) = spec["template"]["spec"]["containers"]
    args = container["args"]
    shards = int(args[args.index("--shards") + 1])
    assert spec["replicas"] == shards == 3
    assert "--shard-index" not in args  # from the pod's name: restik-0, restik-1, restik-2
    assert args[args.index("--shard-lists") + 1] == "exclude"  # each reads its own share
    # which needs the LIST of namespaces, granted here only: one controller has the base's
    assert effective_rights(objs, NAMESPACE, SERVICE_ACCOUNT) == (
        {("*", *r) for r in CONTROLLER_CLUSTER_RIGHTS}
        | {("*", "", "namespaces", "list", None)}
        | {(NAMESPACE, *r) for r in rights(find(objs, "Role", "restik-leader-election"))}
    )
    assert ("", "namespaces", "list", None) not in CONTROLLER_CLUSTER_RIGHTS
    env = {e["name"]: e for e in container["env"]}
    assert env["POD_NAME"]["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.name"
    assert env["RESTIK_SIDECAR_IMAGE"]["value"] == container["image"] == IMAGE
    assert spec["template"]["spec"]["serviceAccountName"] == SERVICE_ACCOUNT
    service = find(objs, "Service", "restik-metrics", NAMESPACE)
    assert service["spec"]["selector"].items() <= spec["template"]["metadata"]["labels"].items()
    leases = rights(find(objs, "Role", "restik-leader-election", NAMESPACE))
    assert leases == {
        *{("coordination.k8s.io", "leases", v, f"restik-controller-{i}")
          for v in ("get", "update") for i in range(shards)},
        ("coordination.k8s.io", "leases", "create", None),
    }  # fmt: skip
    find(objs, "ValidatingAdmissionPolicy", "restik-controller-scope")
    limits = container["resources"]["limits"]
    base = controller(_built("install"))["resources"]["limits"]
    assert limits == base  # each shard holds at most what one controller does
