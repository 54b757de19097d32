"""The RoleBinding that lets a Backup's sidecars read it, write its status and report Events."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

from reconciler.api.backup import Backup, InvalidBackup
from reconciler.api.constants import API_VERSION, KIND, SIDECAR_CLUSTER_ROLE
from reconciler.controller.actions import (
    ROLEBINDING,
    CreateObject,
    DeleteObject,
    ReplaceObject,
)
from reconciler.kube.resource import ROLEBINDINGS

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


def reconcile_rbac(
    raw_backups: Mapping[tuple[str, str], Mapping],
    parsed: Sequence[Backup | InvalidBackup],
    service_accounts: Mapping[tuple[str, str], set[str]],
    rolebindings: Mapping[tuple[str, str], Mapping],
) -> list[CreateObject | ReplaceObject | DeleteObject]:
    """Per Backup, the writes that make its RoleBinding bind exactly its workloads' service
    accounts: create, replace, or delete it (no workloads left). ``roleRef`` is immutable,
    so a changed one is a delete then a create. An invalid Backup keeps its RoleBinding:
    running sidecars keep their rights while the Backup is fixed."""
    actions: list = []
    for item in parsed:
        if isinstance(item, InvalidBackup):
            continue
        key = (item.namespace, item.name)
        name = rolebinding_name(item.name)
        live = rolebindings.get((item.namespace, name))
        sas = service_accounts.get(key)
        collection = ROLEBINDINGS.path(item.namespace)
        path = ROLEBINDINGS.path(item.namespace, name)
        what = f"RoleBinding {item.namespace}/{name}"
        if not sas:
            if live is not None:
                actions.append(DeleteObject(path, None, what, ROLEBINDING))
            continue
        desired = desired_rolebinding(raw_backups[key], sas)
        if live is None:
            actions.append(CreateObject(collection, desired, what, ROLEBINDING))
        elif not rolebinding_in_sync(live, desired):
            if live.get("roleRef") != desired["roleRef"]:
                delete = DeleteObject(path, None, what, ROLEBINDING)
                actions += [
                    delete,
                    CreateObject(collection, desired, what, ROLEBINDING, delete.key),
                ]
            else:
                desired["metadata"]["resourceVersion"] = live["metadata"]["resourceVersion"]
                actions.append(ReplaceObject(path, desired, what, ROLEBINDING))
    return actions
