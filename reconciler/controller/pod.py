"""What rendering needs from the pod a sidecar joins: who the application runs as and which
ports its containers take. Read tolerantly: a malformed pod template counts as "nothing
known" here, and the planner's full checks report it."""

from __future__ import annotations

from collections.abc import Mapping
from typing import NamedTuple

from reconciler.api.constants import SIDECAR_NAME


class AppUser(NamedTuple):
    """runAsUser/runAsGroup of the container that mounts the source volume (None: unknown)."""

    user: int | None = None
    group: int | None = None


UNKNOWN_USER = AppUser()


class PortClash(NamedTuple):
    container: str
    port: int


def _id(value: object) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else None


# Both functions below run for every labeled workload in every cycle (the in-sync fast path
# needs their answers), so they are plain loops over the pod spec.


def app_user(obj: Mapping, source_volume: str) -> AppUser:
    """Who the first container mounting ``source_volume`` runs as (containers first, then
    init containers; never restik's sidecar): its own securityContext, else the pod's. Its
    files are the ones to back up, so the sidecar runs as the same user."""
    try:
        pod_spec = obj["spec"]["template"]["spec"]
        for key in ("containers", "initContainers"):
            for container in pod_spec.get(key) or ():
                for mount in container.get("volumeMounts") or ():
                    if mount.get("name") == source_volume:
                        break
                else:
                    continue
                if container.get("name") == SIDECAR_NAME:
                    continue
                sc = container.get("securityContext") or {}
                pod_sc = pod_spec.get("securityContext") or {}
                user, group = sc.get("runAsUser"), sc.get("runAsGroup")
                if user is None:
                    user = pod_sc.get("runAsUser")
                if group is None:
                    group = pod_sc.get("runAsGroup")
                return AppUser(_id(user), _id(group))
    except (KeyError, TypeError, AttributeError):
        pass
    return UNKNOWN_USER


def metrics_port_clash(obj: Mapping, port: int) -> PortClash | None:
    """A container of the pod that declares ``port`` (the sidecar's metrics port) already.
    Containers share the pod's network namespace (and with hostNetwork the node's), so the
    sidecar could not listen there. Plain init containers have exited before the sidecar
    starts; restartable ones (native sidecars) run alongside it."""
    try:
        pod_spec = obj["spec"]["template"]["spec"]
        for key in ("containers", "initContainers"):
            for container in pod_spec.get(key) or ():
                ports = container.get("ports")
                if not ports or container.get("name") == SIDECAR_NAME:
                    continue
                if key == "initContainers" and container.get("restartPolicy") != "Always":
                    continue
                for entry in ports:
                    if entry.get("containerPort") == port:
                        return PortClash(str(container.get("name")), port)
    except (KeyError, TypeError, AttributeError):
        pass
    return None
