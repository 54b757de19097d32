"""The Role and RoleBinding that let a Backup's sidecars read it, write its status, hold their
Leases and report Events: limited by name to that Backup's own objects (issue 13 item 2)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from reconciler.api.constants import API_VERSION, GROUP, KIND, PLURAL
from reconciler.kube.lease import lease_name

MANAGED_BY = "app.kubernetes.io/managed-by"
MANAGER = "restik"
RBAC_GROUP = "rbac.authorization.k8s.io"


def rolebinding_name(backup: str) -> str:
    return f"restik-sidecar-{backup}"


def role_name(backup: str) -> str:
    return rolebinding_name(backup)


def service_account(workload: Mapping) -> str:
    try:
        pod_spec = workload["spec"]["template"]["spec"]
        name = pod_spec.get("serviceAccountName") or pod_spec.get("serviceAccount")
    except (KeyError, TypeError, AttributeError):
        name = None  # a broken workload: reported by the planner, bound as the default
    return name if isinstance(name, str) and name else "default"


def lease_names(backup: str, workloads: Iterable[str]) -> list[str]:
    """The Leases the sidecars of ``workloads`` ("Kind/name") take: one per workload for the
    backup (several replicas, one host) and one for forget/prune (one host per pod)."""
    names = set()
    for ref in workloads:
        workload = str(ref).partition("/")[2]
        names.add(lease_name(backup, workload))
        names.add(lease_name(backup, workload + "-prune"))
    return sorted(names)


def _meta(backup_raw: Mapping, name: str) -> dict:
    meta = backup_raw["metadata"]
    return {
        "name": name,
        "namespace": meta["namespace"],
        "labels": {MANAGED_BY: MANAGER},
        "ownerReferences": [
            {
                "apiVersion": API_VERSION,
                "kind": KIND,
                "name": meta["name"],
                "uid": meta.get("uid"),
                "controller": True,
                "blockOwnerDeletion": False,
            }
        ],
    }


def desired_role(backup_raw: Mapping, workloads: Iterable[str]) -> dict:
    """What a sidecar does, and only on its own Backup's objects. RBAC cannot limit by name:
    ``create`` (Leases, Events: the name is not known before), and the sidecar's own pod
    (``get``, named by the pod). List and watch of the Backup are by name: the sidecar asks
    with fieldSelector metadata.name, which RBAC matches against resourceNames."""
    backup = backup_raw["metadata"]["name"]
    return {
        "apiVersion": f"{RBAC_GROUP}/v1",
        "kind": "Role",
        "metadata": _meta(backup_raw, role_name(backup)),
        "rules": [
            {
                "apiGroups": [GROUP],
                "resources": [PLURAL],
                "resourceNames": [backup],
                "verbs": ["get", "list", "watch"],
            },
            {
                "apiGroups": [GROUP],
                "resources": [f"{PLURAL}/status"],
                "resourceNames": [backup],
                "verbs": ["patch"],
            },
            {"apiGroups": [""], "resources": ["events"], "verbs": ["create"]},
            {
                "apiGroups": ["coordination.k8s.io"],
                "resources": ["leases"],
                "resourceNames": lease_names(backup, workloads),
                "verbs": ["get", "update"],
            },
            {"apiGroups": ["coordination.k8s.io"], "resources": ["leases"], "verbs": ["create"]},
            {"apiGroups": [""], "resources": ["pods"], "verbs": ["get"]},
        ],
    }


def desired_rolebinding(backup_raw: Mapping, service_accounts: Iterable[str]) -> dict:
    meta = backup_raw["metadata"]
    namespace = meta["namespace"]
    return {
        "apiVersion": f"{RBAC_GROUP}/v1",
        "kind": "RoleBinding",
        "metadata": _meta(backup_raw, rolebinding_name(meta["name"])),
        "roleRef": {"apiGroup": RBAC_GROUP, "kind": "Role", "name": role_name(meta["name"])},
        "subjects": [
            {"kind": "ServiceAccount", "name": sa, "namespace": namespace}
            for sa in sorted(set(service_accounts))
        ],
    }


def _owned(live: Mapping, desired: Mapping) -> bool:
    owners = [o.get("uid") for o in (live.get("metadata") or {}).get("ownerReferences") or []]
    return desired["metadata"]["ownerReferences"][0]["uid"] in owners


def rolebinding_in_sync(live: Mapping, desired: Mapping) -> bool:
    return (
        live.get("roleRef") == desired["roleRef"]
        and (live.get("subjects") or []) == desired["subjects"]
        and _owned(live, desired)
    )


def role_in_sync(live: Mapping, desired: Mapping) -> bool:
    return (live.get("rules") or []) == desired["rules"] and _owned(live, desired)


def default_account_warning(service_accounts: Iterable[str]) -> str | None:
    """Binding ``default`` gives the sidecar's rights to every pod of the namespace that
    names no ServiceAccount: worth a Warning on the Backup."""
    if "default" not in set(service_accounts):
        return None
    return (
        "the sidecar's rights (this Backup, its status and Leases, Events) are bound to "
        "ServiceAccount default, which every pod of the namespace without its own "
        "serviceAccountName uses; give the backed-up workloads their own ServiceAccount"
    )
