"""Where the sidecar runs, found once the API answers: its namespace, own pod and workload,
the snapshot host they make, and the Leases of a workload's pods; and a new connection when
the token was rotated (a 401)."""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass

from reconciler.kube.client import ApiError, Kube
from reconciler.kube.resource import PODS
from sidecar import restic
from sidecar.follow import one_line, workload_from_pod
from sidecar.lease import LeaseKeeper, lease_name
from sidecar.options import Settings

log = logging.getLogger("restik.watch")


@dataclass(frozen=True)
class Place:
    kube: Kube
    namespace: str
    host: str  # the snapshot host
    workload: tuple[str, str] | None
    pod_spec: dict | None  # where hooks and dump commands run
    lease: LeaseKeeper | None  # of several replicas sharing one host: who backs up
    prune_lease: LeaseKeeper | None  # of pods with a host each: who forgets and prunes


def find_pod(
    kube: Kube, ns: str, pod_name: str, workload: tuple[str, str] | None
) -> tuple[bool, tuple[str, str] | None, str | None, dict | None]:
    """(in a pod, its workload, its node, its spec). Raises while the API cannot answer
    (so the start is retried): guessing then would back up under a wrong host."""
    try:
        pod = kube.get(PODS.path(ns, pod_name))
    except ApiError as exc:
        if exc.not_found:
            return False, workload, None, None
        if exc.retryable or exc.status == 401:
            raise
        # e.g. 403 (RBAC without pods/get): go on with --workload and $NODE_NAME
        log.warning("cannot read pod %s: %s", pod_name, exc)
        return bool(os.environ.get("POD_NAME")), workload, None, None
    spec = pod.get("spec") or {}
    return True, workload or workload_from_pod(pod), spec.get("nodeName"), spec


def locate(s: Settings, pod_name: str, namespace: str | None) -> Place:
    """Connect, find the own pod and derive the snapshot host; raises while the API cannot
    be reached (no token, no kubeconfig, connection refused, 5xx, 401)."""
    kube = Kube.connect(s.kubeconfig)
    ns = namespace or kube.default_namespace or "default"
    in_pod, workload, pod_node, pod_spec = find_pod(kube, ns, pod_name, s.workload)
    kind, wname = workload if workload else (None, None)
    if in_pod:
        node = os.environ.get("NODE_NAME") or pod_node
        if kind == "DaemonSet" and not node:
            log.warning(
                "DaemonSet pod without NODE_NAME or spec.nodeName: host = pod name %s", pod_name
            )
        host = restic.host_for(kind, wname, pod_name, node)
    else:
        host = pod_name
        log.info("pod %s/%s not found: running as a single instance", ns, pod_name)
    lease = prune_lease = None
    if in_pod and kind:
        if restic.needs_lease(kind):
            name = lease_name(s.backup, wname)
            lease = LeaseKeeper(kube, ns, name, pod_name, s.lease_duration)
        else:
            name = lease_name(s.backup, wname + "-prune")
            prune_lease = LeaseKeeper(kube, ns, name, pod_name, s.lease_duration)
    return Place(
        kube=kube,
        namespace=ns,
        host=host,
        workload=(kind, wname) if kind else None,
        pod_spec=pod_spec,
        lease=lease,
        prune_lease=prune_lease,
    )


def reconnect_on_401(s: Settings, exc: Exception, leases) -> Kube | None:
    """After a 401 (the token expired or was rotated: a projected token is rewritten by the
    kubelet), a new connection, which reads the token file anew, also given to ``leases``;
    None for another error or when connecting fails."""
    if not (isinstance(exc, ApiError) and exc.status == 401):
        return None
    try:
        kube = Kube.connect(s.kubeconfig)
    except Exception as err:
        log.warning("reconnecting after 401: %s", one_line(err))
        return None
    for lease in leases:
        if lease is not None:
            lease.kube = kube
    log.info("reconnected to the API after a 401 (token re-read)")
    return kube
