"""The Role and RoleBinding that let a Backup's sidecars read it, write its status, hold their
Leases and report Events: limited by name to that Backup's own objects (issue 13 item 2)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING

from reconciler.api.backup import Backup, InvalidBackup
from reconciler.api.constants import API_VERSION, GROUP, KIND, PLURAL
from reconciler.api.hooks import wants_exec
from reconciler.controller.actions import (
    ROLEBINDING,
    CreateEvent,
    CreateObject,
    DeleteObject,
    ReplaceObject,
)
from reconciler.kube.events import warning_event
from reconciler.kube.lease import lease_name
from reconciler.kube.resource import ROLEBINDINGS, ROLES

if TYPE_CHECKING:
    from reconciler.controller.plan import Plan

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


# Only for a Backup with hooks or a command source (api.hooks.wants_exec): run those
# commands in a container of the sidecar's own pod. Exec in a pod is as strong as a shell in
# its containers, so Backups that back up a volume never get it. Over WebSocket the API
# server checks `get` on pods/exec (and `create` too since Kubernetes 1.31). RBAC cannot
# limit it by name (pod names are not known in advance): the namespace's pods.
EXEC_RULES = ({"apiGroups": [""], "resources": ["pods/exec"], "verbs": ["get", "create"]},)


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
            *(EXEC_RULES if wants_exec(backup_raw) else []),
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


def reconcile_rbac(
    raw_backups: Mapping[tuple[str, str], Mapping],
    parsed: Sequence[Backup | InvalidBackup],
    plan: Plan,
    rolebindings: Mapping[tuple[str, str], Mapping],
    roles: Mapping[tuple[str, str], Mapping],
    now: str,
    component: str,
) -> list[CreateObject | ReplaceObject | DeleteObject | CreateEvent]:
    """Per Backup, the writes that make its Role grant its sidecars their rights on its own
    objects and its RoleBinding bind exactly its workloads' service accounts to that Role:
    create or replace the Role, then the RoleBinding (which needs the Role's write), or
    delete both (no workloads left). ``roleRef`` is immutable, so a changed one is a delete
    then a create. An invalid Backup keeps both: running sidecars keep their rights while
    the Backup is fixed. When ``default`` joins the subjects, one Warning Event."""
    actions: list = []
    for item in parsed:
        if isinstance(item, InvalidBackup):
            continue
        key = (item.namespace, item.name)
        raw = raw_backups[key]
        name = rolebinding_name(item.name)
        live = rolebindings.get((item.namespace, name))
        live_role = roles.get((item.namespace, role_name(item.name)))
        sas = plan.service_accounts.get(key)
        what = f"RoleBinding {item.namespace}/{name}"
        role_what = f"Role {item.namespace}/{role_name(item.name)}"
        if not sas:
            if live is not None:
                path = ROLEBINDINGS.path(item.namespace, name)
                actions.append(DeleteObject(path, None, what, ROLEBINDING))
            if live_role is not None:
                path = ROLES.path(item.namespace, role_name(item.name))
                actions.append(DeleteObject(path, None, role_what, ROLEBINDING))
            continue
        role = _role_action(desired_role(raw, plan.selected.get(key, [])), live_role, role_what)
        if role is not None:
            actions.append(role)
        binding = _rolebinding_actions(
            desired_rolebinding(raw, sas), live, what, role.key if role else None
        )
        actions += binding
        message = default_account_warning(sas)
        before = {s.get("name") for s in (live or {}).get("subjects") or []}
        if binding and message is not None and "default" not in before:
            event = warning_event(raw, "DefaultServiceAccount", message, now, component)
            about = f"Backup {item.namespace}/{item.name}"
            actions.append(CreateEvent(event, about, "DefaultServiceAccount", binding[-1].key))
    return actions


def _role_action(desired: dict, live: Mapping | None, what: str):
    namespace, name = desired["metadata"]["namespace"], desired["metadata"]["name"]
    if live is None:
        return CreateObject(ROLES.path(namespace), desired, what, ROLEBINDING)
    if role_in_sync(live, desired):
        return None
    desired["metadata"]["resourceVersion"] = live["metadata"]["resourceVersion"]
    return ReplaceObject(ROLES.path(namespace, name), desired, what, ROLEBINDING)


def _rolebinding_actions(desired: dict, live: Mapping | None, what: str, needs: tuple | None):
    namespace, name = desired["metadata"]["namespace"], desired["metadata"]["name"]
    collection = ROLEBINDINGS.path(namespace)
    path = ROLEBINDINGS.path(namespace, name)
    if live is None:
        return [CreateObject(collection, desired, what, ROLEBINDING, needs)]
    if rolebinding_in_sync(live, desired):
        return []
    if live.get("roleRef") != desired["roleRef"]:
        delete = DeleteObject(path, None, what, ROLEBINDING, needs)
        return [delete, CreateObject(collection, desired, what, ROLEBINDING, delete.key)]
    desired["metadata"]["resourceVersion"] = live["metadata"]["resourceVersion"]
    return [ReplaceObject(path, desired, what, ROLEBINDING, needs)]
