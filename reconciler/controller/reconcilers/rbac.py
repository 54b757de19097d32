"""The RoleBinding that lets a Backup's sidecars read it, write its status and report Events."""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from reconciler.api.constants import API_VERSION, KIND, SIDECAR_CLUSTER_ROLE

MANAGED_BY = "app.kubernetes.io/managed-by"
MANAGER = "restik"
ROLE_REF = {
    "apiGroup": "rbac.authorization.k8s.io",
    "kind": "ClusterRole",
    "name": SIDECAR_CLUSTER_ROLE,
}


def rolebinding_name(backup: str) -> str:
    return f"restik-sidecar-{backup}"


def service_account(workload: Mapping) -> str:
    try:
        pod_spec = workload["spec"]["template"]["spec"]
        name = pod_spec.get("serviceAccountName") or pod_spec.get("serviceAccount")
    except (KeyError, TypeError, AttributeError):
        name = None  # a broken workload: reported by the planner, bound as the default
    return name if isinstance(name, str) and name else "default"


def desired_rolebinding(backup_raw: Mapping, service_accounts: Iterable[str]) -> dict:
    meta = backup_raw["metadata"]
    namespace = meta["namespace"]
    return {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "RoleBinding",
        "metadata": {
            "name": rolebinding_name(meta["name"]),
            "namespace": namespace,
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
        },
        "roleRef": dict(ROLE_REF),
        "subjects": [
            {"kind": "ServiceAccount", "name": sa, "namespace": namespace}
            for sa in sorted(set(service_accounts))
        ],
    }


def rolebinding_in_sync(live: Mapping, desired: Mapping) -> bool:
    owners = [o.get("uid") for o in (live.get("metadata") or {}).get("ownerReferences") or []]
    return (
        live.get("roleRef") == desired["roleRef"]
        and (live.get("subjects") or []) == desired["subjects"]
        and desired["metadata"]["ownerReferences"][0]["uid"] in owners
    )
