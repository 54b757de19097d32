"""The resource types the emulator serves (built-in and CRD-defined) and discovery documents."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from . import kinds
from .kinds import Kind

# Subresources upgraded to a stream (pods/exec): served on GET (WebSocket) as well as POST.
STREAMED = frozenset({"exec"})
ALL_VERBS = ["create", "delete", "deletecollection", "get", "list", "patch", "update", "watch"]

# Fields a fieldSelector may use, beyond metadata.name and metadata.namespace.
EVENT_FIELDS = (
    "involvedObject.kind",
    "involvedObject.namespace",
    "involvedObject.name",
    "involvedObject.uid",
    "involvedObject.apiVersion",
    "involvedObject.resourceVersion",
    "involvedObject.fieldPath",
    "reason",
    "reportingComponent",
    "source",
    "type",
)
POD_FIELDS = (
    "spec.nodeName",
    "spec.restartPolicy",
    "spec.schedulerName",
    "spec.serviceAccountName",
    "spec.hostNetwork",
    "status.phase",
    "status.podIP",
    "status.nominatedNodeName",
)


@dataclass(frozen=True)
class ResourceType:
    group: str
    version: str
    plural: str
    kind: str
    namespaced: bool
    singular: str = ""
    short_names: tuple[str, ...] = ()
    categories: tuple[str, ...] = ()
    status: bool = False  # has a /status subresource
    scale: bool = False
    generation: bool = False  # the server maintains metadata.generation
    unconditional_update: bool = True  # PUT without metadata.resourceVersion allowed
    builtin: bool = True  # strategic merge patch supported
    return_deleted: bool = False  # DELETE answers the object, not a Status
    fields: tuple[str, ...] = ()
    # subresources served by a handler: POST-only (pods/eviction) or a stream (pods/exec)
    actions: tuple[tuple[str, str, str], ...] = ()  # (subresource, group, kind)
    schema: dict[str, Any] | None = field(default=None, compare=False, hash=False)
    printer_columns: tuple[dict[str, Any], ...] = field(default=(), compare=False, hash=False)
    # what the server does for this resource beyond storing it (kinds.py)
    hooks: Kind = field(default=kinds.DEFAULT, compare=False, hash=False, repr=False)

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version

    @property
    def key(self) -> tuple[str, str]:
        """Objects are stored per group and resource, whatever the version."""
        return (self.group, self.plural)

    @property
    def list_kind(self) -> str:
        return self.kind + "List"

    @property
    def qualified(self) -> str:
        return f"{self.plural}.{self.group}" if self.group else self.plural


def _rt(group, version, plural, kind, namespaced=True, **kw) -> ResourceType:
    kw.setdefault("singular", kind.lower())
    kw.setdefault("hooks", kinds.for_builtin(group, plural))
    return ResourceType(group, version, plural, kind, namespaced, **kw)


BUILTINS: list[ResourceType] = [
    _rt("", "v1", "namespaces", "Namespace", False, short_names=("ns",), status=True,
        return_deleted=True, fields=("status.phase",)),
    _rt("", "v1", "pods", "Pod", short_names=("po",), categories=("all",), status=True,
        generation=True, return_deleted=True, fields=POD_FIELDS,
        actions=(("eviction", "policy", "Eviction"), ("exec", "", "PodExecOptions"))),
    _rt("", "v1", "nodes", "Node", False, short_names=("no",), status=True),
    _rt("", "v1", "resourcequotas", "ResourceQuota", short_names=("quota",), status=True),
    _rt("", "v1", "secrets", "Secret", fields=("type",)),
    _rt("", "v1", "events", "Event", short_names=("ev",), fields=EVENT_FIELDS),
    _rt("", "v1", "serviceaccounts", "ServiceAccount", short_names=("sa",)),
    _rt("", "v1", "configmaps", "ConfigMap", short_names=("cm",)),
    _rt("", "v1", "services", "Service", short_names=("svc",), categories=("all",), status=True),
    _rt("", "v1", "persistentvolumeclaims", "PersistentVolumeClaim", short_names=("pvc",),
        status=True),
    _rt("", "v1", "persistentvolumes", "PersistentVolume", False, short_names=("pv",),
        status=True),
    _rt("", "v1", "replicationcontrollers", "ReplicationController", short_names=("rc",),
        categories=("all",), status=True, scale=True, generation=True,
        fields=("status.replicas",)),
    _rt("apps", "v1", "deployments", "Deployment", short_names=("deploy",),
        categories=("all",), status=True, scale=True, generation=True),
    _rt("apps", "v1", "statefulsets", "StatefulSet", short_names=("sts",),
        categories=("all",), status=True, scale=True, generation=True),
    _rt("apps", "v1", "daemonsets", "DaemonSet", short_names=("ds",),
        categories=("all",), status=True, generation=True),
    _rt("apps", "v1", "replicasets", "ReplicaSet", short_names=("rs",),
        categories=("all",), status=True, scale=True, generation=True,
        fields=("status.replicas",)),
    _rt("coordination.k8s.io", "v1", "leases", "Lease"),
    # stored only: no Job controller runs them (a test runs a Job's command itself)
    _rt("batch", "v1", "jobs", "Job", categories=("all",), status=True, generation=True),
    _rt("policy", "v1", "poddisruptionbudgets", "PodDisruptionBudget", short_names=("pdb",),
        status=True, generation=True),
    _rt("rbac.authorization.k8s.io", "v1", "roles", "Role"),
    _rt("rbac.authorization.k8s.io", "v1", "rolebindings", "RoleBinding"),
    _rt("rbac.authorization.k8s.io", "v1", "clusterroles", "ClusterRole", False),
    _rt("rbac.authorization.k8s.io", "v1", "clusterrolebindings", "ClusterRoleBinding", False),
    _rt("apiextensions.k8s.io", "v1", "customresourcedefinitions", "CustomResourceDefinition",
        False, short_names=("crd", "crds"), status=True, generation=True,
        unconditional_update=False, return_deleted=True),
    _rt("admissionregistration.k8s.io", "v1", "validatingadmissionpolicies",
        "ValidatingAdmissionPolicy", False, categories=("api-extensions",), status=True,
        generation=True),
    _rt("admissionregistration.k8s.io", "v1", "validatingadmissionpolicybindings",
        "ValidatingAdmissionPolicyBinding", False, categories=("api-extensions",),
        generation=True),
]  # fmt: skip


def crd_resource_types(crd: dict[str, Any]) -> list[ResourceType]:
    """The resource types a CustomResourceDefinition serves (one per served version)."""
    spec = crd.get("spec") or {}
    names = spec.get("names") or {}
    out = []
    for v in spec.get("versions") or []:
        if not v.get("served", True):
            continue
        sub = v.get("subresources") or {}
        schema = (v.get("schema") or {}).get("openAPIV3Schema")
        out.append(
            ResourceType(
                group=spec.get("group", ""),
                version=v.get("name", ""),
                plural=names.get("plural", ""),
                kind=names.get("kind", ""),
                namespaced=spec.get("scope", "Namespaced") == "Namespaced",
                singular=names.get("singular") or names.get("kind", "").lower(),
                short_names=tuple(names.get("shortNames") or ()),
                categories=tuple(names.get("categories") or ()),
                status="status" in sub,
                scale="scale" in sub,
                generation=True,
                unconditional_update=False,
                builtin=False,
                return_deleted=True,
                schema=schema,
                printer_columns=tuple(v.get("additionalPrinterColumns") or ()),
                hooks=kinds.CUSTOM,
            )
        )
    return out


def resource_list(group_version: str, rts: list[ResourceType]) -> dict[str, Any]:
    resources = []
    for rt in sorted(rts, key=lambda r: r.plural):
        entry: dict[str, Any] = {
            "name": rt.plural,
            "singularName": rt.singular,
            "namespaced": rt.namespaced,
            "kind": rt.kind,
            "verbs": list(ALL_VERBS),
        }
        if rt.short_names:
            entry["shortNames"] = list(rt.short_names)
        if rt.categories:
            entry["categories"] = list(rt.categories)
        resources.append(entry)
        if rt.status:  # /scale is not served, so not advertised
            resources.append(
                {
                    "name": f"{rt.plural}/status",
                    "singularName": "",
                    "namespaced": rt.namespaced,
                    "kind": rt.kind,
                    "verbs": ["get", "patch", "update"],
                }
            )
        for sub, group, kind in rt.actions:
            entry = {"name": f"{rt.plural}/{sub}", "singularName": "", "namespaced": rt.namespaced}
            if group != rt.group:  # a kind of another group (pods/eviction: policy/v1)
                entry.update(group=group, version="v1")
            entry.update(kind=kind, verbs=["create", "get"] if sub in STREAMED else ["create"])
            resources.append(entry)
    return {
        "kind": "APIResourceList",
        "apiVersion": "v1",
        "groupVersion": group_version,
        "resources": resources,
    }


def api_group(group: str, versions: list[str]) -> dict[str, Any]:
    gvs = [{"groupVersion": f"{group}/{v}", "version": v} for v in versions]
    return {"name": group, "versions": gvs, "preferredVersion": gvs[0]}
