"""What rendering needs from the pod a sidecar joins: who the application runs as and which
ports its containers take. Read tolerantly: a malformed pod template counts as "nothing
known" here, and the planner's full checks report it."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import NamedTuple

from reconciler.constants import SIDECAR_NAME


class AppUser(NamedTuple):
    """runAsUser/runAsGroup of the container that mounts the source volume (None: unknown)."""

    user: int | None = None
    group: int | None = None


UNKNOWN_USER = AppUser()


class PortClash(NamedTuple):
    container: str
    port: int


def _containers(pod_spec: Mapping, *, running: bool = False) -> Iterator[Mapping]:
    """The application's containers, then its init containers (``running``: only those that
    run alongside the sidecar, i.e. restartable ones); never restik's sidecar."""
    for key in ("containers", "initContainers"):
        for container in pod_spec.get(key) or ():
            if not isinstance(container, Mapping) or container.get("name") == SIDECAR_NAME:
                continue
            if running and key == "initContainers" and container.get("restartPolicy") != "Always":
                continue
            yield container


def _id(value: object) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else None


def app_user(obj: Mapping, source_volume: str) -> AppUser:
    """Who the first container mounting ``source_volume`` runs as: its own securityContext,
    else the pod's. Its files are the ones to back up, so the sidecar runs as the same user."""
    try:
        pod_spec = obj["spec"]["template"]["spec"]
        pod_sc = pod_spec.get("securityContext") or {}
        for container in _containers(pod_spec):
            mounts = container.get("volumeMounts") or ()
            if not any(isinstance(m, Mapping) and m.get("name") == source_volume for m in mounts):
                continue
            sc = container.get("securityContext") or {}
            user, group = (
                sc.get(key) if sc.get(key) is not None else pod_sc.get(key)
                for key in ("runAsUser", "runAsGroup")
            )
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
        for container in _containers(pod_spec, running=True):
            for entry in container.get("ports") or ():
                if isinstance(entry, Mapping) and entry.get("containerPort") == port:
                    return PortClash(str(container.get("name")), port)
    except (KeyError, TypeError, AttributeError):
        pass
    return None
