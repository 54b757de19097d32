"""What the API server does per resource beyond storing it: hooks on each resource type.

Every ResourceType carries a Kind (ResourceType.hooks): name rules, defaulting, validation,
the status a create starts with, what an update keeps, and what follows a commit or a
deletion (a namespace's contents, a CRD's objects and served types). The store calls the
hooks and knows no kind by name.
"""

from __future__ import annotations

import copy
from typing import TYPE_CHECKING, Any

from . import errors, rules, schema
from .rules import Cause, _invalid, _required

if TYPE_CHECKING:
    from .resources import ResourceType
    from .store import Store


class Kind:
    """A plain resource: DNS-subdomain names, label validation, an empty status on create."""

    def validate_name(self, name: str) -> list[Cause]:
        if len(name) > 253 or not rules.DNS_SUBDOMAIN.match(name):
            return [_invalid("metadata.name", name, "a lowercase RFC 1123 subdomain must "
                             "consist of lower case alphanumeric characters, '-' or '.', and "
                             "must start and end with an alphanumeric character")]  # fmt: skip
        return []

    def defaults(self, obj: dict[str, Any]) -> None:
        """Defaulting on every create and update."""

    def validate(self, rt: ResourceType, obj: dict[str, Any]) -> list[Cause]:
        meta = obj.get("metadata") or {}
        return rules._validate_labels(meta.get("labels") or {}, "metadata.labels")

    def initial_status(self, rt: ResourceType, obj: dict[str, Any], keep: bool) -> None:
        """What .status a create starts with (the client's is ignored, unless ``keep``)."""
        if rt.status and not (keep and "status" in obj):
            obj["status"] = {}

    def on_create(self, obj: dict[str, Any]) -> None:
        """After the name and system metadata are set, before defaulting."""

    def on_update(
        self, obj: dict[str, Any], current: dict[str, Any], subresource: str | None, stamp: str
    ) -> None:
        """After validation of an update (``obj`` replaces ``current``)."""

    def after_commit(self, store: Store) -> None:
        """After an object of this kind was stored (created or updated)."""

    def after_delete(self, store: Store, obj: dict[str, Any]) -> None:
        """After an object of this kind was deleted (before garbage collection)."""


class Rbac(Kind):
    def validate_name(self, name: str) -> list[Cause]:
        if name in (".", "..") or "/" in name or "%" in name:
            return [_invalid("metadata.name", name, "may not contain '/' or '%'")]
        return []


class Namespace(Kind):
    LABEL = "kubernetes.io/metadata.name"

    def validate_name(self, name: str) -> list[Cause]:
        if len(name) > 63 or not rules.DNS_LABEL.match(name):
            return [_invalid("metadata.name", name, "a lowercase RFC 1123 label must consist "
                             "of lower case alphanumeric characters or '-', and must start and "
                             "end with an alphanumeric character")]  # fmt: skip
        return []

    def initial_status(self, rt: ResourceType, obj: dict[str, Any], keep: bool) -> None:
        obj["status"] = {"phase": "Active"}
        obj["spec"] = {"finalizers": ["kubernetes"]}

    def on_create(self, obj: dict[str, Any]) -> None:
        meta = obj["metadata"]
        meta.setdefault("labels", {})[self.LABEL] = meta["name"]

    def on_update(
        self, obj: dict[str, Any], current: dict[str, Any], subresource: str | None, stamp: str
    ) -> None:
        if subresource != "status":
            obj["spec"] = current.get("spec", {})
            self.on_create(obj)

    def after_delete(self, store: Store, obj: dict[str, Any]) -> None:
        store.delete_namespace_contents(obj["metadata"]["name"])


class Secret(Kind):
    def defaults(self, obj: dict[str, Any]) -> None:
        obj.setdefault("type", "Opaque")
        rules.encode_string_data(obj)


class Pod(Kind):
    def defaults(self, obj: dict[str, Any]) -> None:
        if isinstance(obj.get("spec"), dict):
            rules.default_pod_spec(obj["spec"])

    def validate(self, rt: ResourceType, obj: dict[str, Any]) -> list[Cause]:
        return super().validate(rt, obj) + rules.validate_pod_spec(obj.get("spec"), "spec")

    def initial_status(self, rt: ResourceType, obj: dict[str, Any], keep: bool) -> None:
        if not (keep and "status" in obj):
            obj["status"] = {"phase": "Pending", "qosClass": "BestEffort"}

    def on_update(
        self, obj: dict[str, Any], current: dict[str, Any], subresource: str | None, stamp: str
    ) -> None:
        """A pod's spec is immutable but for images and a few scheduling fields."""
        if subresource == "status" or _mutable_view(obj) == _mutable_view(current):
            return
        cause = ("FieldValueForbidden", "spec", POD_UPDATE_FORBIDDEN)
        raise errors.invalid("", "Pod", obj["metadata"]["name"], [cause])


POD_UPDATE_FORBIDDEN = (
    "Forbidden: pod updates may not change fields other than `spec.containers[*].image`,"
    "`spec.initContainers[*].image`,`spec.activeDeadlineSeconds`,`spec.tolerations` (only "
    "additions to existing tolerations),`spec.terminationGracePeriodSeconds` (allow it to be "
    "set to 1 if it was previously negative)"
)


def _mutable_view(pod: dict[str, Any]) -> Any:
    """The pod spec without what an update may change."""
    spec = copy.deepcopy(pod.get("spec") or {})
    if not isinstance(spec, dict):
        return spec
    for key in ("activeDeadlineSeconds", "tolerations", "terminationGracePeriodSeconds",
                "schedulingGates"):  # fmt: skip
        spec.pop(key, None)
    for key in ("containers", "initContainers"):
        for container in spec.get(key) or []:
            if isinstance(container, dict):
                container.pop("image", None)
    return spec


class Workload(Kind):
    """Deployments, StatefulSets, DaemonSets, ReplicaSets and ReplicationControllers."""

    def __init__(self, spec_defaults: dict[str, Any] | None = None):
        self.spec_defaults = spec_defaults or {}

    def validate_selector(self, selector: Any, labels: dict[str, str]) -> list[Cause]:
        """A LabelSelector that must select the template's labels."""
        if not selector:
            return [_required("spec.selector")]
        if not (selector.get("matchLabels") or selector.get("matchExpressions")):
            return [_invalid("spec.selector", selector, "empty selector is invalid for "
                             "deployment")]  # fmt: skip
        if not rules._selector_matches(selector, labels):
            return [_invalid("spec.template.metadata.labels", labels,
                             "`selector` does not match template `labels`")]  # fmt: skip
        return []

    def defaults(self, obj: dict[str, Any]) -> None:
        spec = obj.get("spec")
        if not isinstance(spec, dict):
            return
        template = spec.get("template")
        if isinstance(template, dict) and isinstance(template.get("spec"), dict):
            rules.default_pod_spec(template["spec"])
        for key, value in self.spec_defaults.items():
            spec.setdefault(key, copy.deepcopy(value))

    def validate(self, rt: ResourceType, obj: dict[str, Any]) -> list[Cause]:
        causes = super().validate(rt, obj)
        spec = obj.get("spec")
        if not isinstance(spec, dict):
            return [*causes, _required("spec")]
        template = spec.get("template") or {}
        tlabels = (template.get("metadata") or {}).get("labels") or {}
        causes += rules._validate_labels(tlabels, "spec.template.metadata.labels")
        causes += self.validate_selector(spec.get("selector"), tlabels)
        claims = frozenset(
            (c.get("metadata") or {}).get("name")
            for c in spec.get("volumeClaimTemplates") or []
            if isinstance(c, dict)
        )
        causes += rules.validate_pod_spec(template.get("spec"), "spec.template.spec", claims)
        replicas = spec.get("replicas")
        if replicas is not None and (not isinstance(replicas, int) or replicas < 0):
            causes.append(_invalid("spec.replicas", replicas, "must be greater than or equal to 0"))
        return causes


class ReplicationController(Workload):
    """A map selector, defaulted from the template's labels when absent."""

    def defaults(self, obj: dict[str, Any]) -> None:
        spec = obj.get("spec")
        if isinstance(spec, dict):
            labels = ((spec.get("template") or {}).get("metadata") or {}).get("labels")
            if not spec.get("selector") and labels:
                spec["selector"] = dict(labels)
        super().defaults(obj)

    def validate_selector(self, selector: Any, labels: dict[str, str]) -> list[Cause]:
        if selector and not all(labels.get(k) == v for k, v in selector.items()):
            return [_invalid("spec.template.metadata.labels", labels,
                             "`selector` does not match template `labels`")]  # fmt: skip
        return []


class DaemonSet(Workload):
    """apps/v1 shows the internal spec.templateGeneration as an annotation the server keeps:
    1 on create, +1 on every update that changes the pod template."""

    ANNOTATION = "deprecated.daemonset.template.generation"

    def on_create(self, obj: dict[str, Any]) -> None:
        obj["metadata"].setdefault("annotations", {})[self.ANNOTATION] = "1"

    def on_update(
        self, obj: dict[str, Any], current: dict[str, Any], subresource: str | None, stamp: str
    ) -> None:
        if subresource == "status":
            return
        old = (current["metadata"].get("annotations") or {}).get(self.ANNOTATION)
        if old is None:
            return
        changed = (obj.get("spec") or {}).get("template") != (current.get("spec") or {}).get(
            "template"
        )
        value = str(int(old) + 1) if changed and old.isdigit() else old
        obj["metadata"].setdefault("annotations", {})[self.ANNOTATION] = value


class CustomResourceDefinition(Kind):
    def defaults(self, obj: dict[str, Any]) -> None:
        rules.crd_defaults(obj)

    def validate(self, rt: ResourceType, obj: dict[str, Any]) -> list[Cause]:
        return super().validate(rt, obj) + rules._validate_crd(obj)

    def initial_status(self, rt: ResourceType, obj: dict[str, Any], keep: bool) -> None:
        obj["status"] = rules.crd_status(obj)

    def on_update(
        self, obj: dict[str, Any], current: dict[str, Any], subresource: str | None, stamp: str
    ) -> None:
        if subresource == "status":
            return
        obj["status"] = rules.crd_status(obj, stamp)
        if obj["status"]["conditions"] and current.get("status"):
            before = {c["type"]: c for c in current["status"].get("conditions", [])}
            obj["status"]["conditions"] = [
                before.get(c["type"], c) for c in obj["status"]["conditions"]
            ]

    def after_commit(self, store: Store) -> None:
        store.refresh_crd_types()

    def after_delete(self, store: Store, obj: dict[str, Any]) -> None:
        spec = obj.get("spec") or {}
        store.delete_custom_resources(
            (spec.get("group", ""), (spec.get("names") or {}).get("plural", ""))
        )


class CustomResource(Kind):
    """An object of a CRD: pruned and validated by its version's OpenAPI schema."""

    def validate(self, rt: ResourceType, obj: dict[str, Any]) -> list[Cause]:
        causes = super().validate(rt, obj)
        if rt.schema is not None:
            schema.prune(obj, rt.schema)
            causes += schema.validate(obj, rt.schema)
        return causes

    def initial_status(self, rt: ResourceType, obj: dict[str, Any], keep: bool) -> None:
        if rt.status and not (keep and "status" in obj):
            obj.pop("status", None)


class AdmissionPolicy(Kind):
    """A ValidatingAdmissionPolicy: refused when an expression does not compile."""

    def validate(self, rt: ResourceType, obj: dict[str, Any]) -> list[Cause]:
        from .policy import compile_errors

        return super().validate(rt, obj) + compile_errors(obj)


DEFAULT = Kind()
CUSTOM = CustomResource()
_RBAC = Rbac()
BY_RESOURCE: dict[tuple[str, str], Kind] = {
    ("", "namespaces"): Namespace(),
    ("", "secrets"): Secret(),
    ("", "pods"): Pod(),
    ("", "replicationcontrollers"): ReplicationController({"replicas": 1}),
    ("apps", "replicasets"): Workload({"replicas": 1}),
    ("apps", "deployments"): Workload({
        "replicas": 1,
        "revisionHistoryLimit": 10,
        "progressDeadlineSeconds": 600,
        "strategy": {"type": "RollingUpdate",
                     "rollingUpdate": {"maxUnavailable": "25%", "maxSurge": "25%"}},
    }),
    ("apps", "statefulsets"): Workload({
        "replicas": 1,
        "revisionHistoryLimit": 10,
        "podManagementPolicy": "OrderedReady",
        "updateStrategy": {"type": "RollingUpdate", "rollingUpdate": {"partition": 0}},
    }),
    ("apps", "daemonsets"): DaemonSet({
        "revisionHistoryLimit": 10,
        "updateStrategy": {"type": "RollingUpdate",
                           "rollingUpdate": {"maxUnavailable": 1, "maxSurge": 0}},
    }),
    ("apiextensions.k8s.io", "customresourcedefinitions"): CustomResourceDefinition(),
    ("admissionregistration.k8s.io", "validatingadmissionpolicies"): AdmissionPolicy(),
}  # fmt: skip


def for_builtin(group: str, plural: str) -> Kind:
    if group == "rbac.authorization.k8s.io":
        return _RBAC
    return BY_RESOURCE.get((group, plural), DEFAULT)
