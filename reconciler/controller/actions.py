"""What the reconcilers decide and `apply` carries out: one small value per API write.

Each action knows its path, the kind of write it is (for the cycle's counters, metrics and
logs) and, through ``needs``, the action it depends on: `apply` skips an action whose
prerequisite was not carried out (an eviction after a failed patch, a Warning Event after
a status write that did not land)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from reconciler.controller.podtemplate import WorkloadRef
from reconciler.kube.resource import BACKUPS, EVENTS, RESTORES, WORKLOADS

# Kinds of write, as counted in CycleStats and restik_writes_total{kind}
WORKLOAD = "workload"
EVICTION = "eviction"
ROLEBINDING = "rolebinding"
STATUS = "status"
EVENT = "event"
JOB = "job"


@dataclass(frozen=True)
class PatchWorkload:
    """A merge patch of a workload's pod template (``action``: inject, update or remove)."""

    ref: WorkloadRef
    action: str
    patch: Mapping = field(repr=False)
    restart: bool = False  # its pods do not roll by themselves: restik restarts them
    template_hash: str | None = None  # restik's hash in the template after the patch
    write = WORKLOAD
    needs = None
    part = "restik sidecar"  # what the patch adds or removes (for logs)

    @property
    def key(self) -> tuple:
        return (WORKLOAD, self.ref)

    @property
    def path(self) -> str:
        return WORKLOADS[self.ref.kind].path(self.ref.namespace, self.ref.name)

    @property
    def what(self) -> str:
        return f"{self.ref.kind} {self.ref.namespace}/{self.ref.name}"


@dataclass(frozen=True)
class PatchRestoreInit(PatchWorkload):
    """A merge patch that adds (``action`` restore-in) or removes (restore-out) a Restore's
    init container restik-restore; its own key, so that it never stands for the sidecar's
    patch of the same workload in the same cycle."""

    needs: tuple | None = None  # the executor's RoleBinding when it is created now
    part = "init container restik-restore"

    @property
    def key(self) -> tuple:
        return (WORKLOAD, "restore", self.ref)


@dataclass(frozen=True)
class Evict:
    """Evict one stale pod of ``owner`` through the Eviction API."""

    owner: WorkloadRef
    pod: str
    needs: tuple | None = None  # the owner's PatchWorkload when it is patched in this cycle
    write = EVICTION

    @property
    def key(self) -> tuple:
        return (EVICTION, self.owner.namespace, self.pod)

    @property
    def what(self) -> str:
        return f"pod {self.owner.namespace}/{self.pod} of {self.owner}"


@dataclass(frozen=True)
class ObjectWrite:
    """A write of a whole object at ``path`` (``what``: "RoleBinding web/x", for logs)."""

    path: str
    body: Mapping | None = field(repr=False)
    what: str
    write: str
    needs: tuple | None = None

    @property
    def key(self) -> tuple:
        return (type(self).__name__, self.path, self.what)  # a create's path: its collection


class CreateObject(ObjectWrite):
    """POST ``body`` to the collection ``path``."""


class ReplaceObject(ObjectWrite):
    """PUT ``body`` (with the resourceVersion it replaces) to ``path``."""


class DeleteObject(ObjectWrite):
    """DELETE ``path`` (no body); an object already gone counts as deleted."""


@dataclass(frozen=True)
class PatchStatus:
    """A merge patch of a Backup's status subresource."""

    namespace: str
    name: str
    patch: Mapping = field(repr=False)
    write = STATUS
    needs = None
    resource = BACKUPS
    kind = "Backup"

    @property
    def key(self) -> tuple:
        return (STATUS, self.namespace, self.name)

    @property
    def path(self) -> str:
        return self.resource.path(self.namespace, self.name, "status")

    @property
    def what(self) -> str:
        return f"status of {self.kind} {self.namespace}/{self.name}"


@dataclass(frozen=True)
class PatchRestoreStatus(PatchStatus):
    """A merge patch of a Restore's status subresource."""

    resource = RESTORES
    kind = "Restore"

    @property
    def key(self) -> tuple:
        return (STATUS, self.kind, self.namespace, self.name)


@dataclass(frozen=True)
class CreateEvent:
    """A core/v1 Event; ``about`` names its object for logs ("Backup web/www")."""

    body: Mapping = field(repr=False)
    about: str
    reason: str
    needs: tuple | None = None
    remember: tuple | None = None  # what the controller keeps once sent, to send it once
    write = EVENT

    @property
    def key(self) -> tuple:
        return (EVENT, self.body["metadata"]["namespace"], self.body["metadata"]["name"])

    @property
    def path(self) -> str:
        return EVENTS.path(self.body["metadata"]["namespace"])

    @property
    def what(self) -> str:
        return f"{self.reason} Event on {self.about}"


Action = (
    PatchWorkload
    | Evict
    | CreateObject
    | ReplaceObject
    | DeleteObject
    | PatchStatus
    | PatchRestoreStatus
    | CreateEvent
)
