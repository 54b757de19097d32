"""The API resources restik reads and writes: kind → (apiVersion, plural) and their paths."""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import quote

from reconciler.api.constants import (
    API_VERSION,
    KIND,
    PLURAL,
    RESTORE_KIND,
    RESTORE_PLURAL,
    WORKLOAD_KINDS,
)


@dataclass(frozen=True)
class Resource:
    """One API resource type; ``path`` is the one place that builds request paths."""

    api_version: str
    plural: str
    kind: str = ""

    def path(
        self,
        namespace: str | None = None,
        name: str | None = None,
        subresource: str | None = None,
    ) -> str:
        """The collection (no name) or object path, every segment quoted: a name can never
        reach another path (Kubernetes names need no quoting, so valid ones are unchanged)."""
        base = "/api/v1" if self.api_version == "v1" else f"/apis/{self.api_version}"
        parts = [base]
        if namespace:
            parts += ["namespaces", quote(namespace, safe="")]
        parts.append(self.plural)
        if name:
            parts.append(quote(name, safe=""))
        if subresource:
            parts.append(subresource)
        return "/".join(parts)


BACKUPS = Resource(API_VERSION, PLURAL, KIND)
RESTORES = Resource(API_VERSION, RESTORE_PLURAL, RESTORE_KIND)
PVCS = Resource("v1", "persistentvolumeclaims", "PersistentVolumeClaim")
JOBS = Resource("batch/v1", "jobs", "Job")
PODS = Resource("v1", "pods", "Pod")
EVENTS = Resource("v1", "events", "Event")
LEASES = Resource("coordination.k8s.io/v1", "leases", "Lease")
ROLES = Resource("rbac.authorization.k8s.io/v1", "roles", "Role")
ROLEBINDINGS = Resource("rbac.authorization.k8s.io/v1", "rolebindings", "RoleBinding")
CRDS = Resource("apiextensions.k8s.io/v1", "customresourcedefinitions", "CustomResourceDefinition")
WORKLOADS = {kind: Resource(av, plural, kind) for kind, (av, plural) in WORKLOAD_KINDS.items()}


def workload(kind: str) -> Resource:
    """The Resource of a workload kind (one of WORKLOAD_KINDS)."""
    return WORKLOADS[kind]
